// A blocking request from the started callback would never return (the incoming queue is not
// running yet): only the post-started view has `request`.
use vmbus_kmcl::channel::{Client, Handler, OpenView};
use vmbus_kmcl::dispatch::ChannelBackend;
use vmbus_kmcl::packet::IncomingPacket;

struct Negotiator;

impl<K: ChannelBackend> Handler<Client, K> for Negotiator {
    fn started(&self, channel: &OpenView<'_, Client, K>) {
        let mut response = [0u8; 8];
        let _ = channel.request(b"version", &mut response, None);
    }
    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

fn main() {}
