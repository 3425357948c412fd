// A handle of one scope does not reach an attach made through another (nested) scope's context:
// the attached region accepts only `Send` closures, and no `UserHandle` is `Send`.
use vmbus_kmcl::{with_current_process, ProcessId, ProcessRef, UserHandle};

fn main() {
    let raw = core::ptr::null_mut();
    let other = ProcessRef::lookup(ProcessId::current()).unwrap();
    with_current_process(|outer| {
        let handle = UserHandle::new(raw, outer);
        with_current_process(|inner| inner.attach(&other, |_attached| handle.to_kernel_handle()))
    })
    .ok();
}
