// The server channel takes the kernel handle naming its VM: nothing else can close it while
// the channel may still use it.
use core::pin::Pin;
use vmbus_kmcl::channel::{ChannelSlot, Handler, Server, ServerBuilder};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::KernelHandle;

fn bind<H: Handler<Server, Linked>>(slot: Pin<&mut ChannelSlot<'_, H, Linked>>, vm: KernelHandle) {
    let mut channel = ServerBuilder::allocate(slot).unwrap();
    channel.set_vmbus_handle(vm).unwrap();
    drop(vm);
    drop(channel);
}

fn main() {}
