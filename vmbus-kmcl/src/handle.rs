//! Owned kernel handles.
//!
//! A kernel handle lives in the system-wide kernel handle table, so it is valid in any process
//! context and on any thread, and only kernel-mode code can use or close it. Whoever receives
//! one (for example from `VmbConvertVmbusHandleToKernelHandle`) must close it exactly once with
//! `ZwClose`; [`KernelHandle`] does that on drop.

use core::ffi::c_void;
use core::fmt;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use vmbus_kmcl_sys::{nt, HANDLE};

use crate::error::Error;
use crate::irql;
use crate::status::to_result;

/// An open kernel handle, closed with `ZwClose` when dropped.
///
/// One pointer wide, with a niche: `Option<KernelHandle>` is one pointer too.
///
/// # Invariants
///
/// The wrapped value is an open handle of the kernel handle table that this object owns: nobody
/// else closes it, and it is closed exactly once, by `drop` or [`KernelHandle::close`], unless
/// [`KernelHandle::into_raw`] hands the ownership back.
///
/// # IRQL
///
/// Dropping or closing calls `ZwClose`, which requires `PASSIVE_LEVEL`. [`KernelHandle::close`]
/// checks the level and hands the handle back above it; `Drop` cannot, so it only carries a debug
/// assertion, and the rule is the driver's: drop kernel handles at `PASSIVE_LEVEL` (see the
/// [`irql`](crate::irql) module for why).
#[repr(transparent)]
pub struct KernelHandle(NonNull<c_void>);

// SAFETY: a kernel handle is not tied to a thread or a process: the kernel table is global, and
// `ZwClose` may close it from any thread. The value is never dereferenced by this type.
unsafe impl Send for KernelHandle {}
// SAFETY: `&KernelHandle` only gives out the raw value, and using a kernel handle from several
// threads at once is what the kernel handle table supports.
unsafe impl Sync for KernelHandle {}

impl KernelHandle {
    /// Takes ownership of a raw kernel handle; `None` if it is NULL. Any IRQL.
    ///
    /// # Safety
    ///
    /// `handle` must be an open kernel handle (in the kernel handle table, not a user-mode
    /// handle), and the caller must own it: nothing else may close it, and the caller must not
    /// use it after the returned value closed it.
    pub unsafe fn from_raw(handle: HANDLE) -> Option<Self> {
        // INVARIANT: the caller hands over an open kernel handle it owns.
        NonNull::new(handle).map(Self)
    }

    /// Takes ownership of a raw kernel handle known not to be NULL.
    ///
    /// # Safety
    ///
    /// As for [`KernelHandle::from_raw`].
    #[inline]
    pub unsafe fn from_raw_nonnull(handle: NonNull<c_void>) -> Self {
        // INVARIANT: the caller hands over an open kernel handle it owns.
        Self(handle)
    }

    /// The raw handle, still owned by `self`.
    #[inline]
    pub fn as_raw(&self) -> HANDLE {
        self.0.as_ptr()
    }

    /// Gives up ownership: the caller must close the returned handle.
    #[inline]
    #[must_use = "the handle leaks unless it is closed"]
    pub fn into_raw(self) -> HANDLE {
        ManuallyDrop::new(self).0.as_ptr()
    }

    /// Closes the handle now and reports `ZwClose`'s status (dropping closes it too but ignores
    /// the status). `PASSIVE_LEVEL` (checked).
    ///
    /// # Errors
    ///
    /// - `(Error::IrqlTooHigh, Some(self))` above `PASSIVE_LEVEL`: nothing was called, and the
    ///   still-open handle comes back to be closed later;
    /// - `(Error::Status(status), None)` with the failing status of `ZwClose` (for instance
    ///   `STATUS_HANDLE_NOT_CLOSABLE`): the handle is given up.
    #[doc(alias = "ZwClose")]
    pub fn close(self) -> core::result::Result<(), (Error, Option<KernelHandle>)> {
        if let Err(error) = irql::require_at_most(irql::PASSIVE_LEVEL) {
            return Err((error, Some(self)));
        }
        let handle = self.into_raw();
        // SAFETY:
        // - `handle` is an open kernel handle that this call now owns (type invariant, ownership
        //   released by `into_raw`), and it is closed exactly once, here;
        // - the IRQL is PASSIVE_LEVEL (checked above).
        to_result(unsafe { nt::ZwClose(handle) }).map_err(|error| (error, None))
    }
}

impl Drop for KernelHandle {
    /// Closes the handle (`ZwClose`). PASSIVE_LEVEL: the type is `Send`, but whichever thread
    /// drops it must run at PASSIVE_LEVEL (a debug assertion checks it).
    #[inline]
    fn drop(&mut self) {
        debug_assert!(
            irql::current() == irql::PASSIVE_LEVEL,
            "vmbus-kmcl: a KernelHandle dropped above PASSIVE_LEVEL (ZwClose is PASSIVE only)"
        );
        // SAFETY:
        // - by the type invariant the handle is open and owned by `self`, which is being
        //   destroyed, so this is the single close;
        // - dropping happens at PASSIVE_LEVEL, as documented on the type (asserted in debug
        //   builds).
        let _status = unsafe { nt::ZwClose(self.0.as_ptr()) };
    }
}

impl fmt::Debug for KernelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KernelHandle").field(&self.0).finish()
    }
}
