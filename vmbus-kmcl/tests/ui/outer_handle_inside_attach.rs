// While attached to another process, a handle of the outer process must not be usable: the
// attached process's table would interpret it.
use vmbus_kmcl::{ProcessId, ProcessRef, Request, UserHandle};

fn convert(request: Request<'_>) {
    let raw = core::ptr::null_mut();
    let other = ProcessRef::lookup(ProcessId::current()).unwrap();
    let _ = request.enter(|cx| {
        let handle = UserHandle::new(raw, cx).unwrap();
        other.attach(|_attached| handle.to_kernel_handle())
    });
}

fn main() {
    let _ = convert;
}
