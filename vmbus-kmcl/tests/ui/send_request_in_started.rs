// The started callback's view offers no waiting request (it would never return there): only
// `post_nowait`.
use vmbus_kmcl::channel::{Client, Handler, OpenView};
use vmbus_kmcl::dispatch::ChannelBackend;
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::send::{InlineFlags, Timeout};

struct Vsc;

impl<K: ChannelBackend> Handler<Client, K> for Vsc {
    fn started(&self, channel: &OpenView<'_, Client, K>) {
        let mut response = [0u8; 8];
        let _ = channel.send_request(
            b"version",
            InlineFlags::empty(),
            &mut response,
            Timeout::Infinite,
        );
        let _ = channel.post(b"hello", InlineFlags::empty(), Timeout::Infinite);
    }

    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

fn main() {}
