//! Process context, and user-mode handles converted only in the process they belong to.
//!
//! A user-mode handle is an index into the handle table of the process that opened it. The same
//! value in another process names something else or nothing, and kernel code looks handles up
//! in the table of whatever process the current thread runs in (or is attached to). KMCL's
//! `VmbConvertVmbusHandleToKernelHandle` therefore must be called in the VM worker process that
//! opened the VMBus handle; called anywhere else it may return a kernel handle to *another* VM's
//! VMBus, and KMCL cannot tell.
//!
//! # What is enforced, and by what
//!
//! * **Where a safe context comes from.** Safe code gets a context in which it may wrap handle
//!   values in exactly two ways:
//!   - from the I/O request the dispatch routine received ([`Request`]): [`Request::enter`]
//!     checks once, at run time, that the IRQL is `PASSIVE_LEVEL`, that the requestor process
//!     (`IoGetRequestorProcess`) is the current process (`IoGetCurrentProcess`), that the thread
//!     is not attached to another process (`PsGetProcessId` of the current process equals
//!     `PsGetCurrentProcessId`, the id of the thread's own process), and that the thread came
//!     from user mode (`ExGetPreviousMode` is `UserMode`). On a worker thread, a work item, a
//!     DPC or inside an attach, the second or third check fails with
//!     [`Error::RequestorMismatch`]; for a request another driver built in kernel mode the
//!     fourth fails with [`Error::NotFromUserMode`]. The third matters because
//!     `IoGetRequestorProcess` returns the process the request's thread is attached to *now*.
//!   - by attaching to a referenced process object the driver chose ([`ProcessRef::attach`]):
//!     that context proves where the thread runs, but not where a value came from, so making a
//!     [`UserHandle`] in it is `unsafe` ([`UserHandle::assume_received`]). The safe way to
//!     convert on another thread is a [`DeferredHandle`], which carries a reference on the
//!     process that sent the value and attaches to exactly that one.
//!
//!   [`with_current_process`] and [`ProcessContext::assume_current`], which check nothing, are
//!   `unsafe`.
//! * **Every conversion re-checks the process.** A [`ProcessContext`] records the process
//!   object it was made for. [`UserHandle::to_kernel_handle`] compares it with
//!   `IoGetCurrentProcess` (one call and one compare) and the IRQL with `PASSIVE_LEVEL`, and
//!   refuses with [`Error::WrongProcess`] or
//!   [`Error::IrqlTooHigh`] before KMCL is called.
//! * **Values that are never user handles are refused**: NULL and values with the kernel-handle
//!   (sign) bit set fail [`UserHandle::new`] with
//!   [`Error::NotAUserHandle`].
//! * **What the compiler proves.** The lifetime `'proc` is a *brand*: fresh for every scope,
//!   invariant, and never nameable outside it. A [`UserHandle<'proc>`] borrows its context, cannot
//!   leave the scope, and is `!Send`; contexts are `!Send` and `!Sync`. An attached region only
//!   accepts `Send` closures, so no user handle of an enclosing scope enters it. Each of these is
//!   a compile-fail test of the crate.
//!
//! # Stackful coroutines
//!
//! A stackful coroutine (a crate that switches stacks) can suspend inside a scope and resume it
//! elsewhere: in another attach, on another thread, or never, in which case an attach it
//! suspended in is never undone. The brand cannot see that, so such coroutines are outside the
//! contract of the scopes here. What still holds when they are used anyway is the run-time
//! compare: a conversion in the wrong process fails with
//! [`Error::WrongProcess`], and the attach guard panics (a bug
//! check in a driver) when it would detach on another thread or out of order.
//!
//! # What remains the driver's duty
//!
//! * Wrap in a request context only values the request carried (the compiler cannot see
//!   where a `HANDLE` came from; a value kept from another process's request and wrapped in
//!   this one is looked up in this process's table).
//! * Keep attached regions short (the kernel documents deadlock risks) and do not suspend a
//!   coroutine inside one.
//!
//! # Examples
//!
//! The seed flow of a VSP: the worker process sends an IOCTL carrying its VMBus handle; the
//! dispatch routine runs in the worker's thread and converts the handle there.
//!
//! ```
//! use vmbus_kmcl::process::Request;
//! use vmbus_kmcl::{KernelHandle, Result};
//! use vmbus_kmcl_sys::HANDLE;
//!
//! /// Called from the IRP_MJ_DEVICE_CONTROL dispatch routine with the IRP it received.
//! fn vmbus_handle_from_ioctl(request: &Request<'_>, raw: HANDLE) -> Result<KernelHandle> {
//!     request.convert_vmbus_handle(raw)
//! }
//! # let _ = vmbus_handle_from_ioctl;
//! ```

mod attach;
mod deferred;
mod request;
mod user_handle;

use core::fmt;
use core::marker::PhantomData;

use vmbus_kmcl_sys::nt::{self, PEPROCESS};

use crate::error::{Error, Result};

pub use attach::{ProcessId, ProcessRef};
pub use deferred::DeferredHandle;
pub use request::{Request, RequestContext};
pub use user_handle::UserHandle;

/// Proof that the current thread was in one particular process when the context was made, for
/// the brand `'proc`; it records that process.
///
/// Handed out by reference (`&'proc mut ProcessContext<'proc>`), so it lives exactly as long as
/// its scope.
///
/// # Invariants
///
/// `process` is the process object the current thread ran in when the context was made (not
/// referenced: the scope that made it keeps the process alive, because its thread runs in it,
/// or holds a reference). The type is `!Send` and `!Sync`, and `'proc` is invariant, so one
/// scope's brand never unifies with another's. That the thread is *still* in `process` is not an
/// invariant: every conversion checks it ([`ProcessContext::check_current`]).
pub struct ProcessContext<'proc> {
    process: PEPROCESS,
    _brand: Brand<'proc>,
    /// Makes the type `!Send` and `!Sync`.
    _not_send: PhantomData<*mut ()>,
}

/// Invariant in `'proc`, so one scope's brand never unifies with another's.
type Brand<'proc> = PhantomData<fn(&'proc ()) -> &'proc ()>;

/// The current process (`IoGetCurrentProcess`), not referenced. Any IRQL up to `DISPATCH_LEVEL`.
#[inline]
fn current_process() -> PEPROCESS {
    // SAFETY: `IoGetCurrentProcess` has no preconditions at IRQL <= DISPATCH_LEVEL and reads only
    // the current thread's process pointer; above that level it still returns the pointer.
    unsafe { nt::IoGetCurrentProcess() }
}

impl ProcessContext<'_> {
    /// A context for `process`, which the caller has just checked is the current process.
    #[inline]
    fn for_current(process: PEPROCESS) -> Self {
        // INVARIANT: the caller has just compared `process` with `IoGetCurrentProcess`.
        Self {
            process,
            _brand: PhantomData,
            _not_send: PhantomData,
        }
    }

    /// Creates a context for the process the current thread runs in now (recorded with
    /// `IoGetCurrentProcess`), with any brand. Any IRQL up to `DISPATCH_LEVEL`.
    ///
    /// # Safety
    ///
    /// The caller chooses the lifetime, so the compiler does not confine the context. The
    /// caller must ensure that the context is not used after the process it records may have
    /// exited (the thread stays in it, or the caller holds a reference on it).
    /// Conversions still check at run time that the thread runs in the recorded process.
    pub unsafe fn assume_current() -> Self {
        Self::for_current(current_process())
    }

    /// The process object (not referenced) this context was made for.
    #[doc(alias = "IoGetCurrentProcess")]
    pub fn process(&self) -> PEPROCESS {
        self.process
    }

    /// `Ok` when the thread runs in this context's process now: one `IoGetCurrentProcess` and
    /// one compare. Any IRQL up to `DISPATCH_LEVEL`.
    ///
    /// # Errors
    ///
    /// [`Error::WrongProcess`] when the current process is another one (the thread was moved,
    /// for instance by a stackful coroutine, or is inside an attach the context does not know).
    #[inline]
    pub fn check_current(&self) -> Result<()> {
        if current_process() != self.process {
            return Err(Error::WrongProcess);
        }
        Ok(())
    }

    /// Attaches to `process` from inside this context (see [`ProcessRef::attach`]); `self` is
    /// borrowed mutably for the duration, so no user handle of this scope is alive across it.
    ///
    /// # Errors
    ///
    /// As [`ProcessRef::attach`].
    ///
    /// # Panics
    ///
    /// As [`ProcessRef::attach`].
    #[doc(alias = "KeStackAttachProcess")]
    pub fn attach<R>(
        &mut self,
        process: &ProcessRef,
        f: impl for<'p> FnOnce(&'p mut ProcessContext<'p>) -> R + Send,
    ) -> Result<R> {
        process.attach(f)
    }
}

impl fmt::Debug for ProcessContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessContext")
            .field("process", &self.process)
            .finish()
    }
}

/// Runs `f` with a request context for the process the current thread runs in, checking
/// nothing about where the thread came from. Any IRQL up to `DISPATCH_LEVEL`.
///
/// Prefer [`Request::enter`], which proves the thread is the requestor's. This is for callers
/// that know it by other means (for example a driver that is not the top of its stack and
/// checked the requestor itself).
///
/// # Safety
///
/// Every value the closure wraps with [`UserHandle::new`] must have been received from the
/// process the thread runs in now (for example in an IOCTL this thread issued from user mode).
/// Called on a system thread, a work item or a DPC, that process is usually the System process,
/// and a value chosen elsewhere would be looked up there. Conversions still check at run time
/// that the thread has not moved to another process.
pub unsafe fn with_current_process<R>(
    f: impl for<'proc> FnOnce(&'proc mut RequestContext<'proc>) -> R,
) -> R {
    let mut cx = RequestContext::for_current(current_process());
    f(&mut cx)
}
