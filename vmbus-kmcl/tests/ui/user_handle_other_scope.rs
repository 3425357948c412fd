// Each scope has its own brand: a handle of one scope does not fit another scope's context.
use vmbus_kmcl::{with_current_process, ProcessContext, UserHandle};

fn convert_in<'p>(_cx: &'p ProcessContext<'p>, handle: UserHandle<'p>) {
    let _ = handle.to_kernel_handle();
}

fn main() {
    let raw = core::ptr::null_mut();
    with_current_process(|outer| {
        let handle = UserHandle::new(raw, outer);
        with_current_process(|inner| convert_in(inner, handle));
    });
}
