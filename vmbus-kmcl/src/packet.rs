//! Incoming packets: the token KMCL's process-packet callback hands a driver.
//!
//! Stand-in on the channel branch: the complete module (external data, typed readers,
//! deferral, detached tokens) comes with the incoming-packet work, which replaces this file
//! with the same constructor and the same methods used here.
//!
//! A token must be answered exactly once; each answering method takes it by value. Dropping
//! it unanswered fails the packet (`VmbChannelPacketFail`), which the sender and the sim see.

use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use vmbus_kmcl_sys::{PVOID, VMBPACKETCOMPLETION, VMBPACKETCOMPLETION__};

use crate::dispatch::Kmcl;
use crate::error::{Error, Result};

/// Invariant in `'cb`, and neither `Send` nor `Sync`.
type CallbackLifetime<'cb> = PhantomData<(*mut (), fn(&'cb ()) -> &'cb ())>;

/// An incoming packet while KMCL's process-packet callback runs.
///
/// # Invariants
///
/// `packet` is an unanswered delivery of `backend`'s KMCL; `data` is readable for `len` bytes
/// for `'cb`, the callback's lifetime.
#[must_use = "an incoming packet must be completed or failed; dropping it fails it"]
pub struct IncomingPacket<'cb, B: Kmcl> {
    backend: B,
    packet: NonNull<VMBPACKETCOMPLETION__>,
    data: NonNull<u8>,
    len: u32,
    _callback: CallbackLifetime<'cb>,
}

impl<'cb, B: Kmcl> IncomingPacket<'cb, B> {
    /// The token of one delivery, made by the process-packet trampoline.
    ///
    /// # Safety
    ///
    /// `packet` is the non-NULL delivery KMCL passed to the running callback, with no other
    /// token; `buffer` is readable for `length` bytes until the callback returns, or NULL;
    /// `backend` delivered the packet and stays valid until it is answered; `'cb` ends no later
    /// than the callback.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(
        backend: B,
        packet: VMBPACKETCOMPLETION,
        buffer: PVOID,
        length: u32,
        _flags: u32,
    ) -> Self {
        // SAFETY: KMCL passes a non-NULL packet (caller).
        let packet = unsafe { NonNull::new_unchecked(packet) };
        let (data, len) = match NonNull::new(buffer.cast::<u8>()) {
            Some(data) => (data, length),
            None => (NonNull::dangling(), 0),
        };
        // INVARIANT: a fresh delivery (caller).
        Self {
            backend,
            packet,
            data,
            len,
            _callback: PhantomData,
        }
    }

    /// The payload, exactly the bytes KMCL delivered.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // CAST: u32 to usize, lossless on 64-bit targets.
        let len = self.len as usize;
        // SAFETY: readable for `len` bytes while the callback runs (invariant).
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), len) }
    }

    /// Completes the packet with `response` (`VmbChannelPacketComplete`).
    ///
    /// # Errors
    ///
    /// [`Error::LengthTooLarge`] past `u32::MAX` bytes; the packet is failed then.
    pub fn complete(self, response: &[u8]) -> Result<()> {
        let Ok(len) = u32::try_from(response.len()) else {
            self.fail();
            return Err(Error::LengthTooLarge);
        };
        let this = ManuallyDrop::new(self);
        // SAFETY: an unanswered delivery (invariant), answered once: `Drop` does not run.
        unsafe {
            this.backend.channel_packet_complete(
                this.packet.as_ptr(),
                response.as_ptr().cast_mut().cast(),
                len,
            )
        };
        Ok(())
    }

    /// Completes the packet without a response.
    pub fn complete_empty(self) {
        let this = ManuallyDrop::new(self);
        // SAFETY: an unanswered delivery (invariant), answered once: `Drop` does not run.
        unsafe {
            this.backend
                .channel_packet_complete(this.packet.as_ptr(), core::ptr::null_mut(), 0)
        };
    }

    /// Fails the packet (`VmbChannelPacketFail`).
    pub fn fail(self) {
        let this = ManuallyDrop::new(self);
        // SAFETY: an unanswered delivery (invariant), answered once: `Drop` does not run.
        unsafe { this.backend.channel_packet_fail(this.packet.as_ptr()) };
    }
}

impl<B: Kmcl> Drop for IncomingPacket<'_, B> {
    /// Fails the unanswered packet.
    fn drop(&mut self) {
        // SAFETY: an unanswered delivery (invariant), answered once, as the token dies.
        unsafe { self.backend.channel_packet_fail(self.packet.as_ptr()) };
    }
}

impl<B: Kmcl> core::fmt::Debug for IncomingPacket<'_, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IncomingPacket")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
