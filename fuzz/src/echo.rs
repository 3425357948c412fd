//! A small echo VSP written with the safe `vmbus-kmcl` API, run under the sim's hostile guest.
//!
//! The protocol: an 8-byte [`Message`] (sequence number and value) echoed back as the
//! completion. A payload of any other length is answered with an empty completion, so that a
//! malformed packet does not stop the incoming queue and the rest of the input still reaches
//! the parser.

use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};

use arbitrary::Arbitrary;
use vmbus_kmcl::channel::{Channel, ChannelSlot, Handler, OpenView, Server, ServerBuilder};
use vmbus_kmcl::dispatch::{ChannelBackend, Linked};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::{guid, Guid};
use vmbus_kmcl_sim::fuzz::{save_restore_in_place, GuestGpadls, HostileGuest, Vsp};
use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::{GUID, VMBCHANNEL};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The echo interface type.
pub const ECHO: Guid = guid!("e0c4a1b2-3d4e-4f50-8617-28394a5b6c7d");
/// The echo channel instance.
pub const INSTANCE: Guid = guid!("e0c4a1b2-3d4e-4f50-8617-000000000001");

/// A request and its echo.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Arbitrary, Clone, Copy, Debug)]
#[repr(C)]
pub struct Message {
    /// Sequence number.
    pub sequence: u32,
    /// Value.
    pub value: u32,
}

/// The VSP's handler: echoes each well-formed request, counting them.
#[derive(Default)]
pub struct EchoServer {
    /// Requests echoed.
    pub requests: AtomicU32,
}

impl<K: ChannelBackend> Handler<Server, K> for EchoServer {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        match packet.read_exact::<Message>() {
            Ok(request) => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                packet.complete_with(&request);
            }
            Err(_malformed) => packet.complete_empty(),
        }
    }
}

/// The echo VSP as the hostile guest sees it.
pub struct EchoVsp<'s>(pub Channel<'s, Server, EchoServer, Linked>);

impl Vsp for EchoVsp<'_> {
    type Request = Message;

    fn channel(&self) -> VMBCHANNEL {
        self.0.as_raw()
    }

    fn encode(&self, request: &Message, _gpadls: &GuestGpadls<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(request.as_bytes());
    }

    fn pause(&mut self) {
        // The harness runs at PASSIVE_LEVEL, so this cannot fail; a failure is not a finding.
        let _ = self.0.pause();
    }

    fn resume(&mut self) {
        self.0.start();
    }

    fn save_restore(&mut self) -> bool {
        // SAFETY: the VSP's live, enabled server channel, used only by this thread, at
        // PASSIVE_LEVEL outside its callbacks; the echo VSP keeps no state of its own.
        let restored = unsafe { save_restore_in_place(self.0.as_raw()) };
        assert_eq!(restored, Ok(()), "the echo VSP's save and restore failed");
        true
    }
}

/// The GUID in the sys crate's form.
fn raw_guid(g: Guid) -> GUID {
    g.into()
}

/// One input: a fresh bus, the echo VSP offered on it, the hostile guest's actions.
pub fn run(data: &[u8]) {
    let bus = Bus::new();
    let mut slot = pin!(ChannelSlot::new(
        crate::root(&bus),
        Linked,
        EchoServer::default()
    ));
    let mut builder = ServerBuilder::allocate(slot.as_mut()).expect("allocate");
    builder
        .set_interface_id(ECHO, INSTANCE)
        .expect("interface id")
        .set_maximum_packet_size(64)
        .expect("packet size")
        .set_maximum_external_data(16 * 4096, 4)
        .expect("external data");
    let channel = builder.enable().expect("enable");
    channel.start();
    HostileGuest::new(raw_guid(ECHO)).run(&bus, EchoVsp(channel), data);
    bus.assert_no_leaks();
}
