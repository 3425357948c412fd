//! Enabled channels.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use vmbus_kmcl_sys::{VMBCHANNEL, VMBCHANNEL__};

use super::builder::ChannelBuilder;
use super::handler::Handler;
use super::ops::ChannelOps;
use super::slot::ChannelSlot;
use super::{Client, MmioSpace, Role};
use crate::dispatch::ChannelBackend;
use crate::error::Result;

/// An enabled channel: offered (server) or opening/open (client), with its handler receiving
/// KMCL's callbacks.
///
/// Made by [`ChannelBuilder::enable`]. [`disable`](Self::disable) closes (client) or
/// rescinds (server) it and gives the builder back, to be configured and enabled again (a
/// client whose server closed the channel is re-enabled that way). Dropping the channel
/// disables it, cleans it up and closes the VMBus kernel handle it owns. PASSIVE_LEVEL.
///
/// The channel is not reachable from its own handler (it borrows the slot that owns the
/// handler), and the callback views have no [`pause`](Self::pause) or
/// [`start`](Self::start): KMCL forbids both inside state callbacks. It is `Send` (a driver
/// may enable it in one thread and disable it in another), not `Sync`.
///
/// # Invariants
///
/// The slot holds the live, enabled channel `ops` names, allocated with role `R` through the
/// slot's backend, whose pointer is the slot's shared part.
///
/// # Examples
///
/// Pausing and starting a server's flow, and disabling it to enable it again:
///
/// ```
/// use core::pin::pin;
/// use core::ptr::NonNull;
/// use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, Server, ServerBuilder};
/// use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
/// use vmbus_kmcl::packet::IncomingPacket;
/// use vmbus_kmcl::{guid, DeviceRef};
///
/// struct Vsp;
/// impl<K: ChannelBackend> Handler<Server, K> for Vsp {
///     fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
///         packet.complete_empty();
///     }
/// }
///
/// let bus = vmbus_kmcl_sim::Bus::new();
/// // SAFETY: the sim's root device lives as long as the bus.
/// let root = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) };
/// let mut slot = pin!(ChannelSlot::new(root, Linked, Vsp));
/// let id = guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b");
/// let mut builder = ServerBuilder::allocate(slot.as_mut())?;
/// builder.set_interface_id(id, id)?;
/// let channel = builder.enable()?;
/// channel.start();
/// channel.pause()?;
/// channel.start();
/// assert_eq!(channel.mmio_space(), None); // no guest opened it
/// let channel = channel.disable().enable()?; // rescinded, offered again
/// drop(channel);
/// bus.assert_no_leaks();
/// # Ok::<(), vmbus_kmcl::Error>(())
/// ```
pub struct Channel<'s, R, H, K: ChannelBackend> {
    pub(super) slot: &'s ChannelSlot<'s, H, K>,
    pub(super) ops: ChannelOps<R, K>,
    _role: PhantomData<R>,
}

impl<'s, R: Role, H: Handler<R, K>, K: ChannelBackend> Channel<'s, R, H, K> {
    /// # Safety
    ///
    /// The slot holds the live channel `channel` of role `R`, just enabled, owned by the new
    /// value.
    pub(crate) unsafe fn from_enabled(
        slot: &'s ChannelSlot<'s, H, K>,
        channel: NonNull<VMBCHANNEL__>,
    ) -> Self {
        // SAFETY: the slot keeps the channel live for as long as this value exists.
        let ops = unsafe { ChannelOps::new(slot.kmcl(), channel) };
        // INVARIANT: the caller's guarantee.
        Self {
            slot,
            ops,
            _role: PhantomData,
        }
    }

    /// Disables the channel (`VmbChannelDisable`): a client closes it, a server rescinds the
    /// offer; KMCL waits until the channel is paused and closed, running the handler's
    /// `suspend` and `closed`. Every incoming packet still held must get completed meanwhile
    /// (from another thread), or this waits forever. Returns the builder, to reconfigure and
    /// enable the channel again. PASSIVE_LEVEL.
    #[doc(alias = "VmbChannelDisable")]
    pub fn disable(self) -> ChannelBuilder<'s, R, H, K> {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the slot's live, enabled channel (invariant); not from one of its callbacks
        // (the channel is not reachable from them).
        unsafe { this.slot.kmcl().channel_disable(this.ops.raw()) };
        // SAFETY: `VmbChannelDisable` returned.
        unsafe { this.slot.set_enabled(false) };
        // SAFETY: the slot's live channel, now disabled, handed from this value (whose `Drop`
        // does not run) to the builder.
        unsafe { ChannelBuilder::from_disabled(this.slot, this.ops.non_null()) }
    }

    /// Takes the channel out of the paused state (`VmbChannelStart`). A server calls it after
    /// enabling; an open channel then runs the handler's `started`, switches the incoming queue
    /// on, and runs `post_started`. PASSIVE_LEVEL.
    #[doc(alias = "VmbChannelStart")]
    pub fn start(&self) {
        // SAFETY: enabled (invariant), and not inside a state callback: the channel is not
        // reachable from the handler, and the views have no `start`.
        unsafe { self.ops.start() };
    }

    /// Pauses the channel (`VmbChannelPause`) and waits until the handler's `suspend` ran and
    /// every incoming packet is completed (held packets must be completed from another thread,
    /// or this waits forever). PASSIVE_LEVEL.
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`](crate::Error::IrqlTooHigh) above PASSIVE_LEVEL, before any call.
    #[doc(alias = "VmbChannelPause")]
    pub fn pause(&self) -> Result<()> {
        crate::irql::require_at_most(crate::irql::PASSIVE_LEVEL)?;
        // SAFETY: enabled (invariant), and not inside a state callback (see `start`).
        unsafe { self.ops.pause() };
        Ok(())
    }

    shared_channel_methods!(properties);
    shared_channel_methods!(flow);

    /// The MMIO space reserved for the device (`VmbChannelGetMmioSpace`), or `None` while the
    /// channel is not open (before the handler accepted the open, and from the start of the
    /// `closed` callback on).
    #[doc(alias = "VmbChannelGetMmioSpace")]
    pub fn mmio_space(&self) -> Option<MmioSpace> {
        if !self.slot.shared().open.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: the opened trampoline set the flag and the closed one has not cleared it.
        Some(unsafe { self.ops.mmio_space() })
    }

    /// Whether the channel is open: the handler accepted the open and `closed` has not started.
    pub fn is_open(&self) -> bool {
        self.slot.shared().open.load(Ordering::Acquire)
    }

    /// The live channel and its backend (for the send path).
    #[inline(always)]
    pub(crate) fn ops(&self) -> &ChannelOps<R, K> {
        &self.ops
    }

    /// The slot holding the channel and its handler (for the send path).
    #[inline(always)]
    pub(crate) fn slot(&self) -> &'s ChannelSlot<'s, H, K> {
        self.slot
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        self.slot.handler()
    }

    /// The VMBus kernel handle a server channel was bound to (see
    /// [`ChannelBuilder::set_vmbus_handle`]); the channel keeps owning it.
    pub fn vmbus_handle(&self) -> Option<&crate::KernelHandle> {
        // SAFETY: an enabled channel never replaces its handle, and the teardown that closes it
        // consumes the channel, which `&self` prevents while the reference lives.
        unsafe { self.slot.vmbus_handle() }
    }

    /// The raw channel handle, for calls this crate does not wrap. The channel keeps owning
    /// it: code using the handle must not disable or clean it up, nor change its pointer.
    pub fn as_raw(&self) -> VMBCHANNEL {
        self.ops.raw()
    }
}

impl<H: Handler<Client, K>, K: ChannelBackend> Channel<'_, Client, H, K> {
    /// Sends `request` and waits for the server's completion, which is copied into
    /// `response`; returns the part of `response` it filled
    /// (`VmbChannelSendSynchronousRequest` with `VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION`).
    /// `timeout`: `None` waits as long as it takes; a zero timeout does not queue the request
    /// when the ring is full. PASSIVE_LEVEL (checked). Client channels only: KMCL lets the root send only
    /// without waiting ([`try_send`](Self::try_send)).
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`](crate::Error::IrqlTooHigh) above PASSIVE_LEVEL,
    /// [`Error::LengthNotMultipleOf8`](crate::Error::LengthNotMultipleOf8) when `response`'s
    /// length is not a multiple of 8 (KMCL requires it), and
    /// [`Error::LengthTooLarge`](crate::Error::LengthTooLarge) past `u32::MAX`, before any call;
    /// the failing status of the call, e.g. `STATUS_CANCELLED` when the timeout expired,
    /// `STATUS_DEVICE_REMOVED` when the channel is going away, `STATUS_BUFFER_OVERFLOW` when a
    /// zero timeout found the ring full.
    #[doc(alias = "VmbChannelSendSynchronousRequest")]
    pub fn request<'r>(
        &self,
        request: &[u8],
        response: &'r mut [u8],
        timeout: Option<core::time::Duration>,
    ) -> Result<&'r [u8]> {
        crate::irql::require_at_most(crate::irql::PASSIVE_LEVEL)?;
        // SAFETY: a client channel (this impl); not from the started callback (the channel is
        // not reachable from the handler); at PASSIVE_LEVEL (checked above).
        unsafe { self.ops.request(request, response, timeout) }
    }
}

// SAFETY: the channel borrows its slot exclusively, so the slot's owner-only cells are touched
// by this value alone, wherever it goes; what it shares with other threads is the handler
// (`Sync`, as KMCL's callbacks already need) and the backend (`Send + Sync`).
unsafe impl<R, H: Sync, K: ChannelBackend> Send for Channel<'_, R, H, K> {}

impl<R, H, K: ChannelBackend> Drop for Channel<'_, R, H, K> {
    /// Disables the channel, cleans it up and closes its VMBus kernel handle. PASSIVE_LEVEL.
    #[doc(alias = "VmbChannelDisable")]
    #[doc(alias = "VmbChannelCleanup")]
    fn drop(&mut self) {
        self.slot.teardown();
    }
}

impl<R, H, K: ChannelBackend> core::fmt::Debug for Channel<'_, R, H, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel")
            .field("channel", &self.ops.raw())
            .finish_non_exhaustive()
    }
}
