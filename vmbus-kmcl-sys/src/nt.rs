//! The NT kernel services a KMCL driver needs besides KMCL itself: closing handles, the current
//! process and thread, the requestor of an I/O request and its previous mode, attaching to
//! another process, object references, and the current IRQL.
//!
//! Only exported routines are declared as imports. The C macros among them are not:
//! `PsGetCurrentProcess` is `IoGetCurrentProcess`, `ObDereferenceObject` and `ObReferenceObject`
//! are [`ObfDereferenceObject`] and [`ObfReferenceObject`], and on x86_64 `KeGetCurrentIrql` is
//! an inline read of CR8, ported here as a Rust function.
//!
//! They are declared here rather than taken from wdk-sys so that the crate stays small, builds on
//! any host, and can be served by the `vmbus-kmcl-sim` emulator in tests. On Windows targets they
//! are imported from `ntoskrnl.exe` through `raw-dylib`.
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    reason = "the C names of the Windows kernel headers"
)]

use crate::base::{BOOLEAN, HANDLE, NTSTATUS, UCHAR};
use core::ffi::c_void;

/// The interrupt request level of a processor.
pub type KIRQL = UCHAR;
/// `KernelMode` or `UserMode`.
pub type KPROCESSOR_MODE = i8;
/// A pointer-sized signed integer.
pub type LONG_PTR = isize;

/// The level at which threads normally run; everything may be called.
pub const PASSIVE_LEVEL: KIRQL = 0;
/// The level at which asynchronous procedure calls are masked.
pub const APC_LEVEL: KIRQL = 1;
/// The level of DPCs and the scheduler; no waiting, no paging.
pub const DISPATCH_LEVEL: KIRQL = 2;
/// Processor mode of kernel code.
pub const KernelMode: KPROCESSOR_MODE = 0;
/// Processor mode of user code.
pub const UserMode: KPROCESSOR_MODE = 1;
/// Attribute that puts a new handle in the kernel handle table.
pub const OBJ_KERNEL_HANDLE: u32 = 0x0000_0200;

/// A process object (`EPROCESS`), opaque.
#[repr(C)]
pub struct EPROCESS {
    _opaque: [u8; 0],
    _not_send_sync_unpin: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}
/// Pointer to a process object.
pub type PEPROCESS = *mut EPROCESS;
/// Pointer to a process object, as the attach routines name it (the same type as `PEPROCESS`).
pub type PRKPROCESS = PEPROCESS;

/// A thread object (`ETHREAD`), opaque.
#[repr(C)]
pub struct ETHREAD {
    _opaque: [u8; 0],
    _not_send_sync_unpin: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}
/// Pointer to a thread object.
pub type PETHREAD = *mut ETHREAD;

/// An I/O request packet (`IRP`), opaque: the services declared here only need its address.
#[repr(C)]
pub struct IRP {
    _opaque: [u8; 0],
    _not_send_sync_unpin: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}
/// Pointer to an I/O request packet.
pub type PIRP = *mut IRP;

/// The saved APC state of an attach: opaque, 48 bytes, in non-paged memory or on the stack.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct KAPC_STATE {
    /// The saved state; only the kernel reads it.
    pub Opaque: [u8; 48],
}
/// Pointer to a [`KAPC_STATE`].
pub type PRKAPC_STATE = *mut KAPC_STATE;

impl KAPC_STATE {
    /// Zeroed storage for an attach to fill.
    pub const fn zeroed() -> Self {
        Self { Opaque: [0; 48] }
    }
}

const _: () = {
    assert!(core::mem::size_of::<KAPC_STATE>() == 0x30);
    assert!(core::mem::align_of::<KAPC_STATE>() == 8);
};

#[cfg_attr(
    target_os = "windows",
    link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "C" {
    /// Closes a kernel handle (or a handle of the current process's table) with kernel previous
    /// mode. PASSIVE_LEVEL.
    pub fn ZwClose(Handle: HANDLE) -> NTSTATUS;
    /// The process the current thread runs in (attached process included), not referenced.
    /// Any IRQL up to DISPATCH_LEVEL.
    pub fn IoGetCurrentProcess() -> PEPROCESS;
    /// The id of the process that created the current thread (its own process, also while it
    /// is attached to another one). Any IRQL.
    pub fn PsGetCurrentProcessId() -> HANDLE;
    /// The id of the process object `Process`: `PsGetProcessId(IoGetCurrentProcess())` is the
    /// id of the process the thread is attached to. Any IRQL.
    pub fn PsGetProcessId(Process: PEPROCESS) -> HANDLE;
    /// Attaches the current thread to `PROCESS`'s address space (and handle table), saving the
    /// previous state in `ApcState`. Below DISPATCH_LEVEL; undo with [`KeUnstackDetachProcess`].
    pub fn KeStackAttachProcess(PROCESS: PRKPROCESS, ApcState: PRKAPC_STATE);
    /// Undoes the [`KeStackAttachProcess`] that filled `ApcState`.
    pub fn KeUnstackDetachProcess(ApcState: PRKAPC_STATE);
    /// Looks up a process by id and returns it referenced (release with [`ObfDereferenceObject`]).
    pub fn PsLookupProcessByProcessId(ProcessId: HANDLE, Process: *mut PEPROCESS) -> NTSTATUS;
    /// Drops one reference of a kernel object (the routine behind `ObDereferenceObject`).
    pub fn ObfDereferenceObject(Object: *mut c_void) -> LONG_PTR;
    /// TRUE when `Handle` is a kernel handle (validity is not checked). At most APC_LEVEL.
    pub fn ObIsKernelHandle(Handle: HANDLE) -> BOOLEAN;
    /// Takes one more reference of a kernel object (the routine behind `ObReferenceObject`).
    /// At most DISPATCH_LEVEL.
    pub fn ObfReferenceObject(Object: *mut c_void) -> LONG_PTR;
    /// The process of the thread that issued `Irp` (the process that thread is attached to,
    /// if any), not referenced; NULL when the request has no thread. At most DISPATCH_LEVEL.
    pub fn IoGetRequestorProcess(Irp: PIRP) -> PEPROCESS;
    /// The previous processor mode of the current thread: [`UserMode`] when it entered the
    /// kernel from a user-mode system call, else [`KernelMode`]. At most DISPATCH_LEVEL.
    pub fn ExGetPreviousMode() -> KPROCESSOR_MODE;
    /// The current thread object, not referenced. Any IRQL.
    pub fn PsGetCurrentThread() -> PETHREAD;
}

#[cfg(not(all(target_os = "windows", target_arch = "x86_64")))]
#[cfg_attr(
    all(target_os = "windows", target_arch = "aarch64"),
    link(name = "hal.dll", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "C" {
    /// The current processor's IRQL. On aarch64 Windows this is a HAL import.
    pub fn KeGetCurrentIrql() -> KIRQL;
}

/// The current processor's IRQL, read from CR8 as the WDK's inline version does.
///
/// # Safety
///
/// Must run in kernel mode (CR8 is not readable from user mode).
#[cfg(all(target_os = "windows", target_arch = "x86_64"))]
#[inline]
pub unsafe fn KeGetCurrentIrql() -> KIRQL {
    let irql: u64;
    // SAFETY: the caller runs in kernel mode, where reading CR8 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr8", out(reg) irql, options(nomem, nostack, preserves_flags));
    }
    // CAST: CR8 holds the IRQL in its low 4 bits.
    irql as KIRQL
}
