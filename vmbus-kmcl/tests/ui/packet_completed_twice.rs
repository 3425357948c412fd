// An incoming packet is answered exactly once: completing it consumes the token.
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;

fn process_packet(packet: IncomingPacket<'_, Linked>) {
    packet.complete_empty();
    packet.complete_empty();
}

fn main() {
    let _ = process_packet;
}
