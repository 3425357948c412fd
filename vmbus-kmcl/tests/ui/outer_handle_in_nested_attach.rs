// A handle of one scope does not reach an attach made from another (nested) scope's context:
// the attached region accepts only `Send` closures, and no `UserHandle` is `Send`.
use vmbus_kmcl::{ProcessId, ProcessRef, Request, UserHandle};

fn convert(request: Request<'_>) {
    let raw = core::ptr::null_mut();
    let other = ProcessRef::lookup(ProcessId::current()).unwrap();
    let _ = request.enter(|outer| {
        let handle = UserHandle::new(raw, outer).unwrap();
        request.enter(|inner| inner.attach(&other, |_attached| handle.to_kernel_handle()))
    });
}

fn main() {
    let _ = convert;
}
