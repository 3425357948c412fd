// Converting a raw handle needs a process context: outside a scope there is none, and making
// one up, or wrapping a value in it, is `unsafe`.
use vmbus_kmcl::{ProcessContext, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    let cx = ProcessContext::assume_current();
    let _ = UserHandle::assume_received(raw, &cx).map(UserHandle::to_kernel_handle);
}
