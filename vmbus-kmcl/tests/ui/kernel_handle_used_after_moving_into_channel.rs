// Nor can the handle be used, or closed explicitly, after it moved into the channel.
use core::pin::Pin;
use vmbus_kmcl::channel::{ChannelSlot, Handler, Server, ServerBuilder};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::KernelHandle;

fn bind<'s, H: Handler<Server, Linked>>(
    slot: Pin<&'s mut ChannelSlot<'_, H, Linked>>,
    vm: KernelHandle,
) -> ServerBuilder<'s, H, Linked> {
    let mut channel = ServerBuilder::allocate(slot).unwrap();
    channel.set_vmbus_handle(vm).unwrap();
    let _ = vm.as_raw();
    let _ = vm.close();
    channel
}

fn main() {}
