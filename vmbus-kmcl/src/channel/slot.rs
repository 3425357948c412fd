//! The pinned storage of one channel: what its callbacks reach through KMCL's channel pointer,
//! and what tears the channel down.

use core::cell::Cell;
use core::marker::PhantomPinned;
use core::pin::Pin;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use vmbus_kmcl_sys::{UNICODE_STRING, VMBCHANNEL, VMBCHANNEL__};

use super::DeviceRef;
use crate::dispatch::ChannelBackend;
use crate::guid::Guid;
use crate::handle::KernelHandle;

/// The part of a slot that KMCL's callbacks reach, through the channel pointer
/// (`VmbChannelSetPointer`), possibly on several threads at once.
///
/// `repr(C)` with the GPADL part first, so that code which knows the channel but not the
/// handler type finds it (and the shared part's size) at the channel pointer itself.
#[repr(C)]
pub(crate) struct Shared<H, K> {
    /// The size of this shared part, which the handler's GPADL cells must lie in.
    pub(crate) gpadls: super::gpadl::GpadlList,
    /// The backend the channel was allocated through.
    pub(crate) kmcl: K,
    /// The driver's handler.
    pub(crate) handler: H,
    /// Set by the opened trampoline when the handler accepted the open, cleared when the
    /// closed callback starts.
    pub(crate) open: AtomicBool,
}

/// Where a channel lives: the driver's handler, the backend, and the KMCL channel allocated in
/// it, pinned so that KMCL's callbacks can find them at a fixed address.
///
/// A driver creates one slot per channel, pins it (on the stack with [`core::pin::pin!`], in
/// its device extension, or in a `Box::pin`) and hands `slot.as_mut()` to
/// [`ChannelBuilder::allocate`](super::ChannelBuilder::allocate). The builder and the enabled
/// channel borrow the slot exclusively; once they are gone, [`ChannelSlot::handler`] reads the
/// handler again and the slot can take a new channel.
///
/// # Why a pinned slot
///
/// KMCL keeps a raw pointer to the channel's context for as long as the channel exists, and
/// calls the handler through it from its own threads. Without an allocator the context has to
/// live in memory the driver provides. Pinning gives the two guarantees that makes sound: the
/// slot does not move while borrowed, and its memory is not reused before its `Drop` ran, even
/// if the builder or channel borrowing it is leaked with `mem::forget`. The slot's `Drop`
/// therefore disables and cleans up a channel still in it, and closes the VMBus kernel handle
/// it owns, so no callback reaches the slot's memory after it is freed.
///
/// # A slot that borrows
///
/// Pinning protects the slot's own memory, not what its handler `H` or backend `K` borrow. A
/// slot that is itself leaked (a `Box::pin` passed to `mem::forget`, or a pinned local of a
/// future that is leaked) is never dropped, so its channel stays enabled and its callbacks keep
/// running. [`ChannelSlot::new`] therefore requires `H: 'static` and `K: 'static` (enforced by
/// its bounds): a leaked slot then keeps calling a handler that borrows nothing whose lifetime
/// can end. The device is the duty of [`DeviceRef::from_raw`], whose contract asks for a device
/// that stays valid until the channel is cleaned up.
///
/// A handler or backend that borrows (a `&ClientInterface` table, a `&SharedBuffer` shared
/// through a GPADL, any `&T`) goes through [`ChannelSlot::scope`], which keeps the slot in its
/// own frame and drops it, tearing its channel down, when the closure returns or unwinds; the
/// closure only gets a `Pin<&mut ChannelSlot>` of a higher-ranked lifetime, so neither the slot
/// nor anything borrowing it escapes (enforced by the closure's signature). A driver that must
/// keep such a slot elsewhere (a device extension torn down with its device) uses the `unsafe`
/// [`ChannelSlot::new_borrowing`] and promises to drop it.
///
/// # Examples
///
/// The handler is the slot's again once the channel is gone, and a leaked channel is torn
/// down by the slot:
///
/// ```
/// use core::pin::pin;
/// use core::ptr::NonNull;
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use vmbus_kmcl::channel::{ChannelSlot, Client, ClientBuilder, Handler, OpenView, StoppedView};
/// use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
/// use vmbus_kmcl::packet::IncomingPacket;
/// use vmbus_kmcl::{guid, DeviceRef};
///
/// #[derive(Default)]
/// struct Counter { closes: AtomicU32 }
/// impl<K: ChannelBackend> Handler<Client, K> for Counter {
///     fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
///         packet.complete_empty();
///     }
///     fn closed(&self, _: &StoppedView<'_, Client, K>) {
///         self.closes.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let bus = vmbus_kmcl_sim::Bus::new();
/// // SAFETY: the sim's guest device lives as long as the bus.
/// let guest = unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).unwrap()) };
/// let mut slot = pin!(ChannelSlot::new(guest, Linked, Counter::default()));
/// let mut builder = ClientBuilder::allocate(slot.as_mut())?;
/// builder.set_target(guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"), None)?;
/// let channel = builder.enable()?;
/// drop(channel);
/// assert_eq!(slot.handler().closes.load(Ordering::Relaxed), 0); // it never opened
///
/// {
///     let mut other = pin!(ChannelSlot::new(guest, Linked, Counter::default()));
///     core::mem::forget(ClientBuilder::allocate(other.as_mut())?);
///     assert_eq!(bus.leak_report().channels, 1);
/// } // dropping the slot cleans the leaked channel up
/// bus.assert_no_leaks();
/// # Ok::<(), vmbus_kmcl::Error>(())
/// ```
///
/// # Invariants
///
/// `channel` is `Some` exactly while a KMCL channel allocated through `shared.kmcl`, with its
/// pointer set to `&shared`, exists; `enabled` is true exactly while that channel may be
/// enabled (between a successful `VmbChannelEnable` and the `VmbChannelDisable` that follows);
/// `vmbus_handle` holds the kernel handle the channel was bound to, open until the channel is
/// cleaned up; `name` and `target` hold what KMCL was given pointers to. The fields other than
/// `shared` are only touched by the value that borrows the slot exclusively (builder or
/// channel) or by `Drop`, never by callbacks.
pub struct ChannelSlot<'dev, H, K: ChannelBackend> {
    shared: Shared<H, K>,
    device: DeviceRef<'dev>,
    channel: Cell<Option<NonNull<VMBCHANNEL__>>>,
    enabled: Cell<bool>,
    vmbus_handle: Cell<Option<KernelHandle>>,
    name: Cell<UNICODE_STRING>,
    target: Cell<[Guid; 2]>,
    _pinned: PhantomPinned,
}

impl<'dev, H: 'static, K: ChannelBackend + 'static> ChannelSlot<'dev, H, K> {
    /// An empty slot for a channel of `device`, calling KMCL through `kmcl` and the callbacks
    /// of `handler`.
    ///
    /// `H` and `K` borrow nothing short-lived (`'static`), so even a leaked slot calls nothing
    /// that dangles; a borrowing handler or backend goes through [`ChannelSlot::scope`].
    pub fn new(device: DeviceRef<'dev>, kmcl: K, handler: H) -> Self {
        // SAFETY: `H` and `K` are `'static`: no borrow in them ends, leaked slot or not.
        unsafe { Self::new_borrowing(device, kmcl, handler) }
    }
}

impl<'dev, H, K: ChannelBackend> ChannelSlot<'dev, H, K> {
    /// Runs `f` on a pinned slot for a channel of `device` (calling KMCL through `kmcl` and the
    /// callbacks of `handler`), then drops the slot, tearing down a channel still in it, and
    /// returns what `f` returned. The slot is also dropped when `f` unwinds.
    ///
    /// Unlike [`ChannelSlot::new`], `H` and `K` may borrow: the slot lives in this function's
    /// frame, `f` gets it only through a reference that cannot escape the call, so the slot is
    /// dropped before any borrow of `H` or `K` ends.
    ///
    /// ```
    /// use core::ptr::NonNull;
    /// use core::sync::atomic::{AtomicU32, Ordering};
    /// use vmbus_kmcl::channel::{ChannelSlot, Client, ClientBuilder, Handler, OpenView};
    /// use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
    /// use vmbus_kmcl::packet::IncomingPacket;
    /// use vmbus_kmcl::{guid, DeviceRef};
    ///
    /// struct Counting<'a> { hits: &'a AtomicU32 }
    /// impl<K: ChannelBackend> Handler<Client, K> for Counting<'_> {
    ///     fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
    ///         self.hits.fetch_add(1, Ordering::Relaxed);
    ///         packet.complete_empty();
    ///     }
    /// }
    ///
    /// let bus = vmbus_kmcl_sim::Bus::new();
    /// // SAFETY: the sim's guest device lives as long as the bus.
    /// let guest = unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).unwrap()) };
    /// let hits = AtomicU32::new(0);
    /// ChannelSlot::scope(guest, Linked, Counting { hits: &hits }, |slot| {
    ///     let mut builder = ClientBuilder::allocate(slot)?;
    ///     builder.set_target(guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"), None)?;
    ///     core::mem::forget(builder.enable()?); // torn down by the slot at scope end
    ///     Ok::<(), vmbus_kmcl::Error>(())
    /// })?;
    /// bus.assert_no_leaks();
    /// # Ok::<(), vmbus_kmcl::Error>(())
    /// ```
    pub fn scope<R>(
        device: DeviceRef<'dev>,
        kmcl: K,
        handler: H,
        f: impl FnOnce(Pin<&mut ChannelSlot<'dev, H, K>>) -> R,
    ) -> R {
        // SAFETY: the slot is a local of this frame, pinned in place and dropped when `f`
        // returns or unwinds; `f` only gets a reference of a lifetime local to the call, so it
        // cannot leak the slot, and `H` and `K` are borrowed for longer than this call.
        let slot = core::pin::pin!(unsafe { Self::new_borrowing(device, kmcl, handler) });
        f(slot)
    }

    /// An empty slot like [`ChannelSlot::new`] whose handler or backend may borrow.
    ///
    /// # Safety
    ///
    /// The slot must be dropped, never leaked, before any borrow in `H` or `K` ends: KMCL keeps
    /// calling the handler of a slot that is not dropped. Prefer [`ChannelSlot::scope`], which
    /// guarantees it.
    pub unsafe fn new_borrowing(device: DeviceRef<'dev>, kmcl: K, handler: H) -> Self {
        // INVARIANT: no channel yet.
        Self {
            shared: Shared {
                gpadls: super::gpadl::GpadlList::new(core::mem::size_of::<Shared<H, K>>()),
                kmcl,
                handler,
                open: AtomicBool::new(false),
            },
            device,
            channel: Cell::new(None),
            enabled: Cell::new(false),
            vmbus_handle: Cell::new(None),
            name: Cell::new(UNICODE_STRING {
                Length: 0,
                MaximumLength: 0,
                Buffer: core::ptr::null_mut(),
            }),
            target: Cell::new([Guid::NIL; 2]),
            _pinned: PhantomPinned,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    /// The backend.
    pub fn kmcl(&self) -> K {
        self.shared.kmcl
    }

    pub(crate) fn device(&self) -> DeviceRef<'dev> {
        self.device
    }

    pub(crate) fn shared(&self) -> &Shared<H, K> {
        &self.shared
    }

    /// Records a freshly allocated channel.
    ///
    /// # Safety
    ///
    /// `channel` was allocated through `self.kmcl()` and is owned by this slot from now on; no
    /// channel is recorded.
    pub(crate) unsafe fn set_channel(&self, channel: NonNull<VMBCHANNEL__>) {
        // INVARIANT: the caller hands over a live channel; its pointer is set right after.
        self.channel.set(Some(channel));
    }

    /// Records whether the channel was enabled.
    ///
    /// # Safety
    ///
    /// `enabled` is true only after a successful `VmbChannelEnable`, and false only after
    /// `VmbChannelDisable` returned.
    pub(crate) unsafe fn set_enabled(&self, enabled: bool) {
        // INVARIANT: as the caller guarantees.
        self.enabled.set(enabled);
    }

    /// Keeps `handle` until the channel is cleaned up (closing a previous one).
    pub(crate) fn keep_vmbus_handle(&self, handle: KernelHandle) {
        drop(self.vmbus_handle.replace(Some(handle)));
    }

    /// The VMBus kernel handle the slot keeps.
    ///
    /// # Safety
    ///
    /// Neither [`keep_vmbus_handle`](Self::keep_vmbus_handle) nor
    /// [`teardown`](Self::teardown) runs while the returned reference lives.
    pub(crate) unsafe fn vmbus_handle(&self) -> Option<&KernelHandle> {
        // SAFETY: the cell is only written by `keep_vmbus_handle` and `teardown`, which the
        // caller keeps from running while the reference lives.
        unsafe { &*self.vmbus_handle.as_ptr() }.as_ref()
    }

    /// Stores a friendly name header and returns its stable address.
    pub(crate) fn store_name(&self, name: UNICODE_STRING) -> *const UNICODE_STRING {
        self.name.set(name);
        self.name.as_ptr()
    }

    /// Stores the target GUIDs and returns their stable addresses.
    pub(crate) fn store_target(&self, target: [Guid; 2]) -> *const [Guid; 2] {
        self.target.set(target);
        self.target.as_ptr()
    }

    /// Disables (if enabled) and cleans up the channel in the slot, then closes its VMBus
    /// kernel handle. Nothing happens for an empty slot. PASSIVE_LEVEL (a debug assertion
    /// checks it, see [`crate::irql`]).
    pub(crate) fn teardown(&self) {
        if let Some(channel) = self.channel.take() {
            debug_assert!(
                crate::irql::current() == crate::irql::PASSIVE_LEVEL,
                "vmbus-kmcl: a channel torn down above PASSIVE_LEVEL"
            );
            let raw: VMBCHANNEL = channel.as_ptr();
            if self.enabled.replace(false) {
                // SAFETY: the slot's live channel, enabled (invariant); teardown runs from the
                // owner or `Drop`, never from one of the channel's callbacks.
                unsafe { self.shared.kmcl.channel_disable(raw) };
            }
            // SAFETY: the slot's live channel, now disabled, cleaned up once: it was taken out
            // of the slot above.
            unsafe { self.shared.kmcl.channel_cleanup(raw) };
            self.shared.open.store(false, Ordering::Release);
        }
        // The handle outlives the channel that used it.
        drop(self.vmbus_handle.take());
    }

    /// Shared access to a pinned slot.
    pub(crate) fn pinned_ref(slot: Pin<&mut Self>) -> &Self {
        slot.into_ref().get_ref()
    }
}

impl<H, K: ChannelBackend> Drop for ChannelSlot<'_, H, K> {
    /// Tears down a channel still in the slot (one whose builder or channel was leaked).
    /// PASSIVE_LEVEL.
    fn drop(&mut self) {
        self.teardown();
    }
}

impl<H: core::fmt::Debug, K: ChannelBackend + core::fmt::Debug> core::fmt::Debug
    for ChannelSlot<'_, H, K>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelSlot")
            .field("kmcl", &self.shared.kmcl)
            .field("handler", &self.shared.handler)
            .field("in_use", &self.channel.get().is_some())
            .finish_non_exhaustive()
    }
}
