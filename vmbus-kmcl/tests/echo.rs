//! The echo VSP and VSC a new user writes: a server channel that answers every request with
//! its bytes, a client channel that sends three requests and checks the answers, a clean close,
//! no leaks. The only `unsafe` are the two lines wrapping the device objects.

use std::pin::pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use vmbus_kmcl::channel::{
    ChannelSlot, Client, ClientBuilder, Handler, OpenView, Server, ServerBuilder,
};
use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{guid, DeviceRef, Guid};
use vmbus_kmcl_sim::Bus;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const ECHO: Guid = guid!("e0c4a1b2-3d4e-4f50-8617-28394a5b6c7d");
const INSTANCE: Guid = guid!("e0c4a1b2-3d4e-4f50-8617-000000000001");

/// The protocol: a sequence number and a value, both ways.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Message {
    sequence: u32,
    value: u32,
}

/// The VSP: echoes each request, counting them.
#[derive(Default)]
struct EchoServer {
    requests: AtomicU32,
}

impl<K: ChannelBackend> Handler<Server, K> for EchoServer {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        match packet.read_exact::<Message>() {
            Ok(request) => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                packet.complete_with(&request);
            }
            Err(_malformed) => packet.fail(),
        }
    }
}

/// The VSC: the server never sends it anything unasked.
struct EchoClient;

impl<K: ChannelBackend> Handler<Client, K> for EchoClient {
    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.fail();
    }
}

#[test]
fn echo_vsp_and_vsc_exchange_three_requests_and_close_cleanly() -> vmbus_kmcl::Result<()> {
    let bus = Bus::new();
    // SAFETY: the sim's root device object lives as long as the bus.
    let root = unsafe { DeviceRef::from_raw(NonNull::new(bus.root_device()).unwrap()) };
    // SAFETY: the sim's guest device object lives as long as the bus.
    let guest = unsafe { DeviceRef::from_raw(NonNull::new(bus.guest_device()).unwrap()) };

    // The VSP offers the channel.
    let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, EchoServer::default()));
    let mut vsp = ServerBuilder::allocate(vsp_slot.as_mut())?;
    vsp.set_interface_id(ECHO, INSTANCE)?
        .set_maximum_packet_size(64)?
        .set_friendly_name(vmbus_kmcl::utf16!("Echo"))?;
    let vsp = vsp.enable()?;
    vsp.start();

    // The VSC opens it.
    let mut vsc_slot = pin!(ChannelSlot::new(guest, Linked, EchoClient));
    let mut vsc = ClientBuilder::allocate(vsc_slot.as_mut())?;
    vsc.set_target(ECHO, Some(INSTANCE))?;
    let vsc = vsc.enable()?;
    bus.run_until_idle();
    assert!(vsc.is_open() && vsp.is_open());

    for sequence in 1..=3 {
        let request = Message {
            sequence,
            value: sequence * 100,
        };
        let mut response = [0u8; 8];
        let reply = vsc.request(request.as_bytes(), &mut response, None)?;
        assert_eq!(Message::read_from_bytes(reply), Ok(request));
    }
    assert_eq!(vsp.handler().requests.load(Ordering::Relaxed), 3);

    // Clean close: the client closes, then the server rescinds.
    drop(vsc.disable());
    drop(vsp);
    bus.assert_no_leaks();
    Ok(())
}
