// `close` consumes the handle: the value cannot be used, or closed again, afterwards.
use vmbus_kmcl::KernelHandle;

fn main() {
    // SAFETY: only type-checked; never run.
    let handle = unsafe { KernelHandle::from_raw(core::ptr::null_mut()) }.unwrap();
    let _ = handle.close();
    let _ = handle.close();
}
