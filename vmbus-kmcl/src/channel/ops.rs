//! The calls on a live channel that the enabled channel and the callback views share.

use core::marker::PhantomData;
use core::ptr::NonNull;

use vmbus_kmcl_sys::{
    GUID, UINT64, VMBCHANNEL, VMBCHANNEL__, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
};

use super::{MmioSpace, Sent};
use crate::dispatch::Kmcl;
use crate::error::{Error, Result};
use crate::guid::Guid;
use crate::send::Outcome;
use crate::status::NtStatus;

/// A live channel and the backend it was allocated through.
///
/// # Invariants
///
/// `channel` was allocated through `kmcl` with role `R` and stays live (not cleaned up) for as
/// long as this value exists.
pub(crate) struct ChannelOps<R, K> {
    kmcl: K,
    channel: NonNull<VMBCHANNEL__>,
    _role: PhantomData<R>,
}

impl<R, K: Kmcl + Copy> ChannelOps<R, K> {
    /// # Safety
    ///
    /// `channel` was allocated through `kmcl` with role `R` and stays live while the value
    /// exists.
    #[inline(always)]
    pub(crate) unsafe fn new(kmcl: K, channel: NonNull<VMBCHANNEL__>) -> Self {
        // INVARIANT: the caller's guarantee.
        Self {
            kmcl,
            channel,
            _role: PhantomData,
        }
    }

    #[inline(always)]
    pub(crate) fn raw(&self) -> VMBCHANNEL {
        self.channel.as_ptr()
    }

    #[inline(always)]
    pub(crate) fn non_null(&self) -> NonNull<VMBCHANNEL__> {
        self.channel
    }

    /// The backend the channel was allocated through.
    #[inline(always)]
    pub(crate) fn kmcl(&self) -> K {
        self.kmcl
    }

    pub(crate) fn interface_instance(&self) -> Guid {
        let mut guid = GUID::default();
        // SAFETY: a live channel of this backend (invariant); `guid` is writable.
        unsafe {
            self.kmcl
                .channel_get_interface_instance(self.raw(), &mut guid)
        };
        Guid::from_raw(guid)
    }

    /// `VmbChannelGetMmioSpace`.
    ///
    /// # Safety
    ///
    /// The channel is open (a callback running between opened and closed, or the open flag
    /// set).
    pub(crate) unsafe fn mmio_space(&self) -> MmioSpace {
        let mut address: UINT64 = 0;
        let mut size: UINT64 = 0;
        // SAFETY: a live channel of this backend (invariant), open (caller); both outputs
        // are writable.
        unsafe {
            self.kmcl
                .channel_get_mmio_space(self.raw(), &mut address, &mut size)
        };
        MmioSpace { address, size }
    }

    pub(crate) fn set_transaction_quota(&self, quota: u32) -> Result<()> {
        if quota == 0 {
            return Err(Error::BelowMinimum { minimum: 1 });
        }
        // SAFETY: a live channel of this backend (invariant); the quota is above 0.
        unsafe { self.kmcl.channel_set_transaction_quota(self.raw(), quota) };
        Ok(())
    }

    pub(crate) fn set_incoming_processing_at_passive(&self, passive: bool) {
        // SAFETY: a live channel of this backend (invariant).
        unsafe {
            self.kmcl
                .channel_set_incoming_processing_at_passive(self.raw(), u8::from(passive))
        };
    }

    /// `VmbChannelSetInterruptLatency`.
    ///
    /// # Safety
    ///
    /// The channel is open: a callback running between opened and closed (both included).
    pub(crate) unsafe fn set_interrupt_latency(&self, latency: u16) -> Result<u16> {
        let mut original = 0;
        // SAFETY: a live channel of this backend (invariant), open (caller); `original` is
        // writable.
        let status = unsafe {
            self.kmcl
                .channel_set_interrupt_latency(self.raw(), latency, &mut original)
        };
        if status != NtStatus::SUCCESS.to_raw() {
            return Err(Error::from_failed_call(status));
        }
        Ok(original)
    }

    /// [`Channel::post_nowait`](crate::channel::Channel::post_nowait), as a [`Sent`].
    pub(crate) fn try_send(&self, message: &[u8]) -> Result<Sent> {
        // SAFETY: a live channel of this backend (invariant); the call does not wait.
        let outcome =
            unsafe { crate::send::request(self, message, 0, None, crate::send::Timeout::NoQueue) }?;
        match outcome {
            Outcome::Completed(_) => Ok(Sent::Queued),
            Outcome::NotQueued => Ok(Sent::RingFull),
            Outcome::TimedOut => Err(Error::Status(NtStatus::CANCELLED)),
            Outcome::DeviceRemoved => Err(Error::Status(NtStatus::DEVICE_REMOVED)),
        }
    }

    /// [`Channel::send_request`](crate::channel::Channel::send_request) with the outcomes
    /// other than a completion as errors; `None` waits as long as it takes, a zero duration
    /// does not queue.
    ///
    /// # Safety
    ///
    /// A client channel, outside its started callback.
    pub(crate) unsafe fn request<'r>(
        &self,
        request: &[u8],
        response: &'r mut [u8],
        timeout: Option<core::time::Duration>,
    ) -> Result<&'r [u8]> {
        let timeout = match timeout {
            None => crate::send::Timeout::Infinite,
            Some(core::time::Duration::ZERO) => crate::send::Timeout::NoQueue,
            Some(duration) => crate::send::Timeout::Relative(duration),
        };
        let flags = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
        // SAFETY: a live client channel outside its started callback (caller).
        let outcome =
            unsafe { crate::send::request(self, request, flags, Some(&mut *response), timeout) }?;
        let status = match outcome {
            Outcome::Completed(filled) => return Ok(&response[..filled]),
            Outcome::NotQueued => NtStatus::BUFFER_OVERFLOW,
            Outcome::TimedOut => NtStatus::CANCELLED,
            Outcome::DeviceRemoved => NtStatus::DEVICE_REMOVED,
        };
        Err(Error::Status(status))
    }

    /// `VmbChannelPause`.
    ///
    /// # Safety
    ///
    /// The channel is enabled and the caller is not one of its state callbacks.
    pub(crate) unsafe fn pause(&self) {
        // SAFETY: a live channel of this backend (invariant), enabled and outside its state
        // callbacks (caller).
        unsafe { self.kmcl.channel_pause(self.raw()) };
    }

    /// `VmbChannelStart`.
    ///
    /// # Safety
    ///
    /// The channel is enabled and the caller is not one of its state callbacks.
    pub(crate) unsafe fn start(&self) {
        // SAFETY: a live channel of this backend (invariant), enabled and outside its state
        // callbacks (caller).
        unsafe { self.kmcl.channel_start(self.raw()) };
    }
}
