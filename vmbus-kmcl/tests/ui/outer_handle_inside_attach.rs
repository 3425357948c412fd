// While attached to another process, a handle of the outer process must not be usable: the
// attached process's table would interpret it.
use vmbus_kmcl::{with_current_process, ProcessId, ProcessRef, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    let other = ProcessRef::lookup(ProcessId::current()).unwrap();
    with_current_process(|cx| {
        let handle = UserHandle::new(raw, cx);
        cx.attach(&other, |_attached| handle.to_kernel_handle())
    })
    .ok();
}
