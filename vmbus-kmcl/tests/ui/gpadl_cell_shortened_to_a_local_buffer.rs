// A cell's lifetime is invariant: a `GpadlCell<'static>` kept by the handler cannot be
// reborrowed as a cell of a buffer local to the callback, whose GPADL would outlive it.
use vmbus_kmcl::channel::gpadl::{GpadlCell, GpadlFlags, SharedBuffer};
use vmbus_kmcl::channel::{Client, Handler, OpenView};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::Result;

struct Vsc {
    gpadl: GpadlCell<'static>,
}

impl Handler<Client, Linked> for Vsc {
    fn opened(&self, channel: &OpenView<'_, Client, Linked>) -> Result<()> {
        let local = SharedBuffer::<4096>::new();
        self.gpadl.create(channel, &local, GpadlFlags::empty())?;
        Ok(())
    }
    fn process_packet(&self, _: &OpenView<'_, Client, Linked>, packet: IncomingPacket<'_, Linked>) {
        packet.complete_empty();
    }
}

fn main() {}
