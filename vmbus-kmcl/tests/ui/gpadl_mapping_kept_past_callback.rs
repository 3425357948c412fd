// A mapping made from a callback's view borrows that view: it cannot be kept in the handler
// past the callback.
use std::sync::Mutex;
use vmbus_kmcl::channel::gpadl::{GpadlHandle, GpadlMapping, ReadWrite};
use vmbus_kmcl::channel::{Handler, OpenView, Server};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;

struct Vsp {
    kept: Mutex<Option<GpadlMapping<'static, ReadWrite, Linked>>>,
}

impl Handler<Server, Linked> for Vsp {
    fn process_packet(&self, channel: &OpenView<'_, Server, Linked>, packet: IncomingPacket<'_, Linked>) {
        let mapping = channel.map_gpadl(GpadlHandle::from_raw(1)).unwrap();
        *self.kept.lock().unwrap() = Some(mapping);
        packet.complete_empty();
    }
}

fn main() {}
