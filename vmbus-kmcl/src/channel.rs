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
/// `'h` is the lifetime of the kernel handle given to
/// [`set_vmbus_handle`](Self::set_vmbus_handle): the channel borrows it, so the handle stays
/// open as long as the channel may use it.
///
/// Dropping it frees the channel (`VmbChannelCleanup`; a channel that was never enabled is
/// disabled). PASSIVE_LEVEL.
///
/// # Invariants
///
/// Owns a server channel allocated by `VmbChannelAllocate` for a device that outlives it; the
/// channel has not been enabled and is cleaned up exactly once, on drop.
#[derive(Debug)]
pub struct ServerChannelInit<'dev, 'h> {
    channel: NonNull<vmbus_kmcl_sys::VMBCHANNEL__>,
    _device: PhantomData<DeviceRef<'dev>>,
    _handle: PhantomData<&'h KernelHandle>,
}

impl<'dev, 'h> ServerChannelInit<'dev, 'h> {
    /// Allocates a server channel (`VmbChannelAllocate` with `IsServer` TRUE) for `parent`.
    /// PASSIVE_LEVEL.
    ///
    /// # Errors
    ///
    /// The failing status of `VmbChannelAllocate`.
    #[doc(alias = "VmbChannelAllocate")]
    pub fn allocate(parent: DeviceRef<'dev>) -> Result<Self> {
        let mut channel: VMBCHANNEL = core::ptr::null_mut();
        let status =
            // SAFETY: `parent` is a valid device object (its invariant) and `channel` a valid place
            // for the result.
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
            _device: PhantomData,
            _handle: PhantomData,
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
    /// (`VmbServerChannelInitSetVmbusHandle`). Any thread context.
    ///
    /// The handle stays owned by the caller, who closes it (by dropping it) after the channel is
    /// gone: KMCL does not document whether it takes its own reference, so the channel borrows
    /// the handle for its whole life.
    ///
    /// # Errors
    ///
    /// The failing status of `VmbServerChannelInitSetVmbusHandle` (e.g.
    /// `STATUS_INVALID_PARAMETER_2` for a handle that names no VMBus).
    #[doc(alias = "VmbServerChannelInitSetVmbusHandle")]
    #[inline]
    pub fn set_vmbus_handle(&mut self, handle: &'h KernelHandle) -> Result<()> {
        // SAFETY: the channel is a live server channel in its init phase (type invariant) and the
        // handle is an open kernel handle that outlives the channel (`'h`).
        to_result(unsafe {
            vmbus_kmcl_sys::VmbServerChannelInitSetVmbusHandle(self.as_raw(), handle.as_raw())
        })
    }
}

impl Drop for ServerChannelInit<'_, '_> {
    /// Frees the channel (`VmbChannelCleanup`). PASSIVE_LEVEL.
    #[doc(alias = "VmbChannelCleanup")]
    fn drop(&mut self) {
        // SAFETY: the channel was allocated and never enabled, so it is disabled, and this is
        // its single cleanup (type invariant).
        unsafe { vmbus_kmcl_sys::VmbChannelCleanup(self.as_raw()) };
    }
}
