//! What the kernel glue supplies, on the simulator: the device objects, the interface table
//! and the IRP. The only `unsafe` of the demo (and of the drivers' sim tests, which include
//! this file); the system-space address of a mapped GPADL is `echo_vsp::sim::SimMapper`.

use std::ptr::NonNull;

use vmbus_kmcl::dispatch::ClientInterface;
use vmbus_kmcl::{DeviceRef, Request};
use vmbus_kmcl_sim::nt::Irp;
use vmbus_kmcl_sim::Bus;

/// The root (VSP) and guest (VSC) device objects of `bus`.
pub fn devices(bus: &Bus) -> (DeviceRef<'_>, DeviceRef<'_>) {
    // SAFETY: the sim's device objects live as long as the bus.
    let root = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).expect("root")) };
    // SAFETY: as above.
    let guest = unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).expect("guest")) };
    (root, guest)
}

/// The client interface table of `bus`, as the VSC's `IRP_MN_QUERY_INTERFACE` returns it.
pub fn client_table(bus: &Bus) -> vmbus_kmcl::Result<ClientInterface> {
    // SAFETY: the sim's table stands for a successful query whose reference is handed over.
    unsafe { ClientInterface::from_raw(bus.client_interface()) }
}

/// The driver's view of a simulated IRP.
pub fn request(irp: &Irp) -> Request<'_> {
    // SAFETY: the simulated IRP outlives the borrow of `irp`.
    unsafe { Request::from_raw(NonNull::new(irp.as_ptr()).expect("an IRP")) }
}
