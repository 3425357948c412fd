// The proof of the current process is not valid on another thread either.
use vmbus_kmcl::{Request, UserHandle};

fn convert(request: Request<'_>) {
    let raw = core::ptr::null_mut();
    let _ = request.enter(|cx| {
        std::thread::scope(|s| {
            s.spawn(|| UserHandle::new(raw, cx).map(drop));
        });
    });
}

fn main() {
    let _ = convert;
}
