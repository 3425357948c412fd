//! The send path end to end on the sim: outgoing packet objects (allocated and in caller
//! storage) through the crate's completion trampolines, and synchronous requests with their
//! typed timeouts and outcomes, on both backends (direct exports and interface tables). A
//! counting allocator shows that reusing caller storage allocates nothing.

#[macro_use]
mod common;
#[path = "common/counting.rs"]
mod counting;

use counting::{NotCounted, ALLOCATIONS, COUNTING};

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use vmbus_kmcl::channel::{Client, ClientBuilder, Handler, OpenView, Server};
use vmbus_kmcl::dispatch::{ChannelBackend, ClientInterface, KmclServer, ServerInterface};
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::send::{
    Completion, InlineFlags, MdlFlags, Outcome, OutgoingPacket, PacketStorage, SendCompletion,
    SendFlags, Timeout,
};
use vmbus_kmcl::{guid, Error, Guid, NtStatus};
use vmbus_kmcl_sim::{Bus, SimMdl};
use vmbus_kmcl_sys::nt::{APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use vmbus_kmcl_sys::{NTSTATUS, PFN_VMB_PACKET_COMPLETION_ROUTINE, PVOID, UINT32, VMBPACKET};

const TYPE: Guid = guid!("5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d");
const INSTANCE: Guid = guid!("5a6b7c8d-9e0f-4a1b-8c2d-000000000003");

// ----- Tables -----

/// The crate's completion trampoline last registered through the counting table.
static ROUTINE: Mutex<PFN_VMB_PACKET_COMPLETION_ROUTINE> = Mutex::new(None);
/// `VmbPacketInitialize` calls through the counting table.
static INITIALIZED: AtomicU32 = AtomicU32::new(0);

unsafe extern "C" fn counted_completion(p: VMBPACKET, s: NTSTATUS, b: PVOID, n: UINT32) {
    let routine = ROUTINE.lock().unwrap().expect("registered before a send");
    COUNTING.with(|c| c.set(true));
    // SAFETY: the crate's routine, with KMCL's own arguments.
    unsafe { routine(p, s, b, n) };
    COUNTING.with(|c| c.set(false));
}

unsafe extern "C" fn set_routine(p: VMBPACKET, routine: PFN_VMB_PACKET_COMPLETION_ROUTINE) {
    let _sim = NotCounted::new();
    *ROUTINE.lock().unwrap() = routine;
    // SAFETY: forwards the packet with a routine that forwards to the caller's.
    unsafe { vmbus_kmcl_sim::exports::VmbPacketSetCompletionRoutine(p, Some(counted_completion)) }
}

unsafe extern "C" fn initialize(c: vmbus_kmcl_sys::VMBCHANNEL, p: VMBPACKET, n: u32) -> NTSTATUS {
    let _sim = NotCounted::new();
    INITIALIZED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: forwards the caller's arguments.
    unsafe { vmbus_kmcl_sim::exports::VmbPacketInitialize(c, p, n) }
}

unsafe extern "C" fn send(
    p: VMBPACKET,
    b: PVOID,
    n: u32,
    m: vmbus_kmcl_sys::PMDL,
    f: u32,
) -> NTSTATUS {
    let _sim = NotCounted::new();
    // SAFETY: forwards the caller's arguments.
    unsafe { vmbus_kmcl_sim::exports::VmbPacketSend(p, b, n, m, f) }
}

fn server_table() -> &'static ServerInterface {
    static TABLE: OnceLock<ServerInterface> = OnceLock::new();
    TABLE.get_or_init(|| {
        // SAFETY: a filled server table holding one reference, handed over.
        unsafe { ServerInterface::from_raw(vmbus_kmcl_sim::server_interface()) }.unwrap()
    })
}

fn client_table() -> &'static ClientInterface {
    static TABLE: OnceLock<ClientInterface> = OnceLock::new();
    TABLE.get_or_init(|| {
        // SAFETY: a filled client table holding one reference, handed over.
        unsafe { ClientInterface::from_raw(vmbus_kmcl_sim::client_interface()) }.unwrap()
    })
}

/// A client table whose packet entries leave the sim's own work uncounted.
fn counting_client_table() -> &'static ClientInterface {
    static TABLE: OnceLock<ClientInterface> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut raw = vmbus_kmcl_sim::client_interface();
        raw.VmbPacketSetCompletionRoutine = Some(set_routine);
        raw.VmbPacketInitialize = Some(initialize);
        raw.VmbPacketSend = Some(send);
        // SAFETY: a filled client table holding one reference, handed over; the replaced
        // entries forward to the functions they replace.
        unsafe { ClientInterface::from_raw(raw) }.unwrap()
    })
}

// ----- Handlers -----

/// Completes every packet with its payload, counting them; counts its own sends' completions.
#[derive(Default)]
struct Echo {
    received: AtomicU32,
    sent: Mutex<Vec<NtStatus>>,
}

impl<K: ChannelBackend> SendCompletion<K> for Echo {
    fn packet_completed(&self, packet: OutgoingPacket<'_, Self, K>, done: Completion<'_>) {
        self.sent.lock().unwrap().push(done.status());
        drop(packet);
    }
}

impl<K: ChannelBackend> Handler<Server, K> for Echo {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut reply = [0u8; 8];
        let n = packet.data().len().min(8);
        reply[..n].copy_from_slice(&packet.data()[..n]);
        let _ = packet.complete(&reply[..n]);
    }
}

/// The client: records completions (unless `quiet`), resends while `resend` is above 0.
struct Vsc {
    storage: PacketStorage<512>,
    small: PacketStorage<16>,
    completions: Mutex<Vec<(NtStatus, Vec<u8>)>>,
    completed: AtomicU32,
    resend: AtomicU32,
    quiet: bool,
    in_storage: AtomicU32,
}

impl Vsc {
    fn new(quiet: bool) -> Self {
        Self {
            storage: PacketStorage::new(),
            small: PacketStorage::new(),
            completions: Mutex::new(Vec::new()),
            completed: AtomicU32::new(0),
            resend: AtomicU32::new(0),
            quiet,
            in_storage: AtomicU32::new(0),
        }
    }

    fn completions(&self) -> Vec<(NtStatus, Vec<u8>)> {
        self.completions.lock().unwrap().clone()
    }
}

impl<K: ChannelBackend> Handler<Client, K> for Vsc {
    fn started(&self, channel: &OpenView<'_, Client, K>) {
        // The started callback may send without waiting (only that).
        assert_eq!(
            channel.post_nowait(b"hello", InlineFlags::empty()),
            Ok(Outcome::Completed(0))
        );
    }

    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

impl<K: ChannelBackend> SendCompletion<K> for Vsc {
    fn packet_completed(&self, packet: OutgoingPacket<'_, Self, K>, done: Completion<'_>) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if packet.is_in_storage() {
            self.in_storage.fetch_add(1, Ordering::Relaxed);
        }
        if !self.quiet {
            self.completions
                .lock()
                .unwrap()
                .push((done.status(), done.data().to_vec()));
        }
        let left = self.resend.load(Ordering::Relaxed);
        if left > 0 {
            self.resend.store(left - 1, Ordering::Relaxed);
            let byte = done.data().first().copied().unwrap_or(0).wrapping_add(1);
            if let Err(refused) = packet.send(&[byte], SendFlags::WAIT_FOR_COMPLETION) {
                panic!("resend refused: {:?}", refused.error);
            }
        }
    }
}

/// Opens an [`Echo`] server and a [`Vsc`] client (maximum packet size 256; completions
/// recorded unless `quiet`) and hands both channels to `scenario`, which takes them down;
/// afterwards no leak and no misuse.
fn run_owned<S, C>(
    server: S,
    client: C,
    quiet: bool,
    scenario: impl FnOnce(
        &Bus,
        vmbus_kmcl::channel::Channel<'_, Server, Echo, S>,
        vmbus_kmcl::channel::Channel<'_, Client, Vsc, C>,
    ),
) where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let bus = Bus::new();
    let (vsp, vsc) = (Echo::default(), Vsc::new(quiet));
    common::with_slots(&bus, server, vsp, client, vsc, |vsp_slot, vsc_slot| {
        let vsp = common::offer(vsp_slot, TYPE, INSTANCE);
        let mut vsc = ClientBuilder::allocate(vsc_slot).unwrap();
        vsc.set_target(TYPE, Some(INSTANCE)).unwrap();
        vsc.set_maximum_packet_size(256).unwrap();
        let vsc = vsc.enable().unwrap();
        bus.run_until_idle();
        assert!(vsp.is_open() && vsc.is_open());
        // The started callback's message.
        assert_eq!(vsp.handler().received.load(Ordering::Relaxed), 1);
        scenario(&bus, vsp, vsc);
        // Checked with the slots still alive: a channel the scenario leaked counts.
        assert_eq!(bus.take_violations(), Vec::<String>::new());
        bus.assert_no_leaks();
    });
}

/// [`run_owned`] with the channels borrowed by `scenario` and taken down afterwards.
fn run<S, C>(
    server: S,
    client: C,
    quiet: bool,
    scenario: impl FnOnce(
        &Bus,
        &vmbus_kmcl::channel::Channel<'_, Client, Vsc, C>,
        &vmbus_kmcl::channel::Channel<'_, Server, Echo, S>,
    ),
) where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run_owned(server, client, quiet, |bus, vsp, vsc| {
        scenario(bus, &vsc, &vsp);
        bus.run_until_idle();
        drop(vsc);
        drop(vsp);
    });
}

both_backends! {
    tables: server_table(), client_table();
    a_full_ring_queues_packets_that_complete_in_order => queue_linked, queue_tables;
    completions_with_and_without_waiting => waiting_linked, waiting_tables;
    caller_storage_is_checked_and_reused => storage_linked, storage_tables;
    refused_sends_give_the_packet_back => refused_linked, refused_tables;
    packets_in_flight_are_cancelled_when_the_channel_goes => cancelled_linked, cancelled_tables;
    external_data_sends_wait_for_completion => external_linked, external_tables;
    zero_timeouts_on_a_full_ring_do_not_queue => zero_timeout_linked, zero_timeout_tables;
    requests_time_out => time_out_linked, time_out_tables;
    requests_check_length_and_irql => request_checks_linked, request_checks_tables;
    requests_on_a_removed_channel => removed_linked, removed_tables;
    the_server_sends_packets_and_posts => server_linked, server_tables;
    storage_packets_survive_a_reopen => reopen_linked, reopen_tables;
}

fn storage_packets_survive_a_reopen<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run_owned(server, client, false, |bus, vsp, vsc| {
        let packet = vsc.storage_packet(|h: &Vsc| &h.storage).unwrap();
        packet.send(&[1], SendFlags::WAIT_FOR_COMPLETION).unwrap();
        bus.run_until_idle();
        // Closed and opened again: the storage is taken as it is and still works.
        let vsc = vsc.disable().enable().unwrap();
        bus.run_until_idle();
        assert!(vsc.is_open());
        let packet = vsc.storage_packet(|h: &Vsc| &h.storage).unwrap();
        packet.send(&[2], SendFlags::WAIT_FOR_COMPLETION).unwrap();
        bus.run_until_idle();
        let done = vsc.handler().completions();
        assert_eq!(
            done,
            vec![(NtStatus::SUCCESS, vec![1]), (NtStatus::SUCCESS, vec![2])]
        );
        drop(vsc);
        drop(vsp);
    });
}

fn the_server_sends_packets_and_posts<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |bus, vsc, vsp| {
        let packet = vsp.allocate_packet().unwrap();
        packet
            .send(b"to guest", SendFlags::WAIT_FOR_COMPLETION)
            .unwrap();
        assert_eq!(
            vsc.post(b"no reply", InlineFlags::empty(), Timeout::Infinite),
            Ok(Outcome::Completed(0))
        );
        bus.run_until_idle();
        assert_eq!(*vsp.handler().sent.lock().unwrap(), vec![NtStatus::SUCCESS]);
        assert_eq!(vsp.handler().received.load(Ordering::Relaxed), 2);
    });
}

fn a_full_ring_queues_packets_that_complete_in_order<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |bus, vsc, vsp| {
        assert!(bus.set_ring_full(vsc.as_raw(), true));
        for n in 0..5u8 {
            let packet = vsc.allocate_packet().unwrap();
            assert_eq!(packet.channel(), vsc.as_raw());
            packet
                .send(&[n], SendFlags::WAIT_FOR_COMPLETION)
                .map_err(|r| r.error)
                .unwrap();
        }
        bus.run_until_idle();
        let info = bus.channel_info(vsc.as_raw()).unwrap();
        assert_eq!(info.outgoing_waiting, 5);
        assert!(vsc.handler().completions().is_empty());
        assert!(bus.set_ring_full(vsc.as_raw(), false));
        bus.run_until_idle();
        let done = vsc.handler().completions();
        let expected: Vec<_> = (0..5u8).map(|n| (NtStatus::SUCCESS, vec![n])).collect();
        assert_eq!(done, expected);
        assert_eq!(vsp.handler().received.load(Ordering::Relaxed), 6);
    });
}

fn completions_with_and_without_waiting<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |bus, vsc, vsp| {
        let packet = vsc.allocate_packet().unwrap();
        packet.send(b"abc", SendFlags::empty()).unwrap();
        let packet = vsc.allocate_packet().unwrap();
        packet
            .send(
                b"xyz",
                SendFlags::WAIT_FOR_COMPLETION | SendFlags::PAGED_BUFFER,
            )
            .unwrap();
        bus.run_until_idle();
        let done = vsc.handler().completions();
        // Without waiting: in the ring, no completion bytes; with: the peer's bytes.
        assert_eq!(
            done,
            vec![
                (NtStatus::SUCCESS, Vec::new()),
                (NtStatus::SUCCESS, b"xyz".to_vec())
            ]
        );
        assert_eq!(vsp.handler().received.load(Ordering::Relaxed), 3);
        // A packet resent from its completion routine, ten times.
        vsc.handler().resend.store(10, Ordering::Relaxed);
        let packet = vsc.allocate_packet().unwrap();
        packet.send(&[0], SendFlags::WAIT_FOR_COMPLETION).unwrap();
        bus.run_until_idle();
        let done = vsc.handler().completions();
        assert_eq!(done.len(), 2 + 11);
        assert_eq!(done.last().unwrap().1, vec![10]);
        // Dropped unsent: freed (the leak check at the end would see it).
        drop(vsc.allocate_packet().unwrap());
        bus.fail_next_packet_allocations(1);
        assert!(matches!(
            vsc.allocate_packet(),
            Err(Error::AllocationFailed)
        ));
    });
}

fn caller_storage_is_checked_and_reused<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |bus, vsc, _| {
        assert!(matches!(
            vsc.storage_packet(|h: &Vsc| &h.small),
            Err(Error::StorageTooSmall { required }) if required > 256
        ));
        assert!(!vsc.handler().small.in_use());
        let packet = vsc.storage_packet(|h: &Vsc| &h.storage).unwrap();
        assert!(packet.is_in_storage());
        assert!(vsc.handler().storage.in_use());
        assert!(matches!(
            vsc.storage_packet(|h: &Vsc| &h.storage),
            Err(Error::StorageInUse)
        ));
        packet.send(&[7], SendFlags::WAIT_FOR_COMPLETION).unwrap();
        // In flight: still in use.
        assert!(matches!(
            vsc.storage_packet(|h: &Vsc| &h.storage),
            Err(Error::StorageInUse)
        ));
        bus.run_until_idle();
        assert!(!vsc.handler().storage.in_use());
        for n in 0..3u8 {
            let packet = vsc.storage_packet(|h: &Vsc| &h.storage).unwrap();
            packet.send(&[n], SendFlags::empty()).unwrap();
            bus.run_until_idle();
        }
        assert_eq!(vsc.handler().in_storage.load(Ordering::Relaxed), 4);
        let done = vsc.handler().completions();
        assert_eq!(done[0], (NtStatus::SUCCESS, vec![7]));
        // Taken and dropped unsent: idle again.
        drop(vsc.storage_packet(|h: &Vsc| &h.storage).unwrap());
        assert!(!vsc.handler().storage.in_use());
    });
}

fn refused_sends_give_the_packet_back<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |bus, vsc, _| {
        let packet = vsc.storage_packet(|h: &Vsc| &h.storage).unwrap();
        let too_long = [0u8; 300];
        let refused = packet
            .send(&too_long, SendFlags::WAIT_FOR_COMPLETION)
            .unwrap_err();
        assert_eq!(refused.error, Error::Status(NtStatus::INVALID_PARAMETER_3));
        // The packet came back and can be sent.
        let packet = refused.packet;
        let old = vmbus_kmcl_sim::nt::set_current_irql(DISPATCH_LEVEL);
        let refused = packet.send(b"p", SendFlags::PAGED_BUFFER).unwrap_err();
        vmbus_kmcl_sim::nt::set_current_irql(old);
        assert_eq!(
            refused.error,
            Error::IrqlTooHigh {
                current: DISPATCH_LEVEL,
                maximum: APC_LEVEL
            }
        );
        refused.packet.send(b"ok", SendFlags::empty()).unwrap();
        bus.run_until_idle();
        assert_eq!(vsc.handler().completions().len(), 1);
    });
}

fn packets_in_flight_are_cancelled_when_the_channel_goes<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run_owned(server, client, false, |bus, vsp, vsc| {
        assert!(bus.set_ring_full(vsc.as_raw(), true));
        for message in [b"a", b"b"] {
            let packet = vsc.allocate_packet().unwrap();
            packet
                .send(message, SendFlags::WAIT_FOR_COMPLETION)
                .unwrap();
        }
        bus.run_until_idle();
        // Disabling completes both, cancelled, before the channel is gone.
        let builder = vsc.disable();
        let cancelled = (NtStatus::CANCELLED, Vec::new());
        assert_eq!(
            builder.handler().completions(),
            vec![cancelled.clone(), cancelled]
        );
        drop(builder);
        drop(vsp);
    });
}

fn external_data_sends_wait_for_completion<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |bus, vsc, _| {
        let mdl = SimMdl::from_bytes(&[9u8; 64]);
        let mdl_ptr = std::ptr::NonNull::new(mdl.as_pmdl()).unwrap();
        let packet = vsc.allocate_packet().unwrap();
        // SAFETY: the MDL stays alive until after the completion (the bus runs below).
        let refused = unsafe {
            packet.send_with_external_mdl(b"m", mdl_ptr, 0, 0, MdlFlags::FORCE_MDL_LENGTH)
        }
        .unwrap_err();
        assert_eq!(refused.error, Error::BelowMinimum { minimum: 1 });
        // SAFETY: as above.
        unsafe {
            refused
                .packet
                .send_with_external_mdl(b"m", mdl_ptr, 8, 16, MdlFlags::empty())
        }
        .map_err(|r| r.error)
        .unwrap();
        let packet = vsc.allocate_packet().unwrap();
        // SAFETY: an empty list is refused before any call.
        let refused =
            unsafe { packet.send_with_external_pfns(b"p", &[], InlineFlags::empty()) }.unwrap_err();
        assert_eq!(refused.error, Error::BelowMinimum { minimum: 1 });
        // SAFETY: the sim only describes the page numbers to the receiver.
        unsafe {
            refused
                .packet
                .send_with_external_pfns(b"p", &[0x1234], InlineFlags::empty())
        }
        .map_err(|r| r.error)
        .unwrap();
        bus.run_until_idle();
        // Both waited for the peer's completion (the wrapper set the flag KMCL requires).
        let done = vsc.handler().completions();
        assert_eq!(
            done,
            vec![
                (NtStatus::SUCCESS, b"m".to_vec()),
                (NtStatus::SUCCESS, b"p".to_vec())
            ]
        );
        drop(mdl);
    });
}

fn zero_timeouts_on_a_full_ring_do_not_queue<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |bus, vsc, vsp| {
        let mut response = [0u8; 8];
        assert_eq!(
            vsc.send_request(b"ab", InlineFlags::empty(), &mut response, Timeout::NoQueue),
            Ok(Outcome::Completed(2))
        );
        assert_eq!(&response[..2], b"ab");
        assert!(bus.set_ring_full(vsc.as_raw(), true));
        assert_eq!(
            vsc.send_request(b"ab", InlineFlags::empty(), &mut response, Timeout::NoQueue),
            Ok(Outcome::NotQueued)
        );
        assert_eq!(
            vsc.post_nowait(b"ab", InlineFlags::empty()),
            Ok(Outcome::NotQueued)
        );
        assert_eq!(
            vsc.post(b"ab", InlineFlags::empty(), Timeout::NoQueue),
            Ok(Outcome::NotQueued)
        );
        assert!(bus.set_ring_full(vsc.as_raw(), false));
        // The root: only the form that does not wait, which works up to DISPATCH_LEVEL.
        let old = vmbus_kmcl_sim::nt::set_current_irql(DISPATCH_LEVEL);
        let outcome = vsp.post_nowait(b"to guest", InlineFlags::empty());
        vmbus_kmcl_sim::nt::set_current_irql(old);
        assert_eq!(outcome, Ok(Outcome::Completed(0)));
        assert!(bus.set_ring_full(vsp.as_raw(), true));
        assert_eq!(
            vsp.post_nowait(b"to guest", InlineFlags::empty()),
            Ok(Outcome::NotQueued)
        );
        assert!(bus.set_ring_full(vsp.as_raw(), false));
    });
}

fn requests_time_out<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |bus, vsc, _| {
        assert!(bus.set_ring_full(vsc.as_raw(), true));
        let mut response = [0u8; 8];
        let timeout = Timeout::Relative(Duration::from_millis(20));
        assert_eq!(
            vsc.send_request(b"late", InlineFlags::empty(), &mut response, timeout),
            Ok(Outcome::TimedOut)
        );
        assert_eq!(
            vsc.post(b"late", InlineFlags::empty(), timeout),
            Ok(Outcome::TimedOut)
        );
        assert!(bus.set_ring_full(vsc.as_raw(), false));
        assert_eq!(
            vsc.send_request(
                b"on time",
                InlineFlags::empty(),
                &mut response,
                Timeout::Infinite
            ),
            Ok(Outcome::Completed(7))
        );
    });
}

fn requests_check_length_and_irql<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, false, |_, vsc, _| {
        let mut response = [0u8; 12];
        assert_eq!(
            vsc.send_request(b"x", InlineFlags::empty(), &mut response, Timeout::Infinite),
            Err(Error::LengthNotMultipleOf8 { length: 12 })
        );
        let mut response = [0u8; 8];
        let old = vmbus_kmcl_sim::nt::set_current_irql(DISPATCH_LEVEL);
        let waiting = vsc.send_request(b"x", InlineFlags::empty(), &mut response, Timeout::NoQueue);
        let posted = vsc.post(b"x", InlineFlags::empty(), Timeout::Infinite);
        let paged = vsc.post_nowait(b"x", InlineFlags::PAGED_BUFFER);
        let nowait = vsc.post_nowait(b"x", InlineFlags::empty());
        vmbus_kmcl_sim::nt::set_current_irql(old);
        let too_high = |maximum| {
            Err(Error::IrqlTooHigh {
                current: DISPATCH_LEVEL,
                maximum,
            })
        };
        assert_eq!(waiting, too_high(PASSIVE_LEVEL));
        assert_eq!(posted, too_high(PASSIVE_LEVEL));
        assert_eq!(paged, too_high(APC_LEVEL));
        assert_eq!(nowait, Ok(Outcome::Completed(0)));
        // An empty response buffer is a multiple of 8: the reply is dropped.
        assert_eq!(
            vsc.send_request(b"x", InlineFlags::PAGED_BUFFER, &mut [], Timeout::Infinite),
            Ok(Outcome::Completed(0))
        );
    });
}

fn requests_on_a_removed_channel<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run_owned(server, client, false, |bus, vsp, vsc| {
        assert!(bus.crash_peer_of(vsc.as_raw()));
        bus.run_until_idle();
        let mut response = [0u8; 8];
        assert_eq!(
            vsc.send_request(
                b"gone",
                InlineFlags::empty(),
                &mut response,
                Timeout::Infinite
            ),
            Ok(Outcome::DeviceRemoved)
        );
        drop(vsc);
        drop(vsp);
    });
}

#[test]
fn storage_packets_are_reused_without_allocating() {
    const ROUNDS: u32 = if cfg!(miri) { 20 } else { 10_000 };
    INITIALIZED.store(0, Ordering::Relaxed);
    run(
        server_table(),
        counting_client_table(),
        true,
        |bus, vsc, vsp| {
            counting::check_the_counter_and_reset();
            for round in 0..ROUNDS {
                COUNTING.with(|c| c.set(true));
                let packet = vsc.storage_packet(|h: &Vsc| &h.storage).unwrap();
                let byte = [round.to_le_bytes()[0]];
                let sent = packet.send(&byte, SendFlags::WAIT_FOR_COMPLETION).is_ok();
                COUNTING.with(|c| c.set(false));
                assert!(sent);
                bus.run_until_idle();
            }
            // Take, send, completion trampoline and handler: no allocation (the sim's own work is
            // not counted); the storage was formatted once.
            assert_eq!(ALLOCATIONS.with(Cell::get), 0);
            assert_eq!(INITIALIZED.load(Ordering::Relaxed), 1);
            assert_eq!(vsc.handler().completed.load(Ordering::Relaxed), ROUNDS);
            assert_eq!(vsp.handler().received.load(Ordering::Relaxed), ROUNDS + 1);
        },
    );
}
