// A server channel cannot outlive the device object it was allocated for.
use vmbus_kmcl::{DeviceRef, ServerChannelInit};

fn outlive<'dev>(device: DeviceRef<'dev>) -> ServerChannelInit<'static> {
    ServerChannelInit::allocate(device).unwrap()
}

fn main() {
    let _ = outlive;
}
