// Nor may it be smuggled out of the scope through a variable of the enclosing function.
use vmbus_kmcl::{with_current_process, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    let mut outside = None;
    with_current_process(|cx| outside = Some(UserHandle::new(raw, cx)));
    let _ = outside.map(UserHandle::to_kernel_handle);
}
