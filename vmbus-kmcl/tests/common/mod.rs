//! Helpers shared by the channel test binaries: the sim's device objects, and a server and a
//! client channel offered, opened and started on one bus.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::pin::Pin;
use std::ptr::NonNull;

use vmbus_kmcl::channel::{
    Channel, ChannelSlot, Client, ClientBuilder, Handler, OpenView, Role, Server, ServerBuilder,
};
use vmbus_kmcl::dispatch::{ChannelBackend, KmclServer};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{DeviceRef, Guid};
use vmbus_kmcl_sim::Bus;

/// The bus's root (server) device object.
pub fn root(bus: &Bus) -> DeviceRef<'_> {
    // SAFETY: the bus's device objects live as long as the bus, which the reference borrows.
    unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) }
}

/// The bus's guest (client) device object.
pub fn guest(bus: &Bus) -> DeviceRef<'_> {
    // SAFETY: as above.
    unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).unwrap()) }
}

/// A handler, for either role, that completes every packet without a response.
pub struct CompleteAll;

impl<R: Role, K: ChannelBackend> Handler<R, K> for CompleteAll {
    fn process_packet(&self, _: &OpenView<'_, R, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

/// A server channel from `vsp_slot` offering `interface_type`/`instance`, enabled and started.
pub fn offer<'s, HS, S>(
    vsp_slot: Pin<&'s mut ChannelSlot<'_, HS, S>>,
    interface_type: Guid,
    instance: Guid,
) -> Channel<'s, Server, HS, S>
where
    HS: Handler<Server, S>,
    S: ChannelBackend + KmclServer,
{
    let mut vsp = ServerBuilder::allocate(vsp_slot).unwrap();
    vsp.set_interface_id(interface_type, instance).unwrap();
    let vsp = vsp.enable().unwrap();
    vsp.start();
    vsp
}

/// A server channel offering `interface_type`/`instance` from `vsp_slot`, started, and a client
/// channel from `vsc_slot` opening it; the bus has run until both are open and flowing.
pub fn open_pair<'s, HS, S, HC, C>(
    bus: &Bus,
    vsp_slot: Pin<&'s mut ChannelSlot<'_, HS, S>>,
    vsc_slot: Pin<&'s mut ChannelSlot<'_, HC, C>>,
    interface_type: Guid,
    instance: Guid,
) -> (Channel<'s, Server, HS, S>, Channel<'s, Client, HC, C>)
where
    HS: Handler<Server, S>,
    S: ChannelBackend + KmclServer,
    HC: Handler<Client, C>,
    C: ChannelBackend,
{
    let vsp = offer(vsp_slot, interface_type, instance);
    let mut vsc = ClientBuilder::allocate(vsc_slot).unwrap();
    vsc.set_target(interface_type, None).unwrap();
    let vsc = vsc.enable().unwrap();
    bus.run_until_idle();
    (vsp, vsc)
}

/// Runs `f` on a server slot (`server`, handler `vsp`, on the bus's root device) and a client
/// slot (`client`, handler `vsc`, on its guest device), each from [`ChannelSlot::scope`], so
/// the handlers and backends may borrow (the interface tables of [`both_backends`], a local
/// buffer). The client slot is dropped first, then the server slot, both before this returns.
pub fn with_slots<'b, HS, S, HC, C, R>(
    bus: &'b Bus,
    server: S,
    vsp: HS,
    client: C,
    vsc: HC,
    f: impl FnOnce(Pin<&mut ChannelSlot<'b, HS, S>>, Pin<&mut ChannelSlot<'b, HC, C>>) -> R,
) -> R
where
    S: ChannelBackend,
    C: ChannelBackend,
{
    ChannelSlot::scope(root(bus), server, vsp, |vsp_slot| {
        ChannelSlot::scope(guest(bus), client, vsc, |vsc_slot| f(vsp_slot, vsc_slot))
    })
}

/// Defines two tests running `$scenario(server, client)`: `$linked` with the linked exports,
/// `$tables` with the sim's interface tables (checked for leaks afterwards).
///
/// The list form, `tables: $server, $client; $check => $linked, $tables; ...`, defines the two
/// tests for each `$check`, the second with the tables `$server` and `$client` (expressions,
/// evaluated in each test, such as a binary's own `'static` tables).
#[allow(
    unused_macros,
    reason = "each test binary uses a different subset of the helpers"
)]
macro_rules! both_backends {
    (tables: $server:expr, $client:expr; $($check:ident => $linked:ident, $tables:ident;)*) => {$(
        #[test]
        fn $linked() {
            $check(vmbus_kmcl::dispatch::Linked, vmbus_kmcl::dispatch::Linked);
        }

        #[test]
        fn $tables() {
            $check($server, $client);
        }
    )*};
    ($linked:ident, $tables:ident, $scenario:expr) => {
        #[test]
        fn $linked() {
            $scenario(vmbus_kmcl::dispatch::Linked, vmbus_kmcl::dispatch::Linked);
        }

        #[test]
        fn $tables() {
            use vmbus_kmcl::dispatch::{ClientInterface, ServerInterface};
            let bus = vmbus_kmcl_sim::Bus::new();
            // SAFETY: the sim's tables stand for successful queries whose references are
            // handed over.
            let server = unsafe { ServerInterface::from_raw(bus.server_interface()) };
            // SAFETY: as above.
            let client = unsafe { ClientInterface::from_raw(bus.client_interface()) };
            let (server, client) = (server.unwrap(), client.unwrap());
            $scenario(&server, &client);
            drop((server, client));
            bus.assert_no_leaks();
        }
    };
}
