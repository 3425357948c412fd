// A GPADL is made from the open view a callback receives, never from the enabled channel
// outside the handler (which would let it outlive the closed callback).
use vmbus_kmcl::channel::gpadl::{GpadlCell, GpadlFlags, SharedBuffer};
use vmbus_kmcl::channel::{Channel, Client, Handler};
use vmbus_kmcl::dispatch::Linked;

static BUFFER: SharedBuffer<4096> = SharedBuffer::new();

fn run<H: Handler<Client, Linked>>(channel: &Channel<'_, Client, H, Linked>, cell: &GpadlCell<'static>) {
    let _ = cell.create(channel, &BUFFER, GpadlFlags::empty());
}

fn main() {}
