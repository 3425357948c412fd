// A channel cannot outlive the device object it was allocated for: its slot borrows the device,
// so the device cannot go away while the channel exists.
use core::pin::pin;
use core::ptr::NonNull;
use vmbus_kmcl::channel::{ChannelSlot, Handler, Server, ServerBuilder};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::DeviceRef;
use vmbus_kmcl_sys::DEVICE_OBJECT;

/// A driver's device, owning its device object.
struct Device(NonNull<DEVICE_OBJECT>);

impl Device {
    fn get(&self) -> DeviceRef<'_> {
        // SAFETY: (compile-only) the device object lives as long as `self`.
        unsafe { DeviceRef::from_raw(self.0) }
    }
}

fn run<H: Handler<Server, Linked> + 'static>(device: Device, handler: H) {
    let mut slot = pin!(ChannelSlot::new(device.get(), Linked, handler));
    let channel = ServerBuilder::allocate(slot.as_mut()).unwrap().enable().unwrap();
    drop(device);
    channel.start();
}

fn main() {}
