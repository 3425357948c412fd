// A user-mode handle must not leave the scope of the process context it was made in.
use vmbus_kmcl::{Request, UserHandle};

fn convert(request: Request<'_>) {
    let raw = core::ptr::null_mut();
    let escaped = request.enter(|cx| UserHandle::new(raw, cx)).unwrap();
    let _ = escaped.map(UserHandle::to_kernel_handle);
}

fn main() {
    let _ = convert;
}
