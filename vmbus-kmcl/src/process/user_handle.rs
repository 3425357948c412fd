//! User-mode handles bound to the context they were received in, and their conversion.

use core::fmt;
use core::ptr::NonNull;

use vmbus_kmcl_sys::nt::PASSIVE_LEVEL;
use vmbus_kmcl_sys::HANDLE;

use super::{ProcessContext, RequestContext};
use crate::dispatch::KmclServer;
use crate::error::{Error, Result};
use crate::handle::KernelHandle;
use crate::irql;
use crate::status::NtStatus;

/// A user-mode handle received from the process of the context `'proc`, usable only in that
/// scope.
///
/// Two pointers wide (the value and its context). `!Send`, `!Sync`, and bound to its scope.
///
/// # Invariants
///
/// `raw` is neither NULL nor has the kernel-handle (sign) bit set, and was received from the
/// process `cx` records (for [`UserHandle::new`], because a [`RequestContext`] is made only for
/// the requestor's process; for [`UserHandle::assume_received`], by the caller's promise).
/// Whether the thread still runs in that process is checked by each conversion; whether the value
/// is open and names a VMBus device is for KMCL to check.
pub struct UserHandle<'proc> {
    raw: HANDLE,
    cx: &'proc ProcessContext<'proc>,
}

/// `Ok` for a value that can be a user-mode handle: not NULL, sign (kernel-handle) bit clear.
/// One compare: `(LONG_PTR)value <= 0` covers NULL, kernel handles and the pseudo-handles.
#[inline]
pub(super) fn refuse_non_user(raw: HANDLE) -> Result<()> {
    // CAST: the sign of the value as a pointer-sized integer is the kernel-handle bit.
    if (raw.addr() as isize) <= 0 {
        return Err(Error::NotAUserHandle);
    }
    Ok(())
}

/// Calls `VmbConvertVmbusHandleToKernelHandle` through `kmcl` and takes ownership of the result.
///
/// # Safety
///
/// The current thread runs at `PASSIVE_LEVEL` in the process that owns `raw`.
#[inline]
pub(super) unsafe fn convert_here<K: KmclServer + ?Sized>(
    kmcl: &K,
    raw: HANDLE,
) -> Result<KernelHandle> {
    let mut kernel: HANDLE = core::ptr::null_mut();
    let status =
        // SAFETY: `kernel` is a valid place for the result, and the caller guarantees the process
        // and the IRQL the conversion requires.
        unsafe { kmcl.convert_vmbus_handle_to_kernel_handle(raw, &mut kernel) };
    if status != NtStatus::SUCCESS.to_raw() {
        return Err(Error::from_failed_call(status));
    }
    // SAFETY: with STATUS_SUCCESS, KMCL has written an open kernel handle (its documented
    // contract), and kernel handle values are never NULL (their top bit is set).
    let kernel = unsafe { NonNull::new_unchecked(kernel) };
    // SAFETY: the handle is new, open, and owned by the caller, to whom it is handed over.
    Ok(unsafe { KernelHandle::from_raw_nonnull(kernel) })
}

impl<'proc> UserHandle<'proc> {
    /// Wraps a handle value the request of `cx` carried (typically in its IOCTL buffer).
    ///
    /// # Errors
    ///
    /// [`Error::NotAUserHandle`] for NULL and for values with the kernel-handle bit set.
    #[inline]
    pub fn new(raw: HANDLE, cx: &'proc RequestContext<'proc>) -> Result<Self> {
        refuse_non_user(raw)?;
        // INVARIANT: a request context is made only for the requestor's process, whose request
        // carried `raw`; the value was checked above.
        Ok(Self { raw, cx: &**cx })
    }

    /// Wraps a handle value in any context, for example one made by
    /// [`ProcessRef::attach`](super::ProcessRef::attach).
    ///
    /// # Safety
    ///
    /// `raw` must have been received from the process `cx` was made for (not merely be a value
    /// that some process sent). Prefer [`DeferredHandle`](super::DeferredHandle), which keeps
    /// a value together with its process.
    ///
    /// # Errors
    ///
    /// [`Error::NotAUserHandle`] for NULL and for values with the kernel-handle bit set.
    pub unsafe fn assume_received(raw: HANDLE, cx: &'proc ProcessContext<'proc>) -> Result<Self> {
        refuse_non_user(raw)?;
        // INVARIANT: the caller promises that `raw` comes from `cx`'s process; the value was
        // checked above.
        Ok(Self { raw, cx })
    }

    /// The raw handle value.
    pub fn as_raw(&self) -> HANDLE {
        self.raw
    }

    linked_only! {
        /// Converts the handle into a kernel handle to the same VMBus object, owned by the caller
        /// (`VmbConvertVmbusHandleToKernelHandle`). Usually followed by handing the kernel handle to
        /// a server channel ([`ChannelBuilder::set_vmbus_handle`](crate::channel::ChannelBuilder::set_vmbus_handle)).
        ///
        /// Before calling KMCL it reads the IRQL once and compares the current process with the
        /// context's, so the value is only ever looked up in the table of the process it came from.
        ///
        /// # Errors
        ///
        /// - [`Error::IrqlTooHigh`] above `PASSIVE_LEVEL`;
        /// - [`Error::WrongProcess`] when the thread does not run in the context's process (it was
        ///   moved, for instance by a stackful coroutine, or attached elsewhere);
        /// - [`Error::Status`] with the failing status of the conversion, e.g.
        ///   `STATUS_INVALID_HANDLE` when the value names no handle of this process;
        /// - [`Error::Unexpected`] for a success-class status other than `STATUS_SUCCESS`, which the
        ///   function does not document.
        ///
        /// Nothing is opened in any of these cases.
        #[doc(alias = "VmbConvertVmbusHandleToKernelHandle")]
        #[inline]
        pub fn to_kernel_handle(self) -> Result<KernelHandle> {
            self.to_kernel_handle_with(&crate::dispatch::Linked)
        }
    }

    /// [`to_kernel_handle`](Self::to_kernel_handle) through the given backend, for instance a
    /// queried [`ServerInterface`](crate::dispatch::ServerInterface) table.
    ///
    /// # Errors
    ///
    /// As for [`to_kernel_handle`](Self::to_kernel_handle).
    #[doc(alias = "VmbConvertVmbusHandleToKernelHandle")]
    #[inline]
    pub fn to_kernel_handle_with<K: KmclServer + ?Sized>(self, kmcl: &K) -> Result<KernelHandle> {
        irql::require_at_most(PASSIVE_LEVEL)?;
        self.cx.check_current()?;
        // SAFETY: the thread runs at PASSIVE_LEVEL in the context's process (both checked just
        // above), which by the type invariant is the process that owns `self.raw`.
        unsafe { convert_here(kmcl, self.raw) }
    }
}

impl fmt::Debug for UserHandle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserHandle")
            .field("raw", &self.raw)
            .field("process", &self.cx.process())
            .finish()
    }
}
