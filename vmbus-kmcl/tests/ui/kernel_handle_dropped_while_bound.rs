// The channel owns the kernel handle naming its VM: once moved in, the handle cannot be closed
// while the channel may still use it.
use vmbus_kmcl::{DeviceRef, KernelHandle, ServerChannelInit};

fn bind(device: DeviceRef<'_>, vm: KernelHandle) {
    let mut channel = ServerChannelInit::allocate(device).unwrap();
    channel.set_vmbus_handle(vm).unwrap();
    drop(vm);
    drop(channel);
}

fn main() {
    let _ = bind;
}
