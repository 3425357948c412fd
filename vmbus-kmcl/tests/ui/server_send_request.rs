// The root may only send without waiting: server channels have no `send_request` or `post`.
use vmbus_kmcl::channel::{Channel, Handler, Server};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::send::{InlineFlags, Timeout};

fn ask<H: Handler<Server, Linked>>(channel: &Channel<'_, Server, H, Linked>) {
    let mut response = [0u8; 8];
    let _ = channel.send_request(
        b"version",
        InlineFlags::empty(),
        &mut response,
        Timeout::NoQueue,
    );
    let _ = channel.post(b"hello", InlineFlags::empty(), Timeout::NoQueue);
}

fn main() {}
