//! The handler trait, the views its callbacks receive, and the `extern "C"` trampolines that
//! KMCL calls.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use vmbus_kmcl_sys::{
    NTSTATUS, PVOID, UINT32, VMBCHANNEL, VMBPACKETCOMPLETION, VMB_CHANNEL_STATE_CHANGE_CALLBACKS,
};

use super::ops::ChannelOps;
use super::slot::Shared;
use super::{Client, Role};
use crate::dispatch::ChannelBackend;
use crate::error::Result;
use crate::packet::IncomingPacket;
use crate::status::NtStatus;

/// What a driver does when KMCL reports on one of its channels: one method per KMCL callback.
///
/// `R` is the channel's role ([`Server`](super::Server) or [`Client`]), `K` its backend. Every
/// method but [`process_packet`](Handler::process_packet) has a default that does what KMCL
/// does when the callback is absent. The handler lives in the channel's
/// [`ChannelSlot`](super::ChannelSlot) and is shared by every callback, possibly on several
/// processors at once, hence `Sync` and `&self`: keep mutable state in atomics or locks.
///
/// # What each callback may do
///
/// Each callback receives a view of its channel offering only what KMCL allows there, so the
/// rest does not compile:
///
/// | callback | IRQL | view | what it adds |
/// |---|---|---|---|
/// | [`opened`](Handler::opened) | PASSIVE | [`OpenView`] | accept or refuse the open |
/// | [`started`](Handler::started) | PASSIVE | [`OpenView`] | incoming queue still off: no waiting |
/// | [`post_started`](Handler::post_started) | PASSIVE | [`PostStartedView`] | blocking requests (client) |
/// | [`process_packet`](Handler::process_packet) | `<= DISPATCH` | [`OpenView`] | the packet token |
/// | [`processing_complete`](Handler::processing_complete) | `<= DISPATCH` | [`OpenView`] | end of a batch |
/// | [`suspend`](Handler::suspend) | PASSIVE | [`StoppedView`] | no sending |
/// | [`closed`](Handler::closed) | PASSIVE | [`StoppedView`] | no sending |
/// | [`pnp_failure`](Handler::pnp_failure) | PASSIVE | none | client only |
///
/// No view has `pause` or `start` (KMCL forbids them in state callbacks), and only
/// [`PostStartedView`] has the blocking [`request`](PostStartedView::request), which would
/// never return from `started`. The handler cannot reach its own [`Channel`](super::Channel)
/// either: the channel borrows the slot that owns the handler. (A driver that puts the channel
/// in a global and calls it from a callback gets past the types; the sim reports such a call as
/// a violation.) `process_packet` and `processing_complete` run at `DISPATCH_LEVEL` unless the
/// channel asked for passive processing; the types cannot see the IRQL, so such a handler must
/// not block there.
///
/// # Examples
///
/// A client handler that negotiates a version in `post_started` (the one place a blocking
/// request is allowed) and accepts only packets it understands:
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use vmbus_kmcl::channel::{Client, Handler, OpenView, PostStartedView};
/// use vmbus_kmcl::dispatch::ChannelBackend;
/// use vmbus_kmcl::packet::IncomingPacket;
///
/// #[derive(Default)]
/// struct Vsc { version: AtomicU32 }
///
/// impl<K: ChannelBackend> Handler<Client, K> for Vsc {
///     fn post_started(&self, channel: &PostStartedView<'_, Client, K>) {
///         let mut reply = [0u8; 8];
///         if let Ok(reply) = channel.request(&2u32.to_le_bytes(), &mut reply, None) {
///             if let Ok(bytes) = <[u8; 4]>::try_from(&reply[..reply.len().min(4)]) {
///                 self.version.store(u32::from_le_bytes(bytes), Ordering::Release);
///             }
///         }
///     }
///     fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
///         if self.version.load(Ordering::Acquire) == 0 {
///             packet.fail(); // nothing is expected before the negotiation
///         } else {
///             packet.complete_empty();
///         }
///     }
/// }
/// # let _ = Vsc::default();
/// ```
///
/// # Panics
///
/// A panic in a handler method never unwinds into KMCL: the trampolines are `extern "C"`
/// functions, which abort the process on a panic (in a driver, the panic handler decides, e.g. a
/// bug check; drivers build with `panic = "abort"`). In a host test on the sim that means a
/// panicking handler aborts the test binary; nothing catches it.
pub trait Handler<R: Role, K: ChannelBackend>: Sync + Sized {
    /// Whether KMCL should call [`processing_complete`](Handler::processing_complete) after
    /// each batch of packets. False by default, so the receive path has no extra call; a
    /// handler overriding `processing_complete` sets it to true.
    const PROCESSING_COMPLETE: bool = false;

    /// `EvtVmbChannelOpened`: the peer opened the channel. Returning an error refuses the open:
    /// KMCL rolls the channel back to a state without traffic (the status goes to KMCL; a
    /// success-class status in the error becomes `STATUS_UNSUCCESSFUL`). PASSIVE_LEVEL.
    ///
    /// # Errors
    ///
    /// The error refusing the open.
    fn opened(&self, channel: &OpenView<'_, R, K>) -> Result<()> {
        let _ = channel;
        Ok(())
    }

    /// `EvtVmbChannelStarted`: the flow starts, before the incoming queue is switched on.
    /// Sending is allowed, waiting for a reply is not. PASSIVE_LEVEL.
    fn started(&self, channel: &OpenView<'_, R, K>) {
        let _ = channel;
    }

    /// `EvtVmbChannelPostStarted`: the incoming queue runs; the place for blocking requests
    /// such as version negotiation. PASSIVE_LEVEL.
    fn post_started(&self, channel: &PostStartedView<'_, R, K>) {
        let _ = channel;
    }

    /// `EvtVmbChannelProcessPacket`: one incoming packet, to answer through its token.
    /// `<= DISPATCH_LEVEL` (PASSIVE_LEVEL on a channel processing at passive level, and for a
    /// packet redelivered after a deferral).
    fn process_packet(&self, channel: &OpenView<'_, R, K>, packet: IncomingPacket<'_, K>);

    /// `EvtVmbChannelProcessingComplete`: a batch of `packets` deliveries ended. Called only
    /// when [`PROCESSING_COMPLETE`](Handler::PROCESSING_COMPLETE) is true. `<= DISPATCH_LEVEL`.
    fn processing_complete(&self, channel: &OpenView<'_, R, K>, packets: u32) {
        let _ = (channel, packets);
    }

    /// `EvtVmbChannelSuspend`: the flow stopped (pause, disable, or the peer going away). No
    /// packet is delivered from now until the next `started`; every packet still held must be
    /// completed (KMCL waits for them), and sending stops. PASSIVE_LEVEL.
    fn suspend(&self, channel: &StoppedView<'_, R, K>) {
        let _ = channel;
    }

    /// `EvtVmbChannelClosed`: the channel closed (disable, or the peer closing or rescinding).
    /// PASSIVE_LEVEL. When it returns, the trampoline deletes every GPADL still held in a
    /// [`GpadlCell`](super::gpadl::GpadlCell) of the handler, as KMCL requires.
    fn closed(&self, channel: &StoppedView<'_, R, K>) {
        let _ = channel;
    }

    /// `EvtChannelPnpFailure` (client channels only): connecting to the target failed with
    /// `status`. PASSIVE_LEVEL.
    fn pnp_failure(&self, status: NtStatus) {
        let _ = status;
    }
}

/// A channel as its callbacks see it while it is open: [`opened`](Handler::opened),
/// [`started`](Handler::started), [`process_packet`](Handler::process_packet) and
/// [`processing_complete`](Handler::processing_complete).
///
/// It offers the channel's properties, the interrupt latency (client), the MMIO space and a
/// non-blocking send ([`try_send`](OpenView::try_send)); no pause, start or blocking request.
pub struct OpenView<'c, R, K> {
    pub(super) ops: ChannelOps<R, K>,
    _callback: PhantomData<&'c ()>,
}

/// The view of [`post_started`](Handler::post_started): an [`OpenView`] (through `Deref`) plus,
/// on a client, the blocking [`request`](PostStartedView::request). PASSIVE_LEVEL.
pub struct PostStartedView<'c, R, K> {
    open: OpenView<'c, R, K>,
}

/// The view of [`suspend`](Handler::suspend) and [`closed`](Handler::closed): the channel's
/// properties only (nothing may be sent any more).
pub struct StoppedView<'c, R, K> {
    pub(super) ops: ChannelOps<R, K>,
    _callback: PhantomData<&'c ()>,
}

impl<R: Role, K: ChannelBackend> OpenView<'_, R, K> {
    fn new(ops: ChannelOps<R, K>) -> Self {
        Self {
            ops,
            _callback: PhantomData,
        }
    }

    /// The live channel and its backend (for the send path).
    #[inline(always)]
    pub(crate) fn ops(&self) -> &ChannelOps<R, K> {
        &self.ops
    }

    shared_channel_methods!(properties);
    shared_channel_methods!(flow);

    /// The MMIO space the server reserved for the device (`VmbChannelGetMmioSpace`).
    #[doc(alias = "VmbChannelGetMmioSpace")]
    pub fn mmio_space(&self) -> super::MmioSpace {
        // SAFETY: every callback with this view runs while the channel is open.
        unsafe { self.ops.mmio_space() }
    }
}

impl<K: ChannelBackend> OpenView<'_, Client, K> {
    /// Sets the latency of outgoing interrupts, in 100 ns units, and returns the previous
    /// value (`VmbChannelSetInterruptLatency`). KMCL allows it only while the channel is open,
    /// which every callback with this view is.
    ///
    /// # Errors
    ///
    /// The failing status of the call.
    #[doc(alias = "VmbChannelSetInterruptLatency")]
    pub fn set_interrupt_latency(&self, latency: u16) -> Result<u16> {
        // SAFETY: every callback with this view runs between opened and closed.
        unsafe { self.ops.set_interrupt_latency(latency) }
    }
}

impl<'c, R, K> core::ops::Deref for PostStartedView<'c, R, K> {
    type Target = OpenView<'c, R, K>;

    fn deref(&self) -> &Self::Target {
        &self.open
    }
}

impl<K: ChannelBackend> PostStartedView<'_, Client, K> {
    /// Sends `request` and waits for the server's completion, copied into `response`
    /// (`VmbChannelSendSynchronousRequest`, waiting for completion); see
    /// [`Channel::request`](super::Channel::request). PASSIVE_LEVEL.
    ///
    /// # Errors
    ///
    /// As for [`Channel::request`](super::Channel::request).
    #[doc(alias = "VmbChannelSendSynchronousRequest")]
    pub fn request<'r>(
        &self,
        request: &[u8],
        response: &'r mut [u8],
        timeout: Option<core::time::Duration>,
    ) -> Result<&'r [u8]> {
        // SAFETY: a client channel (this impl), in its post-started callback (PASSIVE_LEVEL,
        // not started).
        unsafe { self.open.ops.request(request, response, timeout) }
    }
}

impl<R: Role, K: ChannelBackend> StoppedView<'_, R, K> {
    shared_channel_methods!(properties);
}

impl<R, K> core::fmt::Debug for OpenView<'_, R, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenView").finish_non_exhaustive()
    }
}

impl<R, K> core::fmt::Debug for PostStartedView<'_, R, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PostStartedView").finish_non_exhaustive()
    }
}

impl<R, K> core::fmt::Debug for StoppedView<'_, R, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoppedView").finish_non_exhaustive()
    }
}

/// What a trampoline finds for its channel: the slot's shared part and the channel's calls.
type Context<'c, R, H, K> = (&'c Shared<H, K>, ChannelOps<R, K>);

/// The trampolines of handler `H` on a channel of role `R` and backend `K`.
pub(crate) struct Trampolines<R, H, K>(PhantomData<(R, H, K)>);

impl<R: Role, H: Handler<R, K>, K: ChannelBackend> Trampolines<R, H, K> {
    /// The state callbacks, registered with `VmbChannelInitSetStateChangeCallbacks`.
    pub(crate) const STATE: VMB_CHANNEL_STATE_CHANGE_CALLBACKS = {
        let mut callbacks = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
        callbacks.EvtChannelOpened = Some(Self::opened);
        callbacks.EvtChannelClosed = Some(Self::closed);
        callbacks.EvtChannelSuspend = Some(Self::suspend);
        callbacks.EvtChannelStarted = Some(Self::started);
        callbacks.EvtChannelPostStarted = Some(Self::post_started);
        callbacks
    };

    /// The processing-complete callback, absent unless the handler asks for it.
    pub(crate) const PROCESSING_COMPLETE: vmbus_kmcl_sys::PFN_VMB_CHANNEL_PROCESSING_COMPLETE =
        if H::PROCESSING_COMPLETE {
            Some(Self::processing_complete)
        } else {
            None
        };

    /// The context and the operations of `channel`, as the trampolines see them.
    ///
    /// # Safety
    ///
    /// `channel` is the live channel a KMCL callback of this trampoline set was called for
    /// (KMCL passes the handle it was registered on, never NULL).
    #[inline(always)]
    unsafe fn context<'c>(channel: VMBCHANNEL) -> Context<'c, R, H, K> {
        // SAFETY: a live channel of backend `K`, allocated after `prepare` (the builder calls
        // it first): the caller's contract.
        let pointer = unsafe { <K as crate::dispatch::sealed::Sealed>::pointer_of(channel) };
        // SAFETY: the builder set the channel pointer to the slot's `Shared<H, K>` before it
        // registered any callback, so a callback finds it non-NULL.
        let shared = unsafe { NonNull::new_unchecked(pointer.cast::<Shared<H, K>>()) };
        // SAFETY: KMCL calls a callback with the channel it was registered on, never NULL.
        let channel = unsafe { NonNull::new_unchecked(channel) };
        // SAFETY: the builder registered these trampolines only on channels whose pointer it
        // set to the `Shared<H, K>` of their pinned slot, which stays in place and alive until
        // the channel is cleaned up (after which KMCL calls nothing), and which callbacks only
        // read (`Shared` is `Sync` through `H: Sync`, `K: Sync`).
        let shared = unsafe { shared.as_ref() };
        // SAFETY: the channel is live while its callback runs (caller), and was allocated
        // through `shared.kmcl` with role `R` (the builder's invariant).
        let ops = unsafe { ChannelOps::new(shared.kmcl, channel) };
        (shared, ops)
    }

    /// `EvtVmbChannelOpened`.
    unsafe extern "C" fn opened(channel: VMBCHANNEL) -> NTSTATUS {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let (shared, ops) = unsafe { Self::context(channel) };
        let view = OpenView::new(ops);
        match shared.handler.opened(&view) {
            Ok(()) => {
                shared.open.store(true, Ordering::Release);
                NtStatus::SUCCESS.to_raw()
            }
            Err(error) => {
                // A refused open never gets a closed callback: GPADLs made in `opened` go now.
                shared.gpadls.release_all(&view.ops);
                refusal(error.status())
            }
        }
    }

    /// `EvtVmbChannelClosed`.
    unsafe extern "C" fn closed(channel: VMBCHANNEL) {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let (shared, ops) = unsafe { Self::context(channel) };
        shared.open.store(false, Ordering::Release);
        let view = StoppedView {
            ops,
            _callback: PhantomData,
        };
        shared.handler.closed(&view);
        // KMCL requires every GPADL gone by the end of the closed callback.
        shared.gpadls.release_all(&view.ops);
    }

    /// `EvtVmbChannelSuspend`.
    unsafe extern "C" fn suspend(channel: VMBCHANNEL) {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let (shared, ops) = unsafe { Self::context(channel) };
        shared.handler.suspend(&StoppedView {
            ops,
            _callback: PhantomData,
        });
    }

    /// `EvtVmbChannelStarted`.
    unsafe extern "C" fn started(channel: VMBCHANNEL) {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let (shared, ops) = unsafe { Self::context(channel) };
        shared.handler.started(&OpenView::new(ops));
    }

    /// `EvtVmbChannelPostStarted`.
    unsafe extern "C" fn post_started(channel: VMBCHANNEL) {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let (shared, ops) = unsafe { Self::context(channel) };
        shared.handler.post_started(&PostStartedView {
            open: OpenView::new(ops),
        });
    }

    /// `EvtVmbChannelProcessPacket`.
    pub(crate) unsafe extern "C" fn process_packet(
        channel: VMBCHANNEL,
        packet: VMBPACKETCOMPLETION,
        buffer: PVOID,
        length: UINT32,
        flags: UINT32,
    ) {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let (shared, ops) = unsafe { Self::context(channel) };
        // SAFETY:
        // - `packet` is the delivery KMCL passed to this running callback (never NULL), and this
        //   is the only token made for it;
        // - `buffer` is readable for `length` bytes until the callback returns (KMCL's
        //   contract), or NULL;
        // - `flags` is KMCL's argument;
        // - `shared.kmcl` is the backend the channel was allocated through, and it stays valid
        //   until the packet is answered: a borrowed table outlives the slot, which outlives
        //   the channel, which KMCL does not clean up while a packet is outstanding (this
        //   assumes the slot is dropped, not leaked: see `ChannelSlot`'s "Do not leak a slot
        //   that borrows", a hole the types leave open);
        // - the token's lifetime is this call's.
        let token = unsafe { IncomingPacket::from_raw(shared.kmcl, packet, buffer, length, flags) };
        shared.handler.process_packet(&OpenView::new(ops), token);
    }

    /// `EvtVmbChannelProcessingComplete`.
    unsafe extern "C" fn processing_complete(channel: VMBCHANNEL, packets: UINT32) {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let (shared, ops) = unsafe { Self::context(channel) };
        shared
            .handler
            .processing_complete(&OpenView::new(ops), packets);
    }

    /// `EvtChannelPnpFailure`.
    pub(crate) unsafe extern "C" fn pnp_failure(channel: VMBCHANNEL, status: NTSTATUS) {
        // SAFETY: KMCL calls this for the live channel it was registered on.
        let (shared, _) = unsafe { Self::context(channel) };
        shared.handler.pnp_failure(NtStatus::from_raw(status));
    }
}

/// The status an opened callback returns to refuse the open: a failing status as given, any
/// other as `STATUS_UNSUCCESSFUL` (a success would accept the open).
fn refusal(status: NtStatus) -> NTSTATUS {
    if status.is_success() {
        NtStatus::UNSUCCESSFUL.to_raw()
    } else {
        status.to_raw()
    }
}
