// Converting a raw handle needs a process context: outside a scope there is none, and making
// one up is `unsafe`.
use vmbus_kmcl::{ProcessContext, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    let _ = UserHandle::new(raw, &ProcessContext::assume_current()).to_kernel_handle();
}
