//! The wrapper's own cost on the checked seed path, counted with callgrind against a *null*
//! kernel and KMCL: the backends below return at once (opaque to the optimiser through
//! `black_box`, as a real import is), so the instructions counted are the caller's.
//!
//! The checked seed path is what a careful C driver does in its IOCTL dispatch routine: IRQL is
//! PASSIVE_LEVEL, the requestor process is the current process and the thread is not attached
//! elsewhere, the previous mode is UserMode, the value is not NULL and has no kernel-handle bit,
//! then convert, check the status, close. The `unchecked` mode runs convert, check, close only,
//! so that the difference is the cost of the checks.
//!
//! `cargo bench -p vmbus-kmcl --bench handle_path --no-run`, then run the binary under
//! `valgrind --tool=callgrind` with `raw N` and `wrapper N` and compare the per-iteration
//! instruction counts (`.ci/instructions` does this and fails when the wrapper costs more than the raw calls).

use std::hint::black_box;
use std::ptr::NonNull;
use vmbus_kmcl::{Request, UserHandle};
use vmbus_kmcl_sys::nt::{self, KIRQL, KPROCESSOR_MODE, PEPROCESS, PIRP};
use vmbus_kmcl_sys::{HANDLE, NTSTATUS, PHANDLE};

/// The one process of the null kernel: requestor and current process alike.
fn the_process() -> PEPROCESS {
    std::ptr::without_provenance_mut(0xFFFF_D000_0000_1000)
}

/// Null backend of `KeGetCurrentIrql`: PASSIVE_LEVEL.
#[no_mangle]
#[inline(never)]
pub extern "C" fn KeGetCurrentIrql() -> KIRQL {
    black_box(0)
}

/// Null backend of `IoGetCurrentProcess`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn IoGetCurrentProcess() -> PEPROCESS {
    black_box(the_process())
}

/// Null backend of `IoGetRequestorProcess`: the requestor is the current process.
#[no_mangle]
#[inline(never)]
pub extern "C" fn IoGetRequestorProcess(irp: PIRP) -> PEPROCESS {
    black_box(irp);
    black_box(the_process())
}

/// Null backend of `PsGetProcessId`: the one process's id.
#[no_mangle]
#[inline(never)]
pub extern "C" fn PsGetProcessId(process: PEPROCESS) -> HANDLE {
    black_box(process);
    black_box(std::ptr::without_provenance_mut(0x1234))
}

/// Null backend of `PsGetCurrentProcessId`: the thread's own process is the current one.
#[no_mangle]
#[inline(never)]
pub extern "C" fn PsGetCurrentProcessId() -> HANDLE {
    black_box(std::ptr::without_provenance_mut(0x1234))
}

/// Null backend of `ExGetPreviousMode`: UserMode.
#[no_mangle]
#[inline(never)]
pub extern "C" fn ExGetPreviousMode() -> KPROCESSOR_MODE {
    black_box(1)
}

/// Null backend: "converts" by setting the top bit, as kernel handles have it.
///
/// # Safety
///
/// `kernel_handle` must be valid for writes.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn VmbConvertVmbusHandleToKernelHandle(
    vmbus_handle: HANDLE,
    kernel_handle: PHANDLE,
) -> NTSTATUS {
    // SAFETY: the caller guarantees `kernel_handle` is valid for writes.
    unsafe { kernel_handle.write(black_box(vmbus_handle.map_addr(|a| a | 1 << 63))) };
    // Opaque to the optimiser, like a real import: callers must test the status.
    black_box(0)
}

/// Null backend of `ZwClose`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn ZwClose(handle: HANDLE) -> NTSTATUS {
    black_box(handle);
    black_box(0)
}

// CAST: the statuses a careful driver completes the request with, as bit patterns.
const STATUS_INVALID_DEVICE_STATE: NTSTATUS = 0xC000_0184_u32 as NTSTATUS;
// CAST: as above.
const STATUS_ACCESS_DENIED: NTSTATUS = 0xC000_0022_u32 as NTSTATUS;
// CAST: as above.
const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = 0xC000_0010_u32 as NTSTATUS;
// CAST: as above.
const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008_u32 as NTSTATUS;

/// The path written against the raw declarations, with the checks a careful C driver makes:
/// IRQL, requestor is current process, previous mode, kernel-bit refusal, convert, close.
#[inline(never)]
fn raw_path(irp: PIRP, user: HANDLE) -> NTSTATUS {
    // SAFETY: the null kernel's IRQL read has no preconditions.
    if unsafe { nt::KeGetCurrentIrql() } != nt::PASSIVE_LEVEL {
        return STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: `irp` is the request being handled; the call only reads it.
    let requestor = unsafe { nt::IoGetRequestorProcess(irp) };
    // SAFETY: no preconditions.
    if requestor.is_null() || requestor != unsafe { nt::IoGetCurrentProcess() } {
        return STATUS_ACCESS_DENIED;
    }
    // Not attached: the thread's own process is the current one. IoGetRequestorProcess
    // answers with the process the request's thread is attached to, so without this a thread
    // left attached elsewhere would pass the compare above in the wrong process.
    // SAFETY: `requestor` is the current process; neither call has other preconditions.
    if unsafe { nt::PsGetProcessId(requestor) } != unsafe { nt::PsGetCurrentProcessId() } {
        return STATUS_ACCESS_DENIED;
    }
    // SAFETY: no preconditions.
    if unsafe { nt::ExGetPreviousMode() } != nt::UserMode {
        return STATUS_INVALID_DEVICE_REQUEST;
    }
    // CAST: NULL and kernel handles (sign bit set) are never user handles.
    if (user.addr() as isize) <= 0 {
        return STATUS_INVALID_HANDLE;
    }
    convert_and_close(user)
}

/// Convert, check the status, close: the raw tail of both raw paths.
#[inline(always)]
fn convert_and_close(user: HANDLE) -> NTSTATUS {
    let mut kernel: HANDLE = core::ptr::null_mut();
    // SAFETY: `kernel` is a valid place for the result.
    let status = unsafe { vmbus_kmcl_sys::VmbConvertVmbusHandleToKernelHandle(user, &mut kernel) };
    // KMCL documents STATUS_SUCCESS or an error for the conversion, and the handle is written
    // only with STATUS_SUCCESS: test for exactly that, as the wrapper does.
    if status != 0 {
        return status;
    }
    // SAFETY: the conversion succeeded, so `kernel` is an open handle owned here. Like a drop,
    // the close status is not used.
    let _ = unsafe { nt::ZwClose(kernel) };
    0
}

/// The scoped form of the wrapper path: the request's checks, a user handle in the request
/// context, and its conversion, which re-reads the IRQL and re-compares the current process.
#[inline(never)]
fn scoped_path(irp: PIRP, user: HANDLE) -> NTSTATUS {
    // SAFETY: the I/O manager never passes a NULL IRP to a dispatch routine.
    let irp = unsafe { NonNull::new_unchecked(irp) };
    // SAFETY: `irp` is the request being handled, valid for this call.
    let request = unsafe { Request::from_raw(irp) };
    match request.enter(|cx| UserHandle::new(user, cx)?.to_kernel_handle()) {
        Ok(Ok(kernel)) => {
            drop(kernel);
            0
        }
        Ok(Err(e)) | Err(e) => e.status().into(),
    }
}

/// Convert, check, close, without the checks (the cost baseline of the checks).
#[inline(never)]
fn unchecked_path(_irp: PIRP, user: HANDLE) -> NTSTATUS {
    convert_and_close(user)
}

/// The same path through the wrapper: the request's checks and the conversion, then drop.
#[inline(never)]
fn wrapper_path(irp: PIRP, user: HANDLE) -> NTSTATUS {
    // SAFETY: the I/O manager never passes a NULL IRP to a dispatch routine.
    let irp = unsafe { NonNull::new_unchecked(irp) };
    // SAFETY: `irp` is the request being handled, valid for this call.
    let request = unsafe { Request::from_raw(irp) };
    match request.convert_vmbus_handle(user) {
        Ok(kernel) => {
            drop(kernel);
            0
        }
        Err(e) => e.status().into(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let path: fn(PIRP, HANDLE) -> NTSTATUS = match mode.as_str() {
        "raw" => raw_path,
        "wrapper" => wrapper_path,
        "unchecked" => unchecked_path,
        "scoped" => scoped_path,
        // `cargo bench` passes `--bench`: run both once as a smoke test.
        _ => {
            let user = std::ptr::without_provenance_mut(0x44);
            assert_eq!((raw_path(irp(), user), wrapper_path(irp(), user)), (0, 0));
            assert_eq!(scoped_path(irp(), user), 0);
            // Both refuse a kernel handle value without calling KMCL.
            let kernel = std::ptr::without_provenance_mut(0xFFFF_FFFF_8000_0004);
            let refused = (raw_path(irp(), kernel), wrapper_path(irp(), kernel));
            assert_eq!(refused, (STATUS_INVALID_HANDLE, STATUS_INVALID_HANDLE));
            return;
        }
    };
    let mut failures = 0u64;
    for i in 0..iterations {
        let user: HANDLE = std::ptr::null_mut::<u8>()
            .wrapping_add(4 + 4 * (i as usize & 0xff))
            .cast();
        failures += u64::from(black_box(path(black_box(irp()), black_box(user))) != 0);
    }
    assert_eq!(failures, 0);
}

/// The request of the null kernel: any non-NULL address (only compared, never read).
fn irp() -> PIRP {
    std::ptr::without_provenance_mut(0xFFFF_D000_0000_2000)
}
