// A sent packet cannot be freed (dropped) before its completion: sending consumed it.
use vmbus_kmcl::channel::{Channel, Client, Handler};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::send::{SendCompletion, SendFlags};

fn free_early<H: Handler<Client, Linked> + SendCompletion<Linked> + Storage>(
    channel: &Channel<'_, Client, H, Linked>,
) {
    let packet = channel.storage_packet(|h: &H| h.storage()).unwrap();
    let _ = packet.send(b"one", SendFlags::WAIT_FOR_COMPLETION);
    drop(packet);
}

trait Storage {
    fn storage(&self) -> &vmbus_kmcl::send::PacketStorage<512>;
}

fn main() {}
