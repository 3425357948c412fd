// The inline token lives only as long as its callback: it cannot be stored for later (detach
// it instead).
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;

fn process_packet(
    packet: IncomingPacket<'_, Linked>,
    later: &mut Option<IncomingPacket<'static, Linked>>,
) {
    *later = Some(packet);
}

fn main() {
    let _ = process_packet;
}
