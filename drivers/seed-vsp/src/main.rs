//! A minimal VSP driver image built on vmbus-kmcl: it links the root-side KMCL exports
//! (`vmbkmclr.sys`) and ntoskrnl's services through `raw-dylib`, from any host, with no WDK.
//!
//! The seed flow lives in [`vmbus_handle_from_worker`] and [`bind_channel`]; a complete driver
//! calls them from its `IRP_MJ_DEVICE_CONTROL` dispatch routine (in the worker process's thread)
//! and from its channel setup. `DriverEntry` only proves the image loads and links.
#![no_std]
#![no_main]

use core::pin::{pin, Pin};

use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, Server, ServerBuilder};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{DeviceRef, KernelHandle, NtStatus, Request, Result};
use vmbus_kmcl_sys::{HANDLE, NTSTATUS, PVOID};

mod rt;

/// The VSP's channel handler. This example only sets channels up; it fails any packet.
pub struct Vsp;

impl Handler<Server, Linked> for Vsp {
    fn process_packet(&self, _: &OpenView<'_, Server, Linked>, packet: IncomingPacket<'_, Linked>) {
        packet.fail();
    }
}

/// Converts the VMBus handle the worker process sent in an IOCTL: called by the dispatch
/// routine with the IRP it received; the request checks that it runs in the worker's thread.
#[inline(never)]
pub fn vmbus_handle_from_worker(request: &Request<'_>, raw: HANDLE) -> Result<KernelHandle> {
    request.convert_vmbus_handle(raw)
}

/// Allocates a server channel in `slot` and points it at the worker's VM; the channel owns the
/// kernel handle from now on.
#[inline(never)]
pub fn bind_channel<'s>(
    slot: Pin<&'s mut ChannelSlot<'_, Vsp, Linked>>,
    vm: KernelHandle,
) -> Result<ServerBuilder<'s, Vsp, Linked>> {
    let mut channel = ServerBuilder::allocate(slot)?;
    channel.set_vmbus_handle(vm)?;
    Ok(channel)
}

/// The driver's entry point. A real VSP creates its control device here; this example keeps the
/// seed-flow functions alive so the linker must resolve their imports.
///
/// # Safety
///
/// Called once by the I/O manager with a valid driver object and registry path.
#[no_mangle]
pub unsafe extern "system" fn DriverEntry(driver_object: PVOID, registry_path: PVOID) -> NTSTATUS {
    if driver_object.is_null() {
        // Never true when the I/O manager calls us; keeps the code reachable for the linker.
        // SAFETY: not reached at run time (see above); the pointer only feeds the linker.
        let request = unsafe { Request::from_raw(core::ptr::NonNull::dangling()) };
        // An opaque value, so that the conversion is not optimised out.
        let kernel = match vmbus_handle_from_worker(&request, registry_path) {
            Ok(kernel) => kernel,
            Err(error) => return error.status().into(),
        };
        // SAFETY: not reached at run time (see above); the pointer only feeds the linker.
        let device = unsafe { DeviceRef::from_raw(core::ptr::NonNull::dangling()) };
        let mut slot = pin!(ChannelSlot::new(device, Linked, Vsp));
        return match bind_channel(slot.as_mut(), kernel) {
            Ok(_channel) => NtStatus::SUCCESS.into(),
            Err(error) => error.status().into(),
        };
    }
    NtStatus::SUCCESS.into()
}
