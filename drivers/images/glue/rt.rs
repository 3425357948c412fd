//! What a `no_std` Rust image needs from the kernel besides its own code: the C runtime
//! routines `core` calls, the MSVC linker's markers, and a panic handler that bug-checks.
//! Shared by every driver image the CI links (this example and the table-only check).

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
