//! The calls on a live channel that the enabled channel and the callback views share.

use core::marker::PhantomData;
use core::ptr::{null_mut, NonNull};

use vmbus_kmcl_sys::{
    GUID, LARGE_INTEGER, PVOID, UINT64, VMBCHANNEL, VMBCHANNEL__,
    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
};

use super::{MmioSpace, Sent};
use crate::dispatch::Kmcl;
use crate::error::{Error, Result};
use crate::guid::Guid;
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

    pub(crate) fn try_send(&self, message: &[u8]) -> Result<Sent> {
        let length = u32::try_from(message.len()).map_err(|_| Error::LengthTooLarge)?;
        let mut zero = LARGE_INTEGER { QuadPart: 0 };
        // SAFETY:
        // - a live channel of this backend (invariant);
        // - `message` is readable for `length` bytes, which KMCL copies before returning (the
        //   request does not wait for a completion);
        // - no response buffer, no external data; the timeout is a readable 0, so the call
        //   never waits and is allowed up to DISPATCH_LEVEL, and in the root.
        let status = unsafe {
            self.kmcl.channel_send_synchronous_request(
                self.raw(),
                message.as_ptr().cast_mut().cast(),
                length,
                null_mut(),
                0,
                null_mut(),
                null_mut(),
                &mut zero,
            )
        };
        match NtStatus::from_raw(status) {
            NtStatus::SUCCESS => Ok(Sent::Queued),
            NtStatus::BUFFER_OVERFLOW => Ok(Sent::RingFull),
            _ => Err(Error::from_failed_call(status)),
        }
    }

    /// `VmbChannelSendSynchronousRequest` waiting for the completion.
    ///
    /// # Safety
    ///
    /// A client channel, outside its started callback; the caller runs at PASSIVE_LEVEL.
    pub(crate) unsafe fn request<'r>(
        &self,
        request: &[u8],
        response: &'r mut [u8],
        timeout: Option<core::time::Duration>,
    ) -> Result<&'r [u8]> {
        let length = u32::try_from(request.len()).map_err(|_| Error::LengthTooLarge)?;
        let capacity = u32::try_from(response.len()).map_err(|_| Error::LengthTooLarge)?;
        if capacity % 8 != 0 {
            return Err(Error::LengthNotMultipleOf8 { length: capacity });
        }
        let mut timeout = timeout.map(|timeout| {
            // Relative timeouts are negative counts of 100 ns.
            let ticks = i64::try_from(timeout.as_nanos() / 100).unwrap_or(i64::MAX);
            LARGE_INTEGER { QuadPart: -ticks }
        });
        let timeout_ptr = match &mut timeout {
            Some(timeout) => timeout as *mut LARGE_INTEGER,
            None => null_mut(),
        };
        let mut filled = capacity;
        let response_ptr: PVOID = response.as_mut_ptr().cast();
        // SAFETY:
        // - a live client channel of this backend (invariant, caller);
        // - `request` is readable for `length` bytes; `response` is writable for `filled`
        //   bytes, a multiple of 8 (checked), and `filled` is read and written;
        // - `timeout_ptr` is NULL or a readable timeout;
        // - PASSIVE_LEVEL outside the started callback (caller).
        let status = unsafe {
            self.kmcl.channel_send_synchronous_request(
                self.raw(),
                request.as_ptr().cast_mut().cast(),
                length,
                null_mut(),
                VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                response_ptr,
                &mut filled,
                timeout_ptr,
            )
        };
        if status != NtStatus::SUCCESS.to_raw() {
            return Err(Error::from_failed_call(status));
        }
        // KMCL reports the bytes it wrote; never trust it past the buffer.
        // CAST: u32 to usize, lossless on the 64-bit targets this crate builds for.
        let filled = (filled as usize).min(response.len());
        Ok(&response[..filled])
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
