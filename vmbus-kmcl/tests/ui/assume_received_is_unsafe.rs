// Vouching that a value came from the attached process is the caller's promise: `unsafe`.
use vmbus_kmcl::{ProcessRef, UserHandle};

fn convert(value: usize, chosen: &ProcessRef) {
    let _ = chosen.attach(move |cx| {
        let raw = core::ptr::without_provenance_mut(value);
        UserHandle::assume_received(raw, cx).map(UserHandle::to_kernel_handle)
    });
}

fn main() {
    let _ = convert;
}
