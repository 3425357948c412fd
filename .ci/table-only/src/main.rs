//! A driver that calls KMCL only through the queried interface tables (`KMCL_CLIENT_INTERFACE_V1`
//! for a guest channel, `KMCL_SERVER_INTERFACE_V1` for the root-side seed flow and a server
//! channel), built without the `vmbkmcl`/`vmbkmclr` features: it must link, and its image must
//! import nothing from a KMCL driver (`.ci/table-only-link` checks both).
#![no_std]
#![no_main]

use core::ptr::NonNull;

use vmbus_kmcl::channel::{
    ChannelSlot, Client, ClientBuilder, Handler, OpenView, Server, ServerBuilder,
};
use vmbus_kmcl::dispatch::{ClientInterface, ServerInterface};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{guid, DeviceRef, Guid, NtStatus, Request, Result};
use vmbus_kmcl_sys::{HANDLE, KMCL_CLIENT_INTERFACE_V1, KMCL_SERVER_INTERFACE_V1, NTSTATUS, PVOID};

#[path = "../../../drivers/images/glue/rt.rs"]
mod rt;

const ECHO: Guid = guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b");

/// Completes every packet without a response.
struct Vsc;

impl<'t> Handler<Client, &'t ClientInterface> for Vsc {
    fn process_packet(
        &self,
        _: &OpenView<'_, Client, &'t ClientInterface>,
        packet: IncomingPacket<'_, &'t ClientInterface>,
    ) {
        packet.complete_empty();
    }
}

/// Completes every packet without a response.
struct Vsp;

impl<'t> Handler<Server, &'t ServerInterface> for Vsp {
    fn process_packet(
        &self,
        _: &OpenView<'_, Server, &'t ServerInterface>,
        packet: IncomingPacket<'_, &'t ServerInterface>,
    ) {
        packet.complete_empty();
    }
}

/// Root side: converts the worker's VMBus handle and offers the echo channel, all through the
/// server table.
#[inline(never)]
fn offer(
    device: DeviceRef<'_>,
    request: &Request<'_>,
    raw: HANDLE,
    table: KMCL_SERVER_INTERFACE_V1,
) -> Result<()> {
    // SAFETY: only reached with a table from a successful interface query (see DriverEntry).
    let kmcl = unsafe { ServerInterface::from_raw(table) }?;
    let vm = request.convert_vmbus_handle_with(&kmcl, raw)?;
    // The backend borrows `kmcl`: the slot lives in a scope.
    ChannelSlot::scope(device, &kmcl, Vsp, |slot| {
        let mut builder = ServerBuilder::allocate(slot)?;
        builder.set_vmbus_handle(vm)?.set_interface_id(ECHO, ECHO)?;
        let channel = builder.enable()?;
        channel.start();
        let _ = channel.try_send(b"hello")?;
        Ok(())
    })
}

/// Guest side: opens the echo channel through the client table and sends one request.
#[inline(never)]
fn run(device: DeviceRef<'_>, table: KMCL_CLIENT_INTERFACE_V1) -> Result<()> {
    // SAFETY: only reached with a table from a successful interface query (see DriverEntry).
    let kmcl = unsafe { ClientInterface::from_raw(table) }?;
    ChannelSlot::scope(device, &kmcl, Vsc, |slot| {
        let mut builder = ClientBuilder::allocate(slot)?;
        builder
            .set_target(ECHO, None)?
            .set_maximum_packet_size(256)?;
        let channel = builder.enable()?;
        let mut response = [0u8; 8];
        channel.request(b"ping", &mut response, None)?;
        channel.set_transaction_quota(4)?;
        drop(channel.disable());
        Ok(())
    })
}

/// The driver's entry point. A real VSC queries the table in its AddDevice; this one keeps
/// `run` reachable so that the linker has to resolve everything it uses.
///
/// # Safety
///
/// Called once by the I/O manager with a valid driver object and registry path.
#[no_mangle]
pub unsafe extern "system" fn DriverEntry(driver_object: PVOID, _registry_path: PVOID) -> NTSTATUS {
    if driver_object.is_null() {
        // Never true when the I/O manager calls us; keeps the code reachable for the linker.
        // SAFETY: not reached at run time (see above); the pointer only feeds the linker.
        let device = unsafe { DeviceRef::from_raw(NonNull::dangling()) };
        // SAFETY: as above.
        let request = unsafe { Request::from_raw(NonNull::dangling()) };
        let served = offer(
            device,
            &request,
            driver_object,
            KMCL_SERVER_INTERFACE_V1::default(),
        );
        return match served.and_then(|()| run(device, KMCL_CLIENT_INTERFACE_V1::default())) {
            Ok(()) => NtStatus::SUCCESS.into(),
            Err(error) => error.status().into(),
        };
    }
    NtStatus::SUCCESS.into()
}
