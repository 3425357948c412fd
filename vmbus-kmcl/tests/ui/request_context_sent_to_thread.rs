// A request context cannot be sent to a worker thread either: there the requestor's process
// is not current.
use vmbus_kmcl::Request;

fn convert(request: Request<'_>) {
    let _ = request.enter(|cx| {
        std::thread::scope(|s| {
            s.spawn(move || cx.defer(core::ptr::null_mut()).map(drop));
        });
    });
}

fn main() {
    let _ = convert;
}
