// After its answer the token is gone: its payload cannot be read any more.
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;

fn process_packet(packet: IncomingPacket<'_, Linked>) {
    let payload = packet.data();
    packet.fail();
    let _ = payload.len();
}

fn main() {
    let _ = process_packet;
}
