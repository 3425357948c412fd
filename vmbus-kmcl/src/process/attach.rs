//! Referenced process objects and attaching the current thread to one.

use core::ffi::c_void;
use core::fmt;
use core::ptr::NonNull;

use vmbus_kmcl_sys::nt::{self, APC_LEVEL, KAPC_STATE, PEPROCESS, PETHREAD};
use vmbus_kmcl_sys::HANDLE;

use super::{current_process, ProcessContext};
use crate::error::{Error, Result};
use crate::irql;
use crate::status::to_result;

/// A process id (NT passes it as a `HANDLE`-typed number; it is never dereferenced).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId(HANDLE);

impl ProcessId {
    /// Wraps a raw process id.
    pub const fn from_raw(id: HANDLE) -> Self {
        Self(id)
    }

    /// The id of the current thread's own process, the one that created it
    /// (`PsGetCurrentProcessId`), also while the thread is attached to another one. Any IRQL.
    #[doc(alias = "PsGetCurrentProcessId")]
    pub fn current() -> Self {
        // SAFETY: `PsGetCurrentProcessId` has no preconditions.
        Self(unsafe { nt::PsGetCurrentProcessId() })
    }

    /// The raw id.
    pub const fn as_raw(self) -> HANDLE {
        self.0
    }
}

/// A referenced process object (`EPROCESS`), released with `ObDereferenceObject` on drop.
///
/// # Invariants
///
/// Holds one reference on a process object, which keeps it alive until drop.
pub struct ProcessRef(NonNull<nt::EPROCESS>);

// SAFETY: a referenced process object may be used and dereferenced from any thread.
unsafe impl Send for ProcessRef {}
// SAFETY: `&ProcessRef` only gives out the pointer; the kernel synchronises process objects.
unsafe impl Sync for ProcessRef {}

impl ProcessRef {
    /// Looks a process up by id and references it (`PsLookupProcessByProcessId`).
    /// IRQL at most `APC_LEVEL` (checked).
    ///
    /// A process found by an id is only the process the driver chose: attaching to it gives a
    /// context in which values cannot be wrapped safely (see the [module docs](super)).
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`] above `APC_LEVEL`; the status of `PsLookupProcessByProcessId`,
    /// e.g. `STATUS_INVALID_CID` for an unknown id.
    #[doc(alias = "PsLookupProcessByProcessId")]
    pub fn lookup(process_id: ProcessId) -> Result<Self> {
        irql::require_at_most(APC_LEVEL)?;
        let mut process: PEPROCESS = core::ptr::null_mut();
        // SAFETY:
        // - `process` is a valid place for the result; the id is a plain value;
        // - the IRQL is at most APC_LEVEL (checked above).
        to_result(unsafe { nt::PsLookupProcessByProcessId(process_id.0, &mut process) })?;
        // INVARIANT: a successful lookup returns a referenced, non-NULL process object.
        NonNull::new(process)
            .map(Self)
            .ok_or(Error::Status(crate::NtStatus::INVALID_CID))
    }

    /// References the process of `cx` (`ObReferenceObject`), after checking that the thread
    /// still runs in it (which also proves the process object is alive). Any IRQL up to
    /// `DISPATCH_LEVEL`.
    ///
    /// # Errors
    ///
    /// [`Error::WrongProcess`] when the current process is not the one of `cx`.
    #[doc(alias = "ObReferenceObject")]
    #[doc(alias = "ObfReferenceObject")]
    pub fn of_context(cx: &ProcessContext<'_>) -> Result<Self> {
        cx.check_current()?;
        let process = NonNull::new(cx.process()).ok_or(Error::WrongProcess)?;
        // SAFETY: `process` is the current process (checked above), a live object, and
        // `ObfReferenceObject` may be called at IRQL <= DISPATCH_LEVEL on any object.
        let _ = unsafe { nt::ObfReferenceObject(process.as_ptr().cast::<c_void>()) };
        // INVARIANT: the reference just taken is handed to the new value.
        Ok(Self(process))
    }

    /// Takes over a reference the caller holds.
    ///
    /// # Safety
    ///
    /// `process` must be a process object on which the caller holds a reference that it hands
    /// over (it will be dropped with `ObDereferenceObject`).
    pub unsafe fn from_raw(process: NonNull<nt::EPROCESS>) -> Self {
        // INVARIANT: the caller hands over a reference.
        Self(process)
    }

    /// The process object pointer.
    pub fn as_raw(&self) -> PEPROCESS {
        self.0.as_ptr()
    }

    /// Attaches the current thread to this process (`KeStackAttachProcess`), runs `f` with a
    /// context for it, and detaches again (`KeUnstackDetachProcess`) when `f` returns or
    /// unwinds. IRQL at most `APC_LEVEL` (checked).
    ///
    /// Nothing tied to another process can enter the attached region, where this process's
    /// handle table would interpret it: `f` must be `Send`, which no [`ProcessContext`] and no
    /// [`UserHandle`](super::UserHandle) is. The context given to `f` proves where the thread
    /// runs, not where a value came from, so wrapping a value in it is `unsafe`
    /// ([`UserHandle::assume_received`](super::UserHandle::assume_received)); convert values
    /// received earlier with a [`DeferredHandle`](super::DeferredHandle). Keep the region
    /// short: the kernel documents deadlock risks.
    ///
    /// # Errors
    ///
    /// [`Error::IrqlTooHigh`] above `APC_LEVEL`; nothing is attached then.
    ///
    /// # Panics
    ///
    /// When the detach would run on another thread than the attach, or while the thread is in
    /// another process than the one attached to (an inner attach was not undone): both mean a
    /// stackful coroutine moved the scope, and detaching then would corrupt the thread's
    /// state. In a driver the panic is a bug check.
    ///
    /// # Examples
    ///
    /// ```
    /// use vmbus_kmcl::process::{ProcessId, ProcessRef};
    /// use vmbus_kmcl::Result;
    ///
    /// /// Is the thread in `process` while attached to it? (Always, unless a coroutine moved it.)
    /// fn attached_is_current(process: &ProcessRef) -> Result<bool> {
    ///     process.attach(|cx| cx.check_current().is_ok())
    /// }
    /// # let _ = attached_is_current;
    /// ```
    #[doc(alias = "KeStackAttachProcess")]
    #[doc(alias = "KeUnstackDetachProcess")]
    pub fn attach<R>(
        &self,
        f: impl for<'p> FnOnce(&'p mut ProcessContext<'p>) -> R + Send,
    ) -> Result<R> {
        irql::require_at_most(APC_LEVEL)?;
        let mut state = KAPC_STATE::zeroed();
        // SAFETY: `PsGetCurrentThread` has no preconditions.
        let thread = unsafe { nt::PsGetCurrentThread() };
        // SAFETY:
        // - the process is referenced by `self` for the whole call;
        // - `state` is stack storage that stays in place until the guard below detaches with it;
        // - the IRQL is at most APC_LEVEL (checked above).
        unsafe { nt::KeStackAttachProcess(self.as_raw(), &mut state) };
        let guard = Attached {
            state: &mut state,
            thread,
            process: current_process(),
        };
        let mut inner = ProcessContext::for_current(guard.process);
        Ok(f(&mut inner))
    }
}

/// Undoes an attach when dropped, also while unwinding, after checking that it is the innermost
/// attach of the thread that made it.
///
/// # Invariants
///
/// `state` was filled by `KeStackAttachProcess` on `thread`, after which the current process
/// was `process`.
struct Attached<'s> {
    state: &'s mut KAPC_STATE,
    thread: PETHREAD,
    process: PEPROCESS,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        // SAFETY: `PsGetCurrentThread` has no preconditions.
        let thread = unsafe { nt::PsGetCurrentThread() };
        assert!(
            thread == self.thread,
            "vmbus-kmcl: a process attach is being undone on another thread than the one that \
             made it (a stackful coroutine moved the attached scope)"
        );
        assert!(
            current_process() == self.process,
            "vmbus-kmcl: a process attach is being undone while an inner attach is still in \
             effect (out of order, e.g. coroutines resumed in another order)"
        );
        // SAFETY: by the type invariant and the two checks above, the state was filled by an
        // attach on this thread, and no attach made after it is still in effect.
        unsafe { nt::KeUnstackDetachProcess(self.state) };
    }
}

impl Drop for ProcessRef {
    /// Drops the reference (`ObDereferenceObject`). IRQL at most `DISPATCH_LEVEL`.
    #[doc(alias = "ObDereferenceObject")]
    fn drop(&mut self) {
        // SAFETY: by the type invariant this object holds one reference, released once here.
        let _ = unsafe { nt::ObfDereferenceObject(self.0.as_ptr().cast::<c_void>()) };
    }
}

impl fmt::Debug for ProcessRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProcessRef").field(&self.0).finish()
    }
}
