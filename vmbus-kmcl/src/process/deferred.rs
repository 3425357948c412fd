//! Handle values kept with their process, for conversion on another thread.

use core::fmt;

use vmbus_kmcl_sys::HANDLE;

use super::{ProcessRef, UserHandle};
use crate::error::Result;
use crate::handle::KernelHandle;

/// A user-mode handle value kept together with a reference on the process that sent it, for a
/// driver that pends the request and converts on a worker thread.
///
/// Made only from a request context ([`Request::defer_vmbus_handle`](super::Request::defer_vmbus_handle),
/// [`RequestContext::defer`](super::RequestContext::defer)); converted by attaching to exactly
/// that process ([`DeferredHandle::to_kernel_handle`]). `Send`: it is plain data plus a
/// process reference.
///
/// # Invariants
///
/// `raw` was received from `process` and can be a user handle (neither NULL nor a kernel-handle
/// value).
pub struct DeferredHandle {
    process: ProcessRef,
    raw: usize,
}

impl DeferredHandle {
    /// Keeps a value checked by the caller with the process it came from.
    pub(super) fn new(process: ProcessRef, raw: HANDLE) -> Self {
        // INVARIANT: the caller (a request context) received `raw` from `process` and refused
        // values that are never user handles.
        Self {
            process,
            raw: raw.addr(),
        }
    }

    /// The process the value came from.
    pub fn process(&self) -> &ProcessRef {
        &self.process
    }

    /// The handle value (a number, never dereferenced).
    pub fn as_raw(&self) -> HANDLE {
        core::ptr::without_provenance_mut(self.raw)
    }

    linked_only! {
        /// Attaches to the process the value came from and converts it there
        /// (`KeStackAttachProcess`, `VmbConvertVmbusHandleToKernelHandle`, `KeUnstackDetachProcess`).
        /// `PASSIVE_LEVEL`, any thread. The process reference is released afterwards.
        ///
        /// # Errors
        ///
        /// Those of [`ProcessRef::attach`] and of [`UserHandle::to_kernel_handle`] (for instance
        /// `STATUS_INVALID_HANDLE` when the process closed the handle in the meantime).
        ///
        /// # Panics
        ///
        /// As [`ProcessRef::attach`].
        #[doc(alias = "VmbConvertVmbusHandleToKernelHandle")]
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
    ///
    /// # Panics
    ///
    /// As [`ProcessRef::attach`].
    #[doc(alias = "VmbConvertVmbusHandleToKernelHandle")]
    pub fn to_kernel_handle_with<K: crate::dispatch::KmclServer + Sync + ?Sized>(
        self,
        kmcl: &K,
    ) -> Result<KernelHandle> {
        let raw = self.raw;
        self.process.attach(|cx| {
            let raw = core::ptr::without_provenance_mut(raw);
            // SAFETY: `raw` was received from `self.process` (type invariant), the process this
            // context was made for by attaching to it.
            unsafe { UserHandle::assume_received(raw, cx) }?.to_kernel_handle_with(kmcl)
        })?
    }
}

impl fmt::Debug for DeferredHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredHandle")
            .field("process", &self.process)
            .field("raw", &self.as_raw())
            .finish()
    }
}
