// A user-mode handle means something only on the thread that runs in its process.
use vmbus_kmcl::{Request, UserHandle};

fn convert(request: Request<'_>) {
    let raw = core::ptr::null_mut();
    let _ = request.enter(|cx| {
        let handle = UserHandle::new(raw, cx).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || handle.to_kernel_handle());
        });
    });
}

fn main() {
    let _ = convert;
}
