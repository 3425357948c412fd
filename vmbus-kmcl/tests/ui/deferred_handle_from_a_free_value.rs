// A deferred handle is made only from a request context, which proves where its value came
// from; pairing a free value with a process the driver chose is not possible.
use vmbus_kmcl::{DeferredHandle, ProcessRef};

fn defer(process: ProcessRef, raw: vmbus_kmcl_sys::HANDLE) -> DeferredHandle {
    DeferredHandle::new(process, raw)
}

fn main() {
    let _ = defer;
}
