//! Packets a server holds (detached tokens) when the channel is rescinded, when the guest
//! crashes, and while the transaction quota holds deliveries back: every token is completed,
//! nothing leaks. Both backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmbus_kmcl::channel::{
    Client, ClientBuilder, Handler, OpenView, Sent, Server, ServerBuilder, StoppedView,
};
use vmbus_kmcl::dispatch::{ChannelBackend, ClientInterface, KmclServer, Linked, ServerInterface};
use vmbus_kmcl::packet::{DeferredPacket, IncomingPacket};
use vmbus_kmcl::{guid, Guid};
use vmbus_kmcl_sim::Bus;

#[macro_use]
mod common;
use common::{open_pair, with_slots};

const TYPE: Guid = guid!("0f0e0d0c-0b0a-4908-8706-050403020100");
const INSTANCE: Guid = guid!("0f0e0d0c-0b0a-4908-8706-000000000001");

/// A server that keeps every packet for later and, when told to, completes what it holds as
/// soon as the flow stops (KMCL waits for those packets before the pause or close finishes).
struct Holder<K: ChannelBackend> {
    held: Mutex<Vec<DeferredPacket<K>>>,
    delivered: Mutex<Vec<Vec<u8>>>,
    release_on_suspend: AtomicBool,
    log: Mutex<Vec<&'static str>>,
}

impl<K: ChannelBackend> Holder<K> {
    fn new() -> Self {
        Self {
            held: Mutex::new(Vec::new()),
            delivered: Mutex::new(Vec::new()),
            release_on_suspend: AtomicBool::new(true),
            log: Mutex::new(Vec::new()),
        }
    }

    /// Completes the oldest held packet with an empty response; false when none is held.
    fn complete_one(&self) -> bool {
        let mut held = self.held.lock().unwrap();
        if held.is_empty() {
            return false;
        }
        held.remove(0).complete_empty();
        true
    }

    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl<K: ChannelBackend> Handler<Server, K> for Holder<K> {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        self.delivered.lock().unwrap().push(packet.data().to_vec());
        self.held.lock().unwrap().push(packet.detach());
    }

    fn suspend(&self, _: &StoppedView<'_, Server, K>) {
        self.log.lock().unwrap().push("suspend");
        if self.release_on_suspend.load(Ordering::SeqCst) {
            for packet in self.held.lock().unwrap().drain(..) {
                packet.complete_empty();
            }
        }
    }

    fn closed(&self, _: &StoppedView<'_, Server, K>) {
        self.log.lock().unwrap().push("closed");
    }
}

/// A client that expects nothing back but completions.
struct Quiet;

impl<K: ChannelBackend> Handler<Client, K> for Quiet {
    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

/// What a scenario does once both channels are open, the server holding `sent` packets.
enum Ending {
    /// The server rescinds its offer.
    Rescind,
    /// The guest's partition crashes.
    GuestCrash,
}

fn held_packets_are_completed_when_the_flow_stops<S, C>(server: S, client: C, ending: Ending)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let bus = Bus::new();
    let (vsp, vsc) = (Holder::<S>::new(), Quiet);
    with_slots(&bus, server, vsp, client, vsc, |mut vsp_slot, vsc_slot| {
        let (vsp, vsc) = open_pair(&bus, vsp_slot.as_mut(), vsc_slot, TYPE, INSTANCE);

        for message in [&b"one"[..], b"two", b"three"] {
            assert_eq!(vsc.try_send(message), Ok(Sent::Queued));
        }
        bus.run_until_idle();
        assert_eq!(vsp.handler().held(), 3);
        assert_eq!(
            bus.channel_info(vsp.as_raw()).unwrap().outstanding_incoming,
            3
        );

        match ending {
            Ending::Rescind => {
                let vsp = vsp.disable();
                assert_eq!(*vsp.handler().log.lock().unwrap(), ["suspend", "closed"]);
                drop(vsp);
                bus.run_until_idle();
                assert!(!vsc.is_open());
            }
            Ending::GuestCrash => {
                assert!(bus.crash_peer_of(vsp.as_raw()));
                bus.run_until_idle();
                assert_eq!(*vsp.handler().log.lock().unwrap(), ["suspend", "closed"]);
                assert!(!vsp.is_open());
                drop(vsp);
            }
        }
        drop(vsc);
        let holder = vsp_slot.handler();
        assert_eq!(holder.held(), 0, "every held token was completed");
        assert_eq!(
            *holder.delivered.lock().unwrap(),
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    });
    assert!(bus.take_violations().is_empty());
    bus.assert_no_leaks();
}

fn quota_holds_deliveries_back_until_completions<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let bus = Bus::new();
    let vsp = Holder::<S>::new();
    with_slots(&bus, server, vsp, client, Quiet, |vsp_slot, vsc_slot| {
        let mut vsp = ServerBuilder::allocate(vsp_slot).unwrap();
        vsp.set_interface_id(TYPE, INSTANCE).unwrap();
        let vsp = vsp.enable().unwrap();
        vsp.set_transaction_quota(2).unwrap();
        vsp.start();
        let mut vsc = ClientBuilder::allocate(vsc_slot).unwrap();
        vsc.set_target(TYPE, None).unwrap();
        let vsc = vsc.enable().unwrap();
        bus.run_until_idle();

        for i in 0..5u8 {
            assert_eq!(vsc.try_send(&[i]), Ok(Sent::Queued));
        }
        bus.run_until_idle();
        assert_eq!(vsp.handler().held(), 2, "the quota stops deliveries at 2");
        // Each completion lets one more packet in.
        assert!(vsp.handler().complete_one());
        bus.run_until_idle();
        assert_eq!(vsp.handler().held(), 2);
        assert_eq!(vsp.handler().delivered.lock().unwrap().len(), 3);
        // Raising the quota does not restart a stalled queue by itself; completions do.
        vsp.set_transaction_quota(10).unwrap();
        assert!(vsp.handler().complete_one());
        bus.run_until_idle();
        assert_eq!(vsp.handler().delivered.lock().unwrap().len(), 5);
        while vsp.handler().complete_one() {}
        bus.run_until_idle();
        assert_eq!(
            *vsp.handler().delivered.lock().unwrap(),
            [[0u8], [1], [2], [3], [4]]
        );
        assert_eq!(
            bus.channel_info(vsp.as_raw()).unwrap().outstanding_incoming,
            0
        );
        drop(vsc);
        drop(vsp);
    });
    bus.assert_no_leaks();
}

/// Runs a scenario once with the linked exports and once with the interface tables.
macro_rules! both_backends {
    ($linked:ident, $tables:ident, $scenario:expr) => {
        #[test]
        fn $linked() {
            $scenario(Linked, Linked);
        }

        #[test]
        fn $tables() {
            let bus = Bus::new();
            // SAFETY: the sim's tables stand for successful queries whose references are
            // handed over.
            let server = unsafe { ServerInterface::from_raw(bus.server_interface()) }.unwrap();
            // SAFETY: as above.
            let client = unsafe { ClientInterface::from_raw(bus.client_interface()) }.unwrap();
            $scenario(&server, &client);
            drop((server, client));
            bus.assert_no_leaks();
        }
    };
}

both_backends!(
    rescind_with_held_packets_linked,
    rescind_with_held_packets_tables,
    |s, c| held_packets_are_completed_when_the_flow_stops(s, c, Ending::Rescind)
);
both_backends!(
    guest_crash_with_held_packets_linked,
    guest_crash_with_held_packets_tables,
    |s, c| held_packets_are_completed_when_the_flow_stops(s, c, Ending::GuestCrash)
);
both_backends!(
    quota_blocks_then_resumes_linked,
    quota_blocks_then_resumes_tables,
    quota_holds_deliveries_back_until_completions
);
