// The inline token stays on the callback's thread (it is not `Send`); detach it to hand the
// packet to another thread.
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;

fn process_packet(packet: IncomingPacket<'_, Linked>) {
    std::thread::scope(|s| {
        s.spawn(move || packet.complete_empty());
    });
}

fn main() {
    let _ = process_packet;
}
