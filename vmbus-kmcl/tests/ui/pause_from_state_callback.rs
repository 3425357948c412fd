// KMCL forbids pausing (or starting) a channel from its state callbacks: their views have no
// such method.
use vmbus_kmcl::channel::{Handler, OpenView, Server};
use vmbus_kmcl::dispatch::ChannelBackend;
use vmbus_kmcl::packet::IncomingPacket;

struct Pauser;

impl<K: ChannelBackend> Handler<Server, K> for Pauser {
    fn started(&self, channel: &OpenView<'_, Server, K>) {
        channel.pause();
    }
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

fn main() {}
