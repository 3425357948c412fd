//! The seed flow of a VSP, run on the emulated bus of `vmbus-kmcl-sim`:
//!
//! 1. the VM worker process opens the VM's VMBus device (a user-mode handle in its table);
//! 2. it sends the handle to the driver in an IOCTL; the dispatch routine runs in the worker's
//!    thread, checks that through the request (requestor process, previous mode, IRQL) and
//!    converts the handle into a kernel handle there;
//! 3. the kernel handle, valid in any process, moves into a server channel being initialised,
//!    which closes it after its cleanup.
//!
//! The same request handled on a system worker thread is refused, and at the end the emulator's
//! accounting shows that every handle and channel was released exactly once.
//!
//! Run with `cargo run -p vmbus-kmcl --example seed_flow`.

use std::ptr::NonNull;

use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, Server, ServerBuilder};
use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{DeviceRef, KernelHandle, Request, Result};
use vmbus_kmcl_sim::nt::{self, Irp, Process};
use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::HANDLE;

/// The VSP's channel handler: this example only sets the channel up, so it fails any packet.
struct Vsp;

impl<K: ChannelBackend> Handler<Server, K> for Vsp {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        packet.fail();
    }
}

/// What the driver's IRP_MJ_DEVICE_CONTROL handler does with the IRP and the handle in its
/// IOCTL buffer.
fn on_set_vmbus_handle_ioctl(irp: &Irp, raw: HANDLE) -> Result<KernelHandle> {
    // SAFETY: the simulated IRP outlives the request.
    let request = unsafe { Request::from_raw(NonNull::new(irp.as_ptr()).expect("an IRP")) };
    request.convert_vmbus_handle(raw)
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

    // A driver that handles the IOCTL on a system worker thread is refused: there the value
    // would be looked up in the System process's table. (The worker's thread waits in the
    // kernel while its request is pending.)
    let refused = {
        let thread = worker.enter();
        let irp = thread.issue_irp();
        let value = raw.addr();
        std::thread::spawn(move || {
            on_set_vmbus_handle_ioctl(&irp, std::ptr::without_provenance_mut(value)).map(drop)
        })
        .join()
        .expect("the worker thread ran")
    };
    println!(
        "the same request handled on a system thread: {}",
        refused.as_ref().unwrap_err()
    );

    // The real IOCTL, in the worker's thread.
    let kernel = {
        let thread = worker.enter();
        on_set_vmbus_handle_ioctl(&thread.issue_irp(), raw)?
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
