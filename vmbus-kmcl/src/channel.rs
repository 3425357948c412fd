//! Server channels being initialised, and where the converted VMBus handle goes.
//!
//! A VSP allocates a server channel (`VmbChannelAllocate` with `IsServer` TRUE), configures it
//! with the init setters, and enables it. One of those setters,
//! `VmbServerChannelInitSetVmbusHandle`, names the VM that will see the offer, by the kernel
//! handle converted from the worker process's VMBus handle. This module holds the part of that
//! flow the seed needs; the full typestate channel builder extends it.

use core::marker::PhantomData;
use core::ptr::NonNull;

use vmbus_kmcl_sys::{DEVICE_OBJECT, VMBCHANNEL};

use crate::error::Error;
use crate::error::Result;
use crate::handle::KernelHandle;
use crate::status::{to_result, NtStatus};

/// A borrowed WDM device object: the parent of the channels a driver allocates.
///
/// # Invariants
///
/// Points to a device object that stays valid for `'dev`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceRef<'dev> {
    device: NonNull<DEVICE_OBJECT>,
    _lifetime: PhantomData<&'dev DEVICE_OBJECT>,
}

impl DeviceRef<'_> {
    /// Borrows a device object.
    ///
    /// # Safety
    ///
    /// `device` must point to a device object that stays valid for the chosen lifetime (for a
    /// driver, until the device is deleted).
    pub unsafe fn from_raw(device: NonNull<DEVICE_OBJECT>) -> Self {
        // INVARIANT: the caller guarantees validity for the lifetime.
        Self {
            device,
            _lifetime: PhantomData,
        }
    }

    /// The device object pointer.
    pub fn as_raw(&self) -> *mut DEVICE_OBJECT {
        self.device.as_ptr()
    }
}

/// A server channel in its initialisation phase (allocated, not yet enabled).
///
/// `'dev` is the lifetime of the parent device object, which the channel must not outlive.
///
/// The channel owns the kernel handle given to [`set_vmbus_handle`](Self::set_vmbus_handle):
/// a device extension can hold the channel without also holding (and borrowing from) the
/// handle, and since the handle moved in, no code can close it while the channel lives.
///
/// Dropping it frees the channel (`VmbChannelCleanup`; a channel that was never enabled is
/// disabled) and *then* closes the kernel handle (`ZwClose`), so the handle outlives every use
/// KMCL can make of it. PASSIVE_LEVEL (see [`crate::irql`]).
///
/// # Invariants
///
/// Owns a server channel allocated by `VmbChannelAllocate` for a device that outlives it; the
/// channel has not been enabled and is cleaned up exactly once, on drop, before `vmbus_handle`
/// is closed.
#[derive(Debug)]
pub struct ServerChannelInit<'dev> {
    channel: NonNull<vmbus_kmcl_sys::VMBCHANNEL__>,
    /// Dropped after `Drop::drop` has cleaned up the channel (fields drop after the body).
    vmbus_handle: Option<KernelHandle>,
    _device: PhantomData<DeviceRef<'dev>>,
}

impl<'dev> ServerChannelInit<'dev> {
    /// Allocates a server channel (`VmbChannelAllocate` with `IsServer` TRUE) for `parent`.
    /// PASSIVE_LEVEL (checked).
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`] above PASSIVE_LEVEL; the failing status of `VmbChannelAllocate`.
    #[doc(alias = "VmbChannelAllocate")]
    pub fn allocate(parent: DeviceRef<'dev>) -> Result<Self> {
        crate::irql::require_at_most(crate::irql::PASSIVE_LEVEL)?;
        let mut channel: VMBCHANNEL = core::ptr::null_mut();
        let status =
            // SAFETY: `parent` is a valid device object (its invariant), `channel` a valid place
            // for the result, and the IRQL is PASSIVE_LEVEL (checked above).
            unsafe { vmbus_kmcl_sys::VmbChannelAllocate(parent.as_raw(), 1, &mut channel) };
        if status != NtStatus::SUCCESS.to_raw() {
            return Err(Error::from_failed_call(status));
        }
        // SAFETY: with STATUS_SUCCESS, KMCL has stored a channel object, never NULL (its
        // documented contract).
        let channel = unsafe { NonNull::new_unchecked(channel) };
        // INVARIANT: a fresh, disabled server channel that this value owns, for `parent`, which
        // outlives it (`'dev`).
        Ok(Self {
            channel,
            vmbus_handle: None,
            _device: PhantomData,
        })
    }

    /// The channel handle, for the init setters this type does not wrap yet.
    ///
    /// The channel stays owned by `self`: code using the raw handle must not enable, disable or
    /// clean it up (`Drop` cleans up a channel it knows to be disabled).
    pub fn as_raw(&self) -> VMBCHANNEL {
        self.channel.as_ptr()
    }

    /// Binds the channel to the VM whose VMBus `handle` names
    /// (`VmbServerChannelInitSetVmbusHandle`) and takes ownership of the handle. Any thread
    /// context.
    ///
    /// KMCL does not document whether it takes its own reference, so the channel keeps the
    /// handle open until after its `VmbChannelCleanup`. When the call fails, KMCL did not take
    /// the handle, and it is closed at once. Set the handle once: a second successful call
    /// closes the handle of the first, and KMCL does not document whether it still uses a
    /// replaced handle.
    ///
    /// # Errors
    ///
    /// The failing status of `VmbServerChannelInitSetVmbusHandle` (e.g.
    /// `STATUS_INVALID_PARAMETER_2` for a handle that names no VMBus).
    #[doc(alias = "VmbServerChannelInitSetVmbusHandle")]
    #[inline]
    pub fn set_vmbus_handle(&mut self, handle: KernelHandle) -> Result<()> {
        // SAFETY: the channel is a live server channel in its init phase (type invariant) and the
        // handle is an open kernel handle that the channel keeps open until after its cleanup
        // (stored below on success).
        to_result(unsafe {
            vmbus_kmcl_sys::VmbServerChannelInitSetVmbusHandle(self.as_raw(), handle.as_raw())
        })?;
        self.vmbus_handle = Some(handle);
        Ok(())
    }

    /// The kernel handle the channel was bound to, if [`set_vmbus_handle`](Self::set_vmbus_handle)
    /// succeeded; it stays owned by the channel.
    pub fn vmbus_handle(&self) -> Option<&KernelHandle> {
        self.vmbus_handle.as_ref()
    }
}

impl Drop for ServerChannelInit<'_> {
    /// Frees the channel (`VmbChannelCleanup`), then closes its kernel handle (the field drops
    /// after this body). PASSIVE_LEVEL (a debug assertion checks it).
    #[doc(alias = "VmbChannelCleanup")]
    fn drop(&mut self) {
        debug_assert!(
            crate::irql::current() == crate::irql::PASSIVE_LEVEL,
            "vmbus-kmcl: a channel cleaned up above PASSIVE_LEVEL"
        );
        // SAFETY: the channel was allocated and never enabled, so it is disabled, and this is
        // its single cleanup (type invariant).
        unsafe { vmbus_kmcl_sys::VmbChannelCleanup(self.as_raw()) };
    }
}
