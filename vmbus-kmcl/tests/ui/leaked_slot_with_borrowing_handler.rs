// A slot whose handler borrows cannot be leaked through the safe API: `ChannelSlot::new`
// requires a `'static` handler, so a leaked `Box::pin` of it cannot outlive the counter its
// handler borrows; and `ChannelSlot::scope` hands out its slot only for the closure's call.
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, Server};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::DeviceRef;

struct Counting<'b> {
    hits: &'b AtomicU32,
}

impl Handler<Server, Linked> for Counting<'_> {
    fn process_packet(&self, _: &OpenView<'_, Server, Linked>, packet: IncomingPacket<'_, Linked>) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        packet.complete_empty();
    }
}

fn leak_through_new(device: DeviceRef<'static>) {
    let hits = Box::new(AtomicU32::new(0));
    let slot = Box::pin(ChannelSlot::new(device, Linked, Counting { hits: &hits }));
    core::mem::forget(slot);
    drop(hits);
}

fn leak_out_of_scope(device: DeviceRef<'static>) {
    let hits = AtomicU32::new(0);
    let mut kept: Option<Pin<&mut ChannelSlot<'static, Counting<'_>, Linked>>> = None;
    ChannelSlot::scope(device, Linked, Counting { hits: &hits }, |slot| kept = Some(slot));
    drop(kept);
}

fn main() {}
