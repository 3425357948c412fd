//! The I/O request a dispatch routine received, and the process context it proves.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use vmbus_kmcl_sys::nt::{self, IRP, PASSIVE_LEVEL, PEPROCESS, PIRP};
use vmbus_kmcl_sys::HANDLE;

use super::user_handle::{convert_here, refuse_non_user};
use super::{current_process, DeferredHandle, ProcessContext, ProcessRef};
use crate::dispatch::KmclServer;
use crate::error::{Error, Result};
use crate::handle::KernelHandle;
use crate::irql;

/// The I/O request packet (IRP) a dispatch routine received, borrowed for `'irp`. Opaque: only
/// its address is used, by `IoGetRequestorProcess`.
///
/// This is the seed flow's entry point: [`Request::enter`] and [`Request::convert_vmbus_handle`]
/// check that the request is handled in the thread of the user-mode process that sent it.
///
/// # Invariants
///
/// Points to an IRP that stays valid for `'irp`.
#[derive(Clone, Copy)]
pub struct Request<'irp> {
    irp: NonNull<IRP>,
    _irp: PhantomData<&'irp IRP>,
}

impl<'irp> Request<'irp> {
    /// Borrows the IRP a dispatch routine received.
    ///
    /// # Safety
    ///
    /// `irp` must point to an IRP that stays valid for `'irp` (the driver has not completed it).
    /// Nothing else is assumed: where the request is handled is checked by the methods.
    pub unsafe fn from_raw(irp: NonNull<IRP>) -> Self {
        // INVARIANT: the caller guarantees validity for the lifetime.
        Self {
            irp,
            _irp: PhantomData,
        }
    }

    /// The IRP pointer.
    pub fn as_raw(&self) -> PIRP {
        self.irp.as_ptr()
    }

    /// The checks of the request path, in this order: the IRQL is `PASSIVE_LEVEL`; the
    /// requestor process is the current process; the thread is not attached to a process (its
    /// own process, `PsGetCurrentProcessId`, is the current one); the previous mode is
    /// `UserMode`. Returns the current process.
    ///
    /// The third check matters because `IoGetRequestorProcess` returns the process the
    /// request's thread is attached to *now*: on a dispatch thread left attached to another
    /// process (by a suspended coroutine), the first two checks alone would pass in that other
    /// process.
    #[inline]
    fn check(&self) -> Result<PEPROCESS> {
        irql::require_at_most(PASSIVE_LEVEL)?;
        // SAFETY: the IRP is valid for `'irp` (type invariant); `IoGetRequestorProcess` may be
        // called at IRQL <= DISPATCH_LEVEL and only reads it.
        let requestor = unsafe { nt::IoGetRequestorProcess(self.as_raw()) };
        // A request without a thread has no requestor (NULL): never the current process.
        if requestor.is_null() || requestor != current_process() {
            return Err(Error::RequestorMismatch);
        }
        // SAFETY: `requestor` is the current process, a live object; `PsGetProcessId` and
        // `PsGetCurrentProcessId` have no other preconditions.
        if unsafe { nt::PsGetProcessId(requestor) } != unsafe { nt::PsGetCurrentProcessId() } {
            return Err(Error::RequestorMismatch);
        }
        // SAFETY: `ExGetPreviousMode` has no preconditions at IRQL <= DISPATCH_LEVEL.
        if unsafe { nt::ExGetPreviousMode() } != nt::UserMode {
            return Err(Error::NotFromUserMode);
        }
        Ok(requestor)
    }

    /// Checks that the request is handled where its handle values mean what the sender meant,
    /// then runs `f` with a context for the requestor's process. `PASSIVE_LEVEL`.
    ///
    /// The checks run once, each a call or two and one compare: the IRQL is `PASSIVE_LEVEL`;
    /// `IoGetRequestorProcess` of the request equals `IoGetCurrentProcess` (true in a top-level
    /// dispatch routine running in the requestor's thread; false on a worker thread, in a work
    /// item or a DPC); the thread is not attached (`PsGetProcessId` of the current process
    /// equals `PsGetCurrentProcessId`, the id of the thread's own process); `ExGetPreviousMode`
    /// is `UserMode` (the values were chosen by user-mode code, not by a kernel-mode sender).
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`], [`Error::RequestorMismatch`] or [`Error::NotFromUserMode`];
    /// `f` does not run then.
    ///
    /// # Examples
    ///
    /// ```
    /// use vmbus_kmcl::process::{Request, UserHandle};
    /// use vmbus_kmcl::{KernelHandle, Result};
    /// use vmbus_kmcl_sys::HANDLE;
    ///
    /// fn convert(request: &Request<'_>, raw: HANDLE) -> Result<KernelHandle> {
    ///     request.enter(|cx| UserHandle::new(raw, cx)?.to_kernel_handle())?
    /// }
    /// # let _ = convert;
    /// ```
    #[doc(alias = "IoGetRequestorProcess")]
    #[doc(alias = "ExGetPreviousMode")]
    pub fn enter<R>(
        &self,
        f: impl for<'proc> FnOnce(&'proc mut RequestContext<'proc>) -> R,
    ) -> Result<R> {
        let process = self.check()?;
        let mut cx = RequestContext::for_current(process);
        Ok(f(&mut cx))
    }

    linked_only! {
        /// The seed flow in one call: the checks of [`Request::enter`], the refusal of values that
        /// are never user handles, and the conversion (`VmbConvertVmbusHandleToKernelHandle`) of
        /// `raw`, a value this request carried. `PASSIVE_LEVEL`.
        ///
        /// No driver code runs between the checks and the conversion, so the process compare of
        /// [`UserHandle::to_kernel_handle`](super::UserHandle::to_kernel_handle) is not repeated.
        ///
        /// # Errors
        ///
        /// Those of [`Request::enter`], [`Error::NotAUserHandle`], and those of the conversion
        /// ([`Error::Status`], [`Error::Unexpected`]).
        #[doc(alias = "VmbConvertVmbusHandleToKernelHandle")]
        #[inline]
        pub fn convert_vmbus_handle(&self, raw: HANDLE) -> Result<KernelHandle> {
            self.convert_vmbus_handle_with(&crate::dispatch::Linked, raw)
        }
    }

    /// [`convert_vmbus_handle`](Self::convert_vmbus_handle) through the given backend, for
    /// instance a queried [`ServerInterface`](crate::dispatch::ServerInterface) table.
    ///
    /// # Errors
    ///
    /// As for [`convert_vmbus_handle`](Self::convert_vmbus_handle).
    #[doc(alias = "VmbConvertVmbusHandleToKernelHandle")]
    #[inline]
    #[expect(
        clippy::not_unsafe_ptr_arg_deref,
        reason = "a HANDLE is a number: neither the wrapper nor KMCL dereferences it"
    )]
    pub fn convert_vmbus_handle_with<K: KmclServer + ?Sized>(
        &self,
        kmcl: &K,
        raw: HANDLE,
    ) -> Result<KernelHandle> {
        self.check()?;
        refuse_non_user(raw)?;
        // SAFETY: the thread runs at PASSIVE_LEVEL in the requestor's process, which sent `raw`
        // in this request (all checked just above, with no code in between).
        unsafe { convert_here(kmcl, raw) }
    }

    /// Keeps `raw`, a value this request carried, with a reference on the requestor's process,
    /// for a conversion on another thread later ([`DeferredHandle`]). `PASSIVE_LEVEL`.
    ///
    /// # Errors
    ///
    /// Those of [`Request::enter`] and [`Error::NotAUserHandle`].
    pub fn defer_vmbus_handle(&self, raw: HANDLE) -> Result<DeferredHandle> {
        self.enter(|cx| cx.defer(raw))?
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Request").field(&self.irp).finish()
    }
}

/// A [`ProcessContext`] in which handle values received from its process may be wrapped safely
/// ([`UserHandle::new`](super::UserHandle::new)): made by [`Request::enter`] after its checks,
/// or by the `unsafe` [`with_current_process`](super::with_current_process).
///
/// Dereferences to its [`ProcessContext`].
///
/// # Invariants
///
/// The values wrapped in it come from the process it records: for [`Request::enter`] that is the
/// requestor, whose thread this is; the caller of `with_current_process` vouches for it.
pub struct RequestContext<'proc> {
    cx: ProcessContext<'proc>,
}

impl RequestContext<'_> {
    /// A context for `process`, the current process.
    #[inline]
    pub(super) fn for_current(process: PEPROCESS) -> Self {
        Self {
            cx: ProcessContext::for_current(process),
        }
    }

    /// Keeps `raw` with a reference on this context's process, for a conversion on another
    /// thread later. Any IRQL up to `DISPATCH_LEVEL`.
    ///
    /// # Errors
    ///
    /// [`Error::NotAUserHandle`]; [`Error::WrongProcess`] when the thread no longer runs in this
    /// context's process.
    pub fn defer(&self, raw: HANDLE) -> Result<DeferredHandle> {
        refuse_non_user(raw)?;
        let process = ProcessRef::of_context(&self.cx)?;
        // The value was received from this context's process (type invariant).
        Ok(DeferredHandle::new(process, raw))
    }
}

impl<'proc> Deref for RequestContext<'proc> {
    type Target = ProcessContext<'proc>;

    fn deref(&self) -> &ProcessContext<'proc> {
        &self.cx
    }
}

impl<'proc> DerefMut for RequestContext<'proc> {
    fn deref_mut(&mut self) -> &mut ProcessContext<'proc> {
        &mut self.cx
    }
}

impl fmt::Debug for RequestContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestContext").field(&self.cx).finish()
    }
}
