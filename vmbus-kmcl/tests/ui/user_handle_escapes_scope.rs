// A user-mode handle must not leave the scope of the process context it was made in.
use vmbus_kmcl::{with_current_process, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    let escaped = with_current_process(|cx| UserHandle::new(raw, cx));
    let _ = escaped.to_kernel_handle();
}
