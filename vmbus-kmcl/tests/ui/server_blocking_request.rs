// The root may not wait in a synchronous request: server channels have no `request`.
use vmbus_kmcl::channel::{Channel, Handler, Server};
use vmbus_kmcl::dispatch::Linked;

fn ask<H: Handler<Server, Linked>>(channel: &Channel<'_, Server, H, Linked>) {
    let mut response = [0u8; 8];
    let _ = channel.request(b"version", &mut response, None);
}

fn main() {}
