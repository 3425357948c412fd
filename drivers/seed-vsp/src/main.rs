//! A minimal VSP driver image built on vmbus-kmcl: it links the root-side KMCL exports
//! (`vmbkmclr.sys`) and ntoskrnl's services through `raw-dylib`, from any host, with no WDK.
//!
//! The seed flow lives in [`vmbus_handle_from_worker`] and [`bind_channel`]; a complete driver
//! calls them from its `IRP_MJ_DEVICE_CONTROL` dispatch routine (in the worker process's thread)
//! and from its channel setup. `DriverEntry` only proves the image loads and links.
#![no_std]
#![no_main]

use vmbus_kmcl::{DeviceRef, KernelHandle, NtStatus, Request, Result, ServerChannelInit};
use vmbus_kmcl_sys::{HANDLE, NTSTATUS, PVOID};

/// Converts the VMBus handle the worker process sent in an IOCTL: called by the dispatch
/// routine with the IRP it received; the request checks that it runs in the worker's thread.
#[inline(never)]
pub fn vmbus_handle_from_worker(request: &Request<'_>, raw: HANDLE) -> Result<KernelHandle> {
    request.convert_vmbus_handle(raw)
}

/// Allocates a server channel and points it at the worker's VM; the channel owns the handle.
#[inline(never)]
pub fn bind_channel(device: DeviceRef<'_>, vm: KernelHandle) -> Result<ServerChannelInit<'_>> {
    let mut channel = ServerChannelInit::allocate(device)?;
    channel.set_vmbus_handle(vm)?;
    Ok(channel)
}

/// The driver's entry point. A real VSP creates its control device here; this example keeps the
/// seed-flow functions alive so the linker must resolve their imports.
///
/// # Safety
///
/// Called once by the I/O manager with a valid driver object and registry path.
#[no_mangle]
pub unsafe extern "system" fn DriverEntry(driver_object: PVOID, registry_path: PVOID) -> NTSTATUS {
    if driver_object.is_null() {
        // Never true when the I/O manager calls us; keeps the code reachable for the linker.
        // SAFETY: not reached at run time (see above); the pointer only feeds the linker.
        let request = unsafe { Request::from_raw(core::ptr::NonNull::dangling()) };
        // An opaque value, so that the conversion is not optimised out.
        let kernel = match vmbus_handle_from_worker(&request, registry_path) {
            Ok(kernel) => kernel,
            Err(error) => return error.status().into(),
        };
        // SAFETY: not reached at run time (see above); the pointer only feeds the linker.
        let device = unsafe { DeviceRef::from_raw(core::ptr::NonNull::dangling()) };
        return match bind_channel(device, kernel) {
            Ok(_channel) => NtStatus::SUCCESS.into(),
            Err(error) => error.status().into(),
        };
    }
    NtStatus::SUCCESS.into()
}

// The C runtime routines that `core` calls are exported by the kernel itself.
#[allow(
    dead_code,
    reason = "declared only so that `core`'s references resolve to these imports"
)]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8;
    fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32;
}

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    /// Stops the system with a bug check; never returns.
    fn KeBugCheckEx(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> !;
}

/// The bug check code a Rust panic in this driver raises: a private value ("RSP!" in ASCII), so a
/// crash dump tells it from the system's own codes.
const PANIC_BUG_CHECK: u32 = 0x5253_5021;

/// Tells the MSVC linker model that floating point is in use; any driver with Rust's `core`
/// defines it.
#[no_mangle]
#[used]
static _fltused: i32 = 0;

/// The precompiled `core` carries unwind tables that name the MSVC C++ personality routine.
/// With `panic = "abort"` nothing ever unwinds, so it is never called; if it were, that would be
/// a bug: stop the system. (Kernel C code gets it from the WDK's runtime library, which this
/// image does not link.)
#[no_mangle]
extern "C" fn __CxxFrameHandler3() -> ! {
    // SAFETY: `KeBugCheckEx` may be called at any IRQL and never returns.
    unsafe { KeBugCheckEx(PANIC_BUG_CHECK, 1, 0, 0, 0) }
}

/// A panic in a driver is a bug: stop the system with a bug check (a kernel cannot unwind).
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: `KeBugCheckEx` may be called at any IRQL and never returns.
    unsafe { KeBugCheckEx(PANIC_BUG_CHECK, 0, 0, 0, 0) }
}
