// Server channels need the server-only functions: a client table cannot allocate one.
use core::pin::Pin;
use vmbus_kmcl::channel::{ChannelSlot, Handler, Server, ServerBuilder};
use vmbus_kmcl::dispatch::ClientInterface;

fn offer<'t, H: Handler<Server, &'t ClientInterface>>(
    slot: Pin<&mut ChannelSlot<'_, H, &'t ClientInterface>>,
) {
    let _ = ServerBuilder::allocate(slot);
}

fn main() {}
