//! Process context, and user-mode handles that exist only where they mean something.
//!
//! A user-mode handle is an index into the handle table of the process that opened it. The same
//! value in another process names something else or nothing, and kernel code runs in whatever
//! process the current thread belongs to (or is attached to). KMCL's
//! `VmbConvertVmbusHandleToKernelHandle` therefore only works while the thread runs in the VM
//! worker process that opened the VMBus handle.
//!
//! This module turns that rule into types:
//!
//! * A [`ProcessContext<'proc>`] proves that the current thread runs in one process. The
//!   lifetime `'proc` is a *brand*: fresh for every scope, invariant, and never nameable
//!   outside it. Contexts come from [`with_current_process`] (a dispatch routine running in the
//!   requesting thread), from [`ProcessContext::attach`] (an explicit attach to a referenced
//!   process object) or, unchecked, from [`ProcessContext::assume_current`].
//! * A [`UserHandle<'proc>`] can only be made with a `&ProcessContext<'proc>`, cannot leave the
//!   scope, cannot be sent to another thread, and borrows the context for the whole scope, so
//!   the context cannot be re-attached elsewhere while a handle of it is alive.
//! * [`UserHandle::to_kernel_handle`] converts it into a [`KernelHandle`], which is valid in any
//!   process and may leave the scope.
//!
//! # Examples
//!
//! The seed flow of a VSP: the worker process sends an IOCTL carrying its VMBus handle; the
//! dispatch routine runs in the worker's thread, converts the handle, and hands the kernel handle
//! to the server channel it is setting up.
//!
//! ```
//! use vmbus_kmcl::{with_current_process, KernelHandle, Result, UserHandle};
//! use vmbus_kmcl_sys::HANDLE;
//!
//! /// Called from the IRP_MJ_DEVICE_CONTROL dispatch routine, in the worker process's thread.
//! fn vmbus_handle_from_ioctl(raw: HANDLE) -> Result<KernelHandle> {
//!     with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle())
//! }
//! # let _ = vmbus_handle_from_ioctl;
//! ```

use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use vmbus_kmcl_sys::nt::{self, KAPC_STATE, PEPROCESS};
use vmbus_kmcl_sys::HANDLE;

use crate::error::Result;
use crate::handle::KernelHandle;
use crate::status::{to_result, NtStatus};

/// Proof that the current thread runs in one particular process, for the brand `'proc`.
///
/// Handed out by reference (`&'proc mut ProcessContext<'proc>`), so it lives exactly as long as
/// its scope.
///
/// # Invariants
///
/// While a `ProcessContext<'proc>` exists, the current thread runs in the process it was made
/// for: the thread neither leaves that process nor attaches to another, except inside a nested
/// [`ProcessContext::attach`], which borrows this context mutably for the duration. The type is
/// `!Send` and `!Sync`, so it never reaches another thread, and `'proc` is invariant, so one
/// scope's brand never unifies with another's.
pub struct ProcessContext<'proc> {
    /// Zero-sized: making a context costs nothing at run time.
    _brand: Brand<'proc>,
    /// Makes the type `!Send` and `!Sync`.
    _not_send: PhantomData<*mut ()>,
}

/// Invariant in `'proc`, so one scope's brand never unifies with another's.
type Brand<'proc> = PhantomData<fn(&'proc ()) -> &'proc ()>;

impl ProcessContext<'_> {
    /// Creates a context for the process the current thread runs in now, with any brand.
    ///
    /// # Safety
    ///
    /// For as long as the returned context, and every [`UserHandle`] made with it, is used, the
    /// current thread must stay in the process it runs in now: no return to user mode, no
    /// attach to another process (other than through [`ProcessContext::attach`]), and no use on
    /// another thread. The caller chooses the lifetime, so nothing else enforces this.
    pub unsafe fn assume_current() -> Self {
        // INVARIANT: the caller promises the thread stays in its current process while the
        // context lives.
        Self {
            _brand: PhantomData,
            _not_send: PhantomData,
        }
    }

    /// The process object (not referenced) of this context (`IoGetCurrentProcess`, which by
    /// the invariant is this context's process). Any IRQL up to `DISPATCH_LEVEL`.
    #[doc(alias = "IoGetCurrentProcess")]
    pub fn process(&self) -> PEPROCESS {
        // SAFETY: `IoGetCurrentProcess` has no preconditions at IRQL <= DISPATCH_LEVEL; it only
        // reads the current thread's process pointer.
        unsafe { nt::IoGetCurrentProcess() }
    }

    /// Attaches the current thread to `process`, runs `f` with a context for it, and detaches
    /// again when `f` returns or unwinds.
    ///
    /// Nothing tied to the current process can enter the attached region, where the attached
    /// process's handle table would interpret it: `f` must be `Send`, which no
    /// [`ProcessContext`] and no [`UserHandle`] (of this scope or of any enclosing one) is, and
    /// `self` is borrowed mutably for the duration. Carry handle values in as [`HandleValue`]s.
    ///
    /// Calls `KeStackAttachProcess` and `KeUnstackDetachProcess`: IRQL at most `APC_LEVEL`
    /// (checked in debug builds). Keep the attached region short: the kernel documents deadlock
    /// risks.
    ///
    /// # Examples
    ///
    /// A system thread converts a handle value it received earlier from the worker process:
    ///
    /// ```
    /// use vmbus_kmcl::{with_current_process, HandleValue, KernelHandle, ProcessRef, Result, UserHandle};
    ///
    /// fn convert_in_worker(worker: &ProcessRef, value: HandleValue) -> Result<KernelHandle> {
    ///     with_current_process(|cx| {
    ///         cx.attach(worker, |attached| UserHandle::from_value(value, attached).to_kernel_handle())
    ///     })
    /// }
    /// # let _ = convert_in_worker;
    /// ```
    #[doc(alias = "KeStackAttachProcess")]
    #[doc(alias = "KeUnstackDetachProcess")]
    pub fn attach<R>(
        &mut self,
        process: &ProcessRef,
        f: impl for<'p> FnOnce(&'p mut ProcessContext<'p>) -> R + Send,
    ) -> R {
        // SAFETY: `KeGetCurrentIrql` has no preconditions.
        debug_assert!(unsafe { nt::KeGetCurrentIrql() } <= nt::APC_LEVEL);
        let mut state = KAPC_STATE::zeroed();
        // SAFETY:
        // - `process` is referenced by `ProcessRef` for the whole call;
        // - `state` is stack storage that stays in place until the guard below detaches with it;
        // - the caller runs at IRQL <= APC_LEVEL (documented, checked in debug builds).
        unsafe { nt::KeStackAttachProcess(process.as_raw(), &mut state) };
        let _detach = Detach(&mut state);
        // SAFETY: the thread is attached to `process` until `_detach` drops, after `f` returns
        // or unwinds, and the context given to `f` cannot outlive `f` (its brand is fresh).
        let mut inner = unsafe { ProcessContext::assume_current() };
        f(&mut inner)
    }
}

/// Undoes an attach when dropped, also while unwinding.
struct Detach<'s>(&'s mut KAPC_STATE);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        // SAFETY: the state was filled by the `KeStackAttachProcess` of `ProcessContext::attach`
        // on this thread, and every attach made inside has been undone by its own guard.
        unsafe { nt::KeUnstackDetachProcess(self.0) };
    }
}

impl fmt::Debug for ProcessContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessContext")
            .field("process", &self.process())
            .finish()
    }
}

/// Runs `f` with a context for the process the current thread runs in. Any IRQL; no kernel
/// call is made.
///
/// This is the entry point for a dispatch routine that runs in the requesting thread (the
/// top-level driver receiving an IOCTL from the VM worker process runs in that process): what
/// proves the process is that the thread came from it. Do not use it from a system worker
/// thread, a DPC or a completion routine to reach a user process: those run in an arbitrary or
/// the system process; attach to a referenced process object instead
/// ([`ProcessContext::attach`]).
///
/// What the types cannot see is where the thread came from: called from a system thread, a DPC
/// or a work item, this yields a context for whatever process the thread runs in (usually the
/// System process), and a handle value from elsewhere would be looked up there (KMCL then fails
/// the conversion or, worse, names another object). Call it only where the requestor's thread is
/// known to be current.
pub fn with_current_process<R>(
    f: impl for<'proc> FnOnce(&'proc mut ProcessContext<'proc>) -> R,
) -> R {
    // SAFETY: the context only lives inside `f`, during which this thread stays where it is: the
    // brand is fresh, so neither the context nor a `UserHandle` of it can leave `f`, and both are
    // `!Send`. Attaching elsewhere inside `f` goes through `ProcessContext::attach`.
    let mut cx = unsafe { ProcessContext::assume_current() };
    f(&mut cx)
}

/// A process id (NT passes it as a `HANDLE`-typed number; it is never dereferenced).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId(HANDLE);

impl ProcessId {
    /// Wraps a raw process id.
    pub const fn from_raw(id: HANDLE) -> Self {
        Self(id)
    }

    /// The id of the current process (`PsGetCurrentProcessId`). Read it before attaching.
    /// Any IRQL.
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
    /// IRQL at most `APC_LEVEL`.
    ///
    /// # Errors
    ///
    /// The status of `PsLookupProcessByProcessId`, e.g. `STATUS_INVALID_CID` for an unknown id.
    #[doc(alias = "PsLookupProcessByProcessId")]
    pub fn lookup(process_id: ProcessId) -> Result<Self> {
        let mut process: PEPROCESS = core::ptr::null_mut();
        // SAFETY: `process` is a valid place for the result; the id is a plain value.
        to_result(unsafe { nt::PsLookupProcessByProcessId(process_id.0, &mut process) })?;
        // INVARIANT: a successful lookup returns a referenced, non-NULL process object.
        NonNull::new(process)
            .map(Self)
            .ok_or(crate::Error::Status(crate::NtStatus::INVALID_CID))
    }

    /// Takes over a reference the caller holds.
    ///
    /// # Safety
    ///
    /// `process` must be a process object on which the caller holds a reference that it hands
    /// over (it will be dropped with `ObDereferenceObject`).
    pub unsafe fn from_raw(process: NonNull<nt::EPROCESS>) -> Self {
        Self(process)
    }

    /// The process object pointer.
    pub fn as_raw(&self) -> PEPROCESS {
        self.0.as_ptr()
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

/// A handle value received from user mode (for example in an IOCTL buffer), not yet tied to a
/// process: plain data, `Send`, so it can be carried into an attached region or to another
/// thread and turned into a [`UserHandle`] there, with that place's context.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleValue(usize);

impl HandleValue {
    /// The value of a raw handle.
    pub fn new(raw: HANDLE) -> Self {
        Self(raw.addr())
    }

    /// The raw handle (a number, never dereferenced).
    pub const fn as_raw(self) -> HANDLE {
        core::ptr::without_provenance_mut(self.0)
    }
}

impl From<HANDLE> for HandleValue {
    fn from(raw: HANDLE) -> Self {
        Self::new(raw)
    }
}

/// A user-mode handle of the process of the context `'proc`, usable only in that context.
///
/// One pointer wide. `!Send`, `!Sync`, and bound to its scope.
///
/// # Invariants
///
/// The value was received in, and is only used in, the process of its [`ProcessContext`]; the
/// context is borrowed for `'proc`, so it stays current (no attach elsewhere) while this exists.
/// Whether the value is open and names a VMBus device is for KMCL to check.
#[repr(transparent)]
pub struct UserHandle<'proc> {
    raw: HANDLE,
    _context: PhantomData<&'proc ProcessContext<'proc>>,
}

impl<'proc> UserHandle<'proc> {
    /// Wraps a handle value received from the process of `cx` (typically in an IOCTL buffer).
    pub fn new(raw: HANDLE, cx: &'proc ProcessContext<'proc>) -> Self {
        let _ = cx;
        // INVARIANT: the context is borrowed for the brand's whole scope.
        Self {
            raw,
            _context: PhantomData,
        }
    }

    /// Wraps a [`HandleValue`] received from the process of `cx`.
    pub fn from_value(value: HandleValue, cx: &'proc ProcessContext<'proc>) -> Self {
        Self::new(value.as_raw(), cx)
    }

    /// The raw handle value.
    pub fn as_raw(&self) -> HANDLE {
        self.raw
    }

    /// Converts the handle into a kernel handle to the same VMBus object, owned by the caller
    /// (`VmbConvertVmbusHandleToKernelHandle`). Usually followed by handing the kernel handle to
    /// a server channel ([`ChannelBuilder::set_vmbus_handle`](crate::channel::ChannelBuilder::set_vmbus_handle)). KMCL documents no IRQL;
    /// call it at `PASSIVE_LEVEL`, as the handle-table lookups it makes require.
    ///
    /// # Errors
    ///
    /// [`Error::Status`](crate::Error::Status) with the failing status of the conversion, e.g.
    /// `STATUS_INVALID_HANDLE` when the value names no handle of this process;
    /// [`Error::Unexpected`](crate::Error::Unexpected) for a success-class status other than
    /// `STATUS_SUCCESS`, which the function does not document. Nothing is opened then.
    #[doc(alias = "VmbConvertVmbusHandleToKernelHandle")]
    #[inline]
    pub fn to_kernel_handle(self) -> Result<KernelHandle> {
        let mut kernel: HANDLE = core::ptr::null_mut();
        let status =
            // SAFETY: `kernel` is a valid place for the result, and the thread runs in the process
            // that owns `self.raw` (type invariant), as the conversion requires.
            unsafe { vmbus_kmcl_sys::VmbConvertVmbusHandleToKernelHandle(self.raw, &mut kernel) };
        if status != NtStatus::SUCCESS.to_raw() {
            return Err(crate::Error::from_failed_call(status));
        }
        // SAFETY: with STATUS_SUCCESS, KMCL has written an open kernel handle (its documented
        // contract), and kernel handle values are never NULL (their top bit is set).
        let kernel = unsafe { NonNull::new_unchecked(kernel) };
        // SAFETY: the handle is new, open, and owned by the caller, to whom it is handed over.
        Ok(unsafe { KernelHandle::from_raw_nonnull(kernel) })
    }
}

impl fmt::Debug for UserHandle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserHandle").field(&self.raw).finish()
    }
}
