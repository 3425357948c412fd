//! The seed flow of a VSP, run on the emulated bus of `vmbus-kmcl-sim`:
//!
//! 1. the VM worker process opens the VM's VMBus device (a user-mode handle in its table);
//! 2. it sends the handle to the driver in an IOCTL; the dispatch routine runs in the worker's
//!    thread, so it converts the handle into a kernel handle there;
//! 3. the kernel handle, valid in any process, goes to a server channel being initialised,
//!    which owns it from then on and closes it after its cleanup.
//!
//! The same conversion attempted from another process fails, and at the end the emulator's
//! accounting shows that every handle and channel was released exactly once.
//!
//! Run with `cargo run -p vmbus-kmcl --example seed_flow`.

use std::ptr::NonNull;

use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, Server, ServerBuilder};
use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{with_current_process, DeviceRef, KernelHandle, Result, UserHandle};
use vmbus_kmcl_sim::nt::{self, Process};
use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::HANDLE;

/// The VSP's channel handler: this example only sets the channel up, so it fails any packet.
struct Vsp;

impl<K: ChannelBackend> Handler<Server, K> for Vsp {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        packet.fail();
    }
}

/// What the driver's IRP_MJ_DEVICE_CONTROL handler does with the handle in the IOCTL buffer.
fn on_set_vmbus_handle_ioctl(raw: HANDLE) -> Result<KernelHandle> {
    with_current_process(|cx| UserHandle::new(raw, cx).to_kernel_handle())
}

fn main() -> Result<()> {
    let bus = Bus::new();
    let worker = Process::new("vmwp.exe");
    let raw = bus.open_vmbus_handle_in(&worker);
    println!(
        "worker process {} opened the VMBus of bus {}: user handle {raw:?}",
        worker.id(),
        bus.id()
    );

    // The IOCTL arrives from another process first: the value means nothing there.
    let intruder = Process::new("intruder.exe");
    let refused = {
        let _thread = intruder.enter();
        on_set_vmbus_handle_ioctl(raw)
    };
    println!(
        "the same value converted in process {}: {}",
        intruder.id(),
        refused.as_ref().unwrap_err()
    );

    // The real IOCTL, in the worker's thread.
    let kernel = {
        let _thread = worker.enter();
        on_set_vmbus_handle_ioctl(raw)?
    };
    println!("converted in the worker process: {kernel:?}");

    // Any thread, any process: set up the server channel for that VM.
    // SAFETY: the bus's root device object stays valid as long as `bus`, which outlives it.
    let device = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).expect("a device")) };
    let mut slot = std::pin::pin!(ChannelSlot::new(device, Linked, Vsp));
    let mut channel = ServerBuilder::allocate(slot.as_mut())?;
    channel.set_vmbus_handle(kernel)?;
    println!(
        "server channel {:?} bound to the VM: {}",
        channel.as_raw(),
        bus.server_vmbus_handle_set(channel.as_raw())
    );

    // Cleaning the channel up closes the kernel handle it owns.
    drop(channel);
    println!(
        "after cleanup: {} kernel handles open for the bus, {} user handles in the worker",
        nt::open_kernel_handles_for_bus(bus.id()),
        worker.open_handles()
    );
    bus.assert_no_leaks();
    println!("no leaks, no double close");
    Ok(())
}
