// Case 1 of the seed rule: a context for "whatever process this thread runs in" proves nothing
// on a system thread or in a work item, so making one without a request is `unsafe`.
use vmbus_kmcl::{with_current_process, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    let _ = with_current_process(|cx| UserHandle::new(raw, cx).map(UserHandle::to_kernel_handle));
}
