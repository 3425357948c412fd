// A save session borrows its channel exclusively: a second save cannot begin while the first
// one runs, and the channel cannot be dropped under it.
use vmbus_kmcl::channel::{Channel, Handler, Server};
use vmbus_kmcl::dispatch::Linked;

fn run<H: Handler<Server, Linked>>(mut channel: Channel<'_, Server, H, Linked>) {
    let first = channel.save().unwrap();
    let second = channel.save().unwrap();
    drop((first, second));
}

fn main() {}
