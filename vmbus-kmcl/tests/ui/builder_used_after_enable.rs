// Enabling consumes the builder.
use core::pin::Pin;
use vmbus_kmcl::channel::{ChannelSlot, Handler, Server, ServerBuilder};
use vmbus_kmcl::dispatch::Linked;

fn configure<H: Handler<Server, Linked>>(slot: Pin<&mut ChannelSlot<'_, H, Linked>>) {
    let mut builder = ServerBuilder::allocate(slot).unwrap();
    let _channel = builder.enable().unwrap();
    builder.set_maximum_packet_size(4096).unwrap();
}

fn main() {}
