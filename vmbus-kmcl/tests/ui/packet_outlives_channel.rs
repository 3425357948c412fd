// A packet borrows its channel: it cannot be kept (and sent or freed) after the channel went.
use vmbus_kmcl::channel::{Channel, Client, Handler};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::send::{SendCompletion, SendFlags};

fn late<H: Handler<Client, Linked> + SendCompletion<Linked>>(
    channel: Channel<'_, Client, H, Linked>,
) {
    let packet = channel.allocate_packet().unwrap();
    drop(channel);
    let _ = packet.send(b"late", SendFlags::empty());
}

fn main() {}
