//! The wrapper's own cost on the seed path, counted with callgrind against a *null* KMCL: the
//! backend below returns at once (opaque to the optimiser through `black_box`, as a real import
//! is), so the instructions counted are the caller's.
//!
//! `cargo bench -p vmbus-kmcl --bench handle_path --no-run`, then run the binary under
//! `valgrind --tool=callgrind` with `raw N` and `wrapper N` and compare the per-iteration
//! instruction counts (`.ci/instructions` does this and fails when the wrapper costs more than the raw calls).

use std::hint::black_box;
use vmbus_kmcl::{with_current_process, UserHandle};
use vmbus_kmcl_sys::{nt, HANDLE, NTSTATUS, PHANDLE};

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

/// The path written against the raw declarations: convert, check, close.
#[inline(never)]
fn raw_path(user: HANDLE) -> NTSTATUS {
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

/// The same path through the wrapper: scope, user handle, conversion, drop.
#[inline(never)]
fn wrapper_path(user: HANDLE) -> NTSTATUS {
    match with_current_process(|cx| UserHandle::new(user, cx).to_kernel_handle()) {
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
    let path: fn(HANDLE) -> NTSTATUS = match mode.as_str() {
        "raw" => raw_path,
        "wrapper" => wrapper_path,
        // `cargo bench` passes `--bench`: run both once as a smoke test.
        _ => {
            let user = std::ptr::null_mut::<u8>().wrapping_add(0x44).cast();
            assert_eq!((raw_path(user), wrapper_path(user)), (0, 0));
            return;
        }
    };
    let mut failures = 0u64;
    for i in 0..iterations {
        let user: HANDLE = std::ptr::null_mut::<u8>()
            .wrapping_add(4 + 4 * (i as usize & 0xff))
            .cast();
        failures += u64::from(black_box(path(black_box(user))) != 0);
    }
    assert_eq!(failures, 0);
}
