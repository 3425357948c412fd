// Init setters belong to the builder: an enabled channel cannot be configured.
use core::pin::Pin;
use vmbus_kmcl::channel::{ChannelSlot, Handler, Server, ServerBuilder};
use vmbus_kmcl::dispatch::Linked;

fn configure<H: Handler<Server, Linked>>(slot: Pin<&mut ChannelSlot<'_, H, Linked>>) {
    let channel = ServerBuilder::allocate(slot).unwrap().enable().unwrap();
    channel.set_maximum_packet_size(4096).unwrap();
}

fn main() {}
