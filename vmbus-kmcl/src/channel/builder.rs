//! Channels being configured: allocated or disabled, not enabled.

use core::marker::PhantomData;
use core::pin::Pin;
use core::ptr::NonNull;

use vmbus_kmcl_sys::{
    UNICODE_STRING, VMBCHANNEL, VMBCHANNEL__, VMBUS_CHANNEL_INIT_FLAGS,
    VMBUS_SERVER_CHANNEL_INIT_FLAGS,
};

use super::handler::{Handler, Trampolines};
use super::slot::ChannelSlot;
use super::{Channel, ChannelFlags, Client, Role, Server, ServerFlags};
use crate::dispatch::{ChannelBackend, KmclServer};
use crate::error::{Error, Result};
use crate::guid::Guid;
use crate::handle::KernelHandle;
use crate::status::{to_result, NtStatus};

/// A channel being configured: allocated (or disabled again), not enabled.
///
/// `R` is the role ([`Server`] or [`Client`]): the role-only setters exist only on that role's
/// builder. `'s` borrows the [`ChannelSlot`] holding the handler `H` and the backend `K`.
/// [`enable`](Self::enable) consumes the builder and yields the enabled [`Channel`], whose
/// [`disable`](Channel::disable) gives the builder back. Dropping a builder cleans the channel
/// up (`VmbChannelCleanup`) and closes the VMBus kernel handle it owns. PASSIVE_LEVEL for all
/// of it.
///
/// Setters validate what KMCL documents before calling it (zero sizes, undefined flag bits,
/// MMIO sizes both 0, a VTL above 2) and return [`Error`]s; a rejected value changes nothing.
///
/// # Invariants
///
/// The slot holds a live, disabled channel of role `R`, allocated through the slot's backend,
/// whose pointer is the slot's shared part and whose callbacks are `H`'s trampolines; `channel`
/// is that channel.
///
/// # Examples
///
/// ```
/// use core::pin::pin;
/// use core::ptr::NonNull;
/// use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, ServerBuilder, ServerFlags};
/// use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
/// use vmbus_kmcl::packet::IncomingPacket;
/// use vmbus_kmcl::{guid, DeviceRef, Error};
///
/// struct Sink;
/// impl<K: ChannelBackend> Handler<vmbus_kmcl::channel::Server, K> for Sink {
///     fn process_packet(&self, _: &OpenView<'_, vmbus_kmcl::channel::Server, K>,
///                       packet: IncomingPacket<'_, K>) {
///         packet.complete_empty();
///     }
/// }
///
/// let bus = vmbus_kmcl_sim::Bus::new();
/// // SAFETY: the sim's root device lives as long as the bus.
/// let device = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) };
/// let mut slot = pin!(ChannelSlot::new(device, Linked, Sink));
/// let mut builder = ServerBuilder::allocate(slot.as_mut())?;
/// builder
///     .set_interface_id(guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"), guid!("00000000-0000-0000-0000-000000000001"))?
///     .set_server_flags(ServerFlags::ENUMERATE_DEVICE_INTERFACE)?
///     .set_maximum_packet_size(4096)?
///     .set_friendly_name(vmbus_kmcl::utf16!("Sink"))?;
/// assert!(matches!(builder.set_mmio_megabytes(0, 0), Err(Error::MmioBothZero)));
/// let channel = builder.enable()?;
/// channel.start();
/// drop(channel); // disable, cleanup
/// bus.assert_no_leaks();
/// # Ok::<(), Error>(())
/// ```
pub struct ChannelBuilder<'s, R, H, K: ChannelBackend> {
    pub(super) slot: &'s ChannelSlot<'s, H, K>,
    pub(super) channel: NonNull<VMBCHANNEL__>,
    _role: PhantomData<R>,
}

/// The builder of a server (VSP) channel.
pub type ServerBuilder<'s, H, K> = ChannelBuilder<'s, Server, H, K>;
/// The builder of a client (VSC) channel.
pub type ClientBuilder<'s, H, K> = ChannelBuilder<'s, Client, H, K>;

impl<'s, R: Role, H: Handler<R, K>, K: ChannelBackend> ChannelBuilder<'s, R, H, K> {
    /// Allocates a channel of role `R` in `slot`; see the role's `allocate`.
    fn allocate_in<'dev: 's>(slot: Pin<&'s mut ChannelSlot<'dev, H, K>>) -> Result<Self> {
        crate::irql::require_at_most(crate::irql::PASSIVE_LEVEL)?;
        let slot: &'s ChannelSlot<'s, H, K> = ChannelSlot::pinned_ref(slot);
        slot.teardown();
        let kmcl = slot.kmcl();
        <K as crate::dispatch::sealed::Sealed>::prepare(kmcl)?;
        let mut raw: VMBCHANNEL = core::ptr::null_mut();
        // SAFETY: the slot's device object outlives the slot (`'dev`), which outlives the
        // channel (the slot cleans it up at the latest in its `Drop`); `raw` is writable.
        let status = unsafe {
            kmcl.channel_allocate(slot.device().as_raw(), u8::from(R::IS_SERVER), &mut raw)
        };
        if status != NtStatus::SUCCESS.to_raw() {
            return Err(Error::from_failed_call(status));
        }
        let Some(channel) = NonNull::new(raw) else {
            return Err(Error::Unexpected(NtStatus::SUCCESS));
        };
        // SAFETY: a fresh channel allocated through the slot's backend, now owned by the slot,
        // which was emptied above.
        unsafe { slot.set_channel(channel) };
        let shared: *const _ = slot.shared();
        // SAFETY: a live channel; the pointer is the slot's shared part, which is pinned and
        // outlives the channel. KMCL never dereferences it.
        unsafe { kmcl.channel_set_pointer(raw, shared.cast_mut().cast()) };
        // INVARIANT: from here the slot owns the channel, and its pointer is set; the callbacks
        // follow, and any failure tears the channel down through the slot.
        let builder = Self {
            slot,
            channel,
            _role: PhantomData,
        };
        let callbacks: &'static _ = &Trampolines::<R, H, K>::STATE;
        // SAFETY: a live channel in its init phase; the table is a `'static` constant whose
        // trampolines are sound for any channel whose pointer is a `Shared<H, K>`, as set above.
        to_result(unsafe {
            kmcl.channel_init_set_state_change_callbacks(
                raw,
                core::ptr::from_ref(callbacks).cast_mut(),
            )
        })?;
        // SAFETY: as above; the process-packet trampoline is present, the processing-complete
        // one present or absent by the handler's choice.
        to_result(unsafe {
            kmcl.channel_init_set_process_packet_callbacks(
                raw,
                Some(Trampolines::<R, H, K>::process_packet),
                Trampolines::<R, H, K>::PROCESSING_COMPLETE,
            )
        })?;
        Ok(builder)
    }

    /// Rebuilds the builder of a channel that `Channel::disable` just disabled.
    ///
    /// # Safety
    ///
    /// The slot holds a live, disabled channel `channel` of role `R` that this builder now
    /// owns.
    pub(crate) unsafe fn from_disabled(
        slot: &'s ChannelSlot<'s, H, K>,
        channel: NonNull<VMBCHANNEL__>,
    ) -> Self {
        // INVARIANT: the caller's guarantee.
        Self {
            slot,
            channel,
            _role: PhantomData,
        }
    }

    fn raw(&self) -> VMBCHANNEL {
        self.channel.as_ptr()
    }

    /// Enables the channel (`VmbChannelEnable`): a server offers it, a client opens the
    /// matching offer or waits for one. Returns without waiting for the peer; the handler's
    /// [`opened`](Handler::opened) reports the open. A server's flow starts with
    /// [`Channel::start`]; a client's runs at once. PASSIVE_LEVEL (checked).
    ///
    /// # Errors
    ///
    /// An [`EnableError`] carrying [`Error::IrqlTooHigh`] above PASSIVE_LEVEL, or the failing
    /// status of `VmbChannelEnable`, and the builder, unchanged: drop it (at PASSIVE_LEVEL) to
    /// clean the channel up, or fix what failed and enable again. `?` turns it into the
    /// [`Error`], dropping the builder.
    #[doc(alias = "VmbChannelEnable")]
    pub fn enable(self) -> core::result::Result<Channel<'s, R, H, K>, EnableError<'s, R, H, K>> {
        if let Err(error) = crate::irql::require_at_most(crate::irql::PASSIVE_LEVEL) {
            return Err(EnableError {
                error,
                builder: self,
            });
        }
        let kmcl = self.slot.kmcl();
        // SAFETY: a live, configured, disabled channel (invariant); everything registered
        // during configuration lives in the pinned slot or is `'static`; PASSIVE_LEVEL
        // (checked above).
        let status = unsafe { kmcl.channel_enable(self.raw()) };
        if status != NtStatus::SUCCESS.to_raw() {
            return Err(EnableError {
                error: Error::from_failed_call(status),
                builder: self,
            });
        }
        // SAFETY: `VmbChannelEnable` succeeded.
        unsafe { self.slot.set_enabled(true) };
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the slot's live channel, now enabled, handed from the builder (whose `Drop`
        // does not run) to the channel.
        Ok(unsafe { Channel::from_enabled(this.slot, this.channel) })
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        self.slot.handler()
    }

    /// The raw channel handle, for calls this crate does not wrap. The builder keeps owning
    /// the channel: code using the handle must not enable, disable or clean it up, nor change
    /// its pointer or callbacks.
    pub fn as_raw(&self) -> VMBCHANNEL {
        self.raw()
    }

    /// Common channel options (`VmbChannelInitSetFlags`).
    ///
    /// # Errors
    ///
    /// [`Error::UndefinedFlags`] for bits outside `VMBUS_CHANNEL_INIT_FLAGS` (possible through
    /// `from_bits_retain`), before any call; the failing status of the call.
    #[doc(alias = "VmbChannelInitSetFlags")]
    pub fn set_flags(&mut self, flags: ChannelFlags) -> Result<&mut Self> {
        let bits = flags.bits();
        if bits & !VMBUS_CHANNEL_INIT_FLAGS != 0 {
            return Err(Error::UndefinedFlags {
                bits: bits & !VMBUS_CHANNEL_INIT_FLAGS,
            });
        }
        // SAFETY: a live channel in its init phase (invariant).
        to_result(unsafe { self.slot.kmcl().channel_init_set_flags(self.raw(), bits) })?;
        Ok(self)
    }

    /// The channel's name in debugger output and performance counters
    /// (`VmbChannelInitSetFriendlyName`), as UTF-16: [`utf16!`](crate::utf16!) for a literal,
    /// [`Utf16Buf`](super::Utf16Buf) for a `&str` at run time. The text is borrowed for the
    /// slot's lifetime, since KMCL does not document whether it copies it.
    ///
    /// # Errors
    ///
    /// [`Error::LengthTooLarge`] for more than 32767 units (a `UNICODE_STRING` counts bytes in
    /// 16 bits), before any call; the failing status of the call.
    #[doc(alias = "VmbChannelInitSetFriendlyName")]
    pub fn set_friendly_name(&mut self, name: &'s [u16]) -> Result<&mut Self> {
        let bytes = name
            .len()
            .checked_mul(2)
            .and_then(|bytes| u16::try_from(bytes).ok())
            .ok_or(Error::LengthTooLarge)?;
        let header = self.slot.store_name(UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: name.as_ptr().cast_mut(),
        });
        // SAFETY: a live channel in its init phase (invariant); the header lives in the pinned
        // slot and its text is borrowed for the slot's lifetime, both longer than the channel.
        to_result(unsafe {
            self.slot
                .kmcl()
                .channel_init_set_friendly_name(self.raw(), header)
        })?;
        Ok(self)
    }

    /// Bytes of driver context KMCL keeps with every incoming packet
    /// (`VmbChannelInitSetClientContextSize`). The version 1 interface has no function to read
    /// that area.
    ///
    /// # Errors
    ///
    /// The failing status of the call.
    #[doc(alias = "VmbChannelInitSetClientContextSize")]
    pub fn set_client_context_size(&mut self, size: u32) -> Result<&mut Self> {
        // SAFETY: a live channel in its init phase (invariant).
        to_result(unsafe {
            self.slot
                .kmcl()
                .channel_init_set_client_context_size(self.raw(), size)
        })?;
        Ok(self)
    }

    /// The largest external data one packet describes, and the longest MDL chain describing it
    /// (`VmbChannelInitSetMaximumExternalData`).
    ///
    /// # Errors
    ///
    /// [`Error::BelowMinimum`] for a 0, before any call; the failing status of the call.
    #[doc(alias = "VmbChannelInitSetMaximumExternalData")]
    pub fn set_maximum_external_data(&mut self, size: u32, chain_length: u32) -> Result<&mut Self> {
        if size == 0 || chain_length == 0 {
            return Err(Error::BelowMinimum { minimum: 1 });
        }
        // SAFETY: a live channel in its init phase (invariant); both values above 0.
        to_result(unsafe {
            self.slot
                .kmcl()
                .channel_init_set_maximum_external_data(self.raw(), size, chain_length)
        })?;
        Ok(self)
    }

    /// The largest inline packet ever sent on the channel
    /// (`VmbChannelInitSetMaximumPacketSize`).
    ///
    /// # Errors
    ///
    /// [`Error::BelowMinimum`] for 0, before any call; the failing status of the call.
    #[doc(alias = "VmbChannelInitSetMaximumPacketSize")]
    pub fn set_maximum_packet_size(&mut self, size: u32) -> Result<&mut Self> {
        if size == 0 {
            return Err(Error::BelowMinimum { minimum: 1 });
        }
        // SAFETY: a live channel in its init phase (invariant); the size is above 0.
        to_result(unsafe {
            self.slot
                .kmcl()
                .channel_init_set_maximum_packet_size(self.raw(), size)
        })?;
        Ok(self)
    }

    /// Runs the process-packet (and processing-complete) callbacks at PASSIVE_LEVEL only
    /// (`VmbChannelSetIncomingProcessingAtPassive`).
    #[doc(alias = "VmbChannelSetIncomingProcessingAtPassive")]
    pub fn set_incoming_processing_at_passive(&mut self, passive: bool) -> &mut Self {
        // SAFETY: a live channel (invariant).
        unsafe {
            self.slot
                .kmcl()
                .channel_set_incoming_processing_at_passive(self.raw(), u8::from(passive))
        };
        self
    }

    /// Makes the channel come up paused when enabled (`VmbChannelPause` on a disabled
    /// channel); [`Channel::start`] starts it.
    #[doc(alias = "VmbChannelPause")]
    pub fn start_paused(&mut self) -> &mut Self {
        // SAFETY: a live, disabled channel (invariant), outside its callbacks (a builder is not
        // reachable from them): KMCL arms the pause for the next enable.
        unsafe { self.slot.kmcl().channel_pause(self.raw()) };
        self
    }
}

impl<'s, H: Handler<Server, K>, K: ChannelBackend + KmclServer> ChannelBuilder<'s, Server, H, K> {
    /// Allocates a server channel in `slot` (`VmbChannelAllocate` with `IsServer` TRUE), points
    /// it at the slot (`VmbChannelSetPointer`) and registers the handler's trampolines
    /// (`VmbChannelInitSetStateChangeCallbacks`, `VmbChannelInitSetProcessPacketCallbacks`). A
    /// channel still in the slot (its builder or channel leaked) is torn down first.
    /// PASSIVE_LEVEL (checked).
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`] above PASSIVE_LEVEL; the failing status of `VmbChannelAllocate`
    /// or of a callback registration (then nothing stays allocated).
    #[doc(alias = "VmbChannelAllocate")]
    #[doc(alias = "VmbChannelSetPointer")]
    #[doc(alias = "VmbChannelInitSetStateChangeCallbacks")]
    #[doc(alias = "VmbChannelInitSetProcessPacketCallbacks")]
    pub fn allocate<'dev: 's>(slot: Pin<&'s mut ChannelSlot<'dev, H, K>>) -> Result<Self> {
        Self::allocate_in(slot)
    }

    /// The offer's interface type (the protocol) and instance GUIDs
    /// (`VmbServerChannelInitSetTargetInterfaceId`).
    ///
    /// # Errors
    ///
    /// The failing status of the call.
    #[doc(alias = "VmbServerChannelInitSetTargetInterfaceId")]
    pub fn set_interface_id(&mut self, interface_type: Guid, instance: Guid) -> Result<&mut Self> {
        // SAFETY: a live server channel in its init phase (invariant).
        to_result(unsafe {
            self.slot
                .kmcl()
                .server_channel_init_set_target_interface_id(
                    self.raw(),
                    interface_type.to_raw(),
                    instance.to_raw(),
                )
        })?;
        Ok(self)
    }

    /// Server offer options (`VmbServerChannelInitSetFlags`).
    ///
    /// # Errors
    ///
    /// [`Error::UndefinedFlags`] for bits outside `VMBUS_SERVER_CHANNEL_INIT_FLAGS`, before any
    /// call; the failing status of the call.
    #[doc(alias = "VmbServerChannelInitSetFlags")]
    pub fn set_server_flags(&mut self, flags: ServerFlags) -> Result<&mut Self> {
        let bits = flags.bits();
        if bits & !VMBUS_SERVER_CHANNEL_INIT_FLAGS != 0 {
            return Err(Error::UndefinedFlags {
                bits: bits & !VMBUS_SERVER_CHANNEL_INIT_FLAGS,
            });
        }
        // SAFETY: a live server channel in its init phase (invariant).
        to_result(unsafe {
            self.slot
                .kmcl()
                .server_channel_init_set_flags(self.raw(), bits)
        })?;
        Ok(self)
    }

    /// Guest MMIO space to reserve for the device, required and optional MiB
    /// (`VmbServerChannelInitSetMmioMegabytes`).
    ///
    /// # Errors
    ///
    /// [`Error::MmioBothZero`] when both are 0, before any call; the failing status of the
    /// call.
    #[doc(alias = "VmbServerChannelInitSetMmioMegabytes")]
    pub fn set_mmio_megabytes(&mut self, required: u16, optional: u16) -> Result<&mut Self> {
        if required == 0 && optional == 0 {
            return Err(Error::MmioBothZero);
        }
        // SAFETY: a live server channel in its init phase (invariant).
        to_result(unsafe {
            self.slot
                .kmcl()
                .server_channel_init_set_mmio_megabytes(self.raw(), required, optional)
        })?;
        Ok(self)
    }

    /// Offers the channel only to clients at Virtual Trust Level `vtl`
    /// (`VmbServerChannelInitSetTargetVtl`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidVtl`] above 2, before any call; the failing status of the call.
    #[doc(alias = "VmbServerChannelInitSetTargetVtl")]
    pub fn set_target_vtl(&mut self, vtl: u8) -> Result<&mut Self> {
        if vtl > 2 {
            return Err(Error::InvalidVtl { vtl });
        }
        // SAFETY: a live server channel in its init phase (invariant).
        to_result(unsafe {
            self.slot
                .kmcl()
                .server_channel_init_set_target_vtl(self.raw(), vtl)
        })?;
        Ok(self)
    }

    /// Binds the channel to the VM whose VMBus `handle` names
    /// (`VmbServerChannelInitSetVmbusHandle`); any thread context.
    ///
    /// The channel takes the handle: it stays open while the channel exists (KMCL does not
    /// document whether it takes its own reference) and is closed right after the channel is
    /// cleaned up. Nothing else can close it meanwhile, since it was moved in. Set it once: a
    /// second successful call closes the first handle, and KMCL does not document whether it
    /// still uses a replaced one.
    ///
    /// # Errors
    ///
    /// The failing status of the call (e.g. `STATUS_INVALID_PARAMETER_2` for a handle naming
    /// no VMBus); KMCL did not take the handle then, and it is closed at once.
    #[doc(alias = "VmbServerChannelInitSetVmbusHandle")]
    pub fn set_vmbus_handle(&mut self, handle: KernelHandle) -> Result<&mut Self> {
        // SAFETY: a live server channel in its init phase (invariant); the handle is open and,
        // on success, kept by the slot until after the channel's cleanup.
        to_result(unsafe {
            self.slot
                .kmcl()
                .server_channel_init_set_vmbus_handle(self.raw(), handle.as_raw())
        })?;
        self.slot.keep_vmbus_handle(handle);
        Ok(self)
    }

    /// The kernel handle the channel was bound to, if
    /// [`set_vmbus_handle`](Self::set_vmbus_handle) succeeded; the channel keeps owning it.
    pub fn vmbus_handle(&self) -> Option<&KernelHandle> {
        // SAFETY: the handle is only replaced by `set_vmbus_handle` (`&mut self`) and closed by
        // the teardown that consumes the builder, neither possible while `&self` is borrowed.
        unsafe { self.slot.vmbus_handle() }
    }
}

impl<'s, H: Handler<Client, K>, K: ChannelBackend> ChannelBuilder<'s, Client, H, K> {
    /// Allocates a client channel in `slot` (`VmbChannelAllocate` with `IsServer` FALSE); the
    /// rest is as for a server's `allocate`. PASSIVE_LEVEL (checked).
    ///
    /// # Errors
    ///
    /// As for a server's `allocate`.
    #[doc(alias = "VmbChannelAllocate")]
    pub fn allocate<'dev: 's>(slot: Pin<&'s mut ChannelSlot<'dev, H, K>>) -> Result<Self> {
        Self::allocate_in(slot)
    }

    /// The offer to open: its interface type, and its instance or `None` for any
    /// (`VmbClientChannelInitSetTargetPnp`). The handler's
    /// [`pnp_failure`](Handler::pnp_failure) hears about a failed connection.
    ///
    /// # Errors
    ///
    /// The failing status of the call.
    #[doc(alias = "VmbClientChannelInitSetTargetPnp")]
    pub fn set_target(
        &mut self,
        interface_type: Guid,
        instance: Option<Guid>,
    ) -> Result<&mut Self> {
        let stored = self
            .slot
            .store_target([interface_type, instance.unwrap_or(Guid::NIL)]);
        // CAST: `Guid` is a transparent `GUID`; the array lives in the pinned slot.
        let stored = stored.cast::<Guid>();
        let type_ptr = stored.cast::<vmbus_kmcl_sys::GUID>();
        let instance_ptr = match instance {
            // SAFETY: element 1 of the two-element array.
            Some(_) => unsafe { stored.add(1) }.cast::<vmbus_kmcl_sys::GUID>(),
            None => core::ptr::null(),
        };
        // SAFETY: a live client channel in its init phase (invariant); the GUIDs live in the
        // pinned slot, longer than the channel; the callback is sound for any channel whose
        // pointer is a `Shared<H, K>`.
        to_result(unsafe {
            self.slot.kmcl().client_channel_init_set_target_pnp(
                self.raw(),
                type_ptr,
                instance_ptr,
                Some(Trampolines::<Client, H, K>::pnp_failure),
            )
        })?;
        Ok(self)
    }

    /// The page counts of the incoming and outgoing rings
    /// (`VmbClientChannelInitSetRingBufferPageCount`).
    ///
    /// # Errors
    ///
    /// [`Error::BelowMinimum`] for a 0, before any call; the failing status of the call.
    #[doc(alias = "VmbClientChannelInitSetRingBufferPageCount")]
    pub fn set_ring_buffer_pages(&mut self, incoming: u32, outgoing: u32) -> Result<&mut Self> {
        if incoming == 0 || outgoing == 0 {
            return Err(Error::BelowMinimum { minimum: 1 });
        }
        // SAFETY: a live client channel in its init phase (invariant).
        to_result(unsafe {
            self.slot
                .kmcl()
                .client_channel_init_set_ring_buffer_page_count(self.raw(), incoming, outgoing)
        })?;
        Ok(self)
    }
}

// SAFETY: as for `Channel`: the builder borrows its slot exclusively, so the slot's owner-only
// cells are touched by this value alone; it shares the handler (`Sync`) and the backend
// (`Send + Sync`).
unsafe impl<R, H: Sync, K: ChannelBackend> Send for ChannelBuilder<'_, R, H, K> {}

impl<R, H, K: ChannelBackend> Drop for ChannelBuilder<'_, R, H, K> {
    /// Cleans the channel up (`VmbChannelCleanup`; it is disabled) and closes its VMBus kernel
    /// handle. PASSIVE_LEVEL.
    #[doc(alias = "VmbChannelCleanup")]
    fn drop(&mut self) {
        self.slot.teardown();
    }
}

/// A failed [`ChannelBuilder::enable`]: the error, and the builder it consumed, handed back.
pub struct EnableError<'s, R, H, K: ChannelBackend> {
    error: Error,
    builder: ChannelBuilder<'s, R, H, K>,
}

impl<'s, R, H, K: ChannelBackend> EnableError<'s, R, H, K> {
    /// Why the channel was not enabled.
    pub fn error(&self) -> Error {
        self.error
    }

    /// The builder, to reconfigure and enable again, or to drop at PASSIVE_LEVEL.
    pub fn into_builder(self) -> ChannelBuilder<'s, R, H, K> {
        self.builder
    }
}

impl<R, H, K: ChannelBackend> From<EnableError<'_, R, H, K>> for Error {
    /// The error; the builder is dropped, which cleans the channel up.
    fn from(failed: EnableError<'_, R, H, K>) -> Self {
        failed.error
    }
}

impl<R, H, K: ChannelBackend> core::fmt::Debug for EnableError<'_, R, H, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EnableError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<R, H, K: ChannelBackend> core::fmt::Display for EnableError<'_, R, H, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "the channel was not enabled: {}", self.error)
    }
}

impl<R, H, K: ChannelBackend> core::fmt::Debug for ChannelBuilder<'_, R, H, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}
