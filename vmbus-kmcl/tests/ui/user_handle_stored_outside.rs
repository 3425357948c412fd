// Nor may it be smuggled out of the scope through a variable of the enclosing function.
use vmbus_kmcl::{Request, UserHandle};

fn convert(request: Request<'_>) {
    let raw = core::ptr::null_mut();
    let mut outside = None;
    let _ = request.enter(|cx| outside = UserHandle::new(raw, cx).ok());
    let _ = outside.map(UserHandle::to_kernel_handle);
}

fn main() {
    let _ = convert;
}
