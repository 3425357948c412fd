// A sent packet belongs to KMCL until its completion: it cannot be sent again.
use vmbus_kmcl::channel::{Channel, Client, Handler};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::send::{SendCompletion, SendFlags};

fn twice<H: Handler<Client, Linked> + SendCompletion<Linked>>(
    channel: &Channel<'_, Client, H, Linked>,
) {
    let packet = channel.allocate_packet().unwrap();
    let _ = packet.send(b"one", SendFlags::empty());
    let _ = packet.send(b"two", SendFlags::empty());
}

fn main() {}
