// Nor can the handle be used, or closed explicitly, after it moved into the channel.
use vmbus_kmcl::{DeviceRef, KernelHandle, ServerChannelInit};

fn bind(device: DeviceRef<'_>, vm: KernelHandle) -> ServerChannelInit<'_> {
    let mut channel = ServerChannelInit::allocate(device).unwrap();
    channel.set_vmbus_handle(vm).unwrap();
    let _ = vm.as_raw();
    let _ = vm.close();
    channel
}

fn main() {
    let _ = bind;
}
