// A user-mode handle means something only on the thread that runs in its process.
use vmbus_kmcl::{with_current_process, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    with_current_process(|cx| {
        let handle = UserHandle::new(raw, cx);
        std::thread::scope(|s| {
            s.spawn(move || handle.to_kernel_handle());
        });
    });
}
