// Caller storage must outlive every packet in flight: it is named from the handler (or is
// 'static), so a local buffer is refused.
use vmbus_kmcl::channel::{Channel, Client, Handler};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::send::{PacketStorage, SendCompletion};

fn local<H: Handler<Client, Linked> + SendCompletion<Linked>>(
    channel: &Channel<'_, Client, H, Linked>,
) {
    let storage = PacketStorage::<512>::new();
    let _ = channel.storage_packet(|_: &H| &storage);
}

fn main() {}
