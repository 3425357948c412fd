// Case 2 of the seed rule: a value received from one process, carried into an attach to a
// process the driver chose (here found by an id), cannot become a user handle there without
// `unsafe`: an attached context is not a request context.
use vmbus_kmcl::{ProcessId, ProcessRef, UserHandle};

fn convert(value: usize, id: ProcessId) {
    let chosen = ProcessRef::lookup(id).unwrap();
    let _ = chosen.attach(move |cx| {
        let raw = core::ptr::without_provenance_mut(value);
        UserHandle::new(raw, cx).map(UserHandle::to_kernel_handle)
    });
}

fn main() {
    let _ = convert;
}
