// A kernel handle is closed exactly once: after it was moved (or closed) it cannot be used.
use vmbus_kmcl::KernelHandle;

fn consume(_handle: KernelHandle) {}

fn main() {
    // SAFETY: only type-checked; never run.
    let handle = unsafe { KernelHandle::from_raw(core::ptr::null_mut()) }.unwrap();
    consume(handle);
    let _ = handle.as_raw();
}
