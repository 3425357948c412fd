// The external-data view borrows the token, so it cannot be used after the completion that
// unpins the guest pages behind it.
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::{ExternalData, ExternalDataFlags, IncomingPacket};

fn process_packet(packet: IncomingPacket<'_, Linked>) {
    if let Ok(ExternalData::Ready(view)) = packet.external_data(ExternalDataFlags::empty()) {
        packet.complete_empty();
        let _ = view.as_raw();
    }
}

fn main() {
    let _ = process_packet;
}
