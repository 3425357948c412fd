// The memory a GPADL shares is borrowed by the handler's cell for as long as the channel's slot
// exists (a borrowing handler lives in `ChannelSlot::scope`): it cannot be dropped first.
use vmbus_kmcl::channel::gpadl::{GpadlCell, SharedBuffer};
use vmbus_kmcl::channel::{ChannelSlot, Client, Handler, OpenView};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::DeviceRef;

struct Vsc<'b> {
    buffer: &'b SharedBuffer<4096>,
    gpadl: GpadlCell<'b>,
}

impl Handler<Client, Linked> for Vsc<'_> {
    fn process_packet(&self, _: &OpenView<'_, Client, Linked>, packet: IncomingPacket<'_, Linked>) {
        packet.complete_empty();
    }
}

fn run(device: DeviceRef<'_>) {
    let buffer = SharedBuffer::<4096>::new();
    let handler = Vsc { buffer: &buffer, gpadl: GpadlCell::new() };
    ChannelSlot::scope(device, Linked, handler, |slot| {
        drop(buffer);
        let _ = slot.handler().gpadl.handle();
    });
}

fn main() {}
