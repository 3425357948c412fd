// KMCL allows deferral to PASSIVE_LEVEL only inline in the callback: a detached token has no
// `defer_to_passive`.
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;

fn process_packet(packet: IncomingPacket<'_, Linked>) {
    let deferred = packet.detach();
    deferred.defer_to_passive();
}

fn main() {
    let _ = process_packet;
}
