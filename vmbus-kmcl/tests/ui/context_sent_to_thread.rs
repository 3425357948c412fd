// The proof of the current process is not valid on another thread either.
use vmbus_kmcl::{with_current_process, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    with_current_process(|cx| {
        std::thread::scope(|s| {
            s.spawn(|| UserHandle::new(raw, cx).to_kernel_handle());
        });
    });
}
