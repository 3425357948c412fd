// Server-only setters do not exist on a client builder.
use core::pin::Pin;
use vmbus_kmcl::channel::{ChannelSlot, Client, ClientBuilder, Handler};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::Guid;

fn configure<H: Handler<Client, Linked>>(slot: Pin<&mut ChannelSlot<'_, H, Linked>>) {
    let mut builder = ClientBuilder::allocate(slot).unwrap();
    builder.set_interface_id(Guid::NIL, Guid::NIL).unwrap();
}

fn main() {}
