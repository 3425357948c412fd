// A GPADL mapping borrows the server channel it was mapped on: the channel cannot be dropped
// (disabled, cleaned up) while the mapping exists.
use vmbus_kmcl::channel::gpadl::GpadlHandle;
use vmbus_kmcl::channel::{Channel, Handler, Server};
use vmbus_kmcl::dispatch::Linked;

fn run<H: Handler<Server, Linked>>(channel: Channel<'_, Server, H, Linked>) {
    let mapping = channel.map_gpadl(GpadlHandle::from_raw(1)).unwrap();
    drop(channel);
    let _ = mapping.as_raw();
}

fn main() {}
