//! The receive path end to end on the sim: a server channel built with the crate's builder, its
//! handler reached through the crate's process-packet trampoline, and the packet tokens it
//! hands out, on both backends (direct exports and interface tables). A counting allocator
//! shows that the trampoline, the token and a parsing handler allocate nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use vmbus_kmcl::channel::{Client, ClientBuilder, Handler, OpenView, Server, ServerBuilder};
use vmbus_kmcl::dispatch::{ChannelBackend, ClientInterface, KmclServer, ServerInterface};
use vmbus_kmcl::packet::{
    DeferredPacket, ExternalData, ExternalDataFlags, IncomingPacket, PacketFlags, PayloadError,
};
use vmbus_kmcl::{guid, Error, Guid, NtStatus};
use vmbus_kmcl_sim::{Bus, SimMdl};
use vmbus_kmcl_sys::nt::{DISPATCH_LEVEL, KIRQL, PASSIVE_LEVEL};
use vmbus_kmcl_sys::{
    NTSTATUS, PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESS_PACKET, PMDL, PVOID,
    VMBCHANNEL, VMBPACKET, VMBPACKETCOMPLETION, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const TYPE: Guid = guid!("0d1e2f30-4a5b-4c6d-8e7f-112233445566");
const INSTANCE: Guid = guid!("0d1e2f30-4a5b-4c6d-8e7f-000000000002");

// ----- Counting allocations: the shared counting allocator -----

#[macro_use]
mod common;
#[path = "common/counting.rs"]
mod counting;

use common::with_slots;

use counting::{NotCounted, ALLOCATIONS, COUNTING};

// ----- A table whose receive entries count only the wrapper -----

/// The process-packet callback the crate registered last (its trampoline). Every channel that
/// registers through the table below has the same handler and backend types, so the same
/// trampoline, even where Miri gives the function several addresses.
static TRAMPOLINE: Mutex<PFN_VMB_CHANNEL_PROCESS_PACKET> = Mutex::new(None);

/// Counts allocations for the duration of the trampoline, which it calls as KMCL would.
unsafe extern "C" fn counted_process_packet(
    channel: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: u32,
    flags: u32,
) {
    let trampoline = TRAMPOLINE
        .lock()
        .unwrap()
        .expect("registered before any delivery");
    COUNTING.with(|c| c.set(true));
    // SAFETY: the crate's trampoline for channels of this table, with KMCL's own arguments,
    // passed on unchanged.
    unsafe { trampoline(channel, packet, buffer, length, flags) };
    COUNTING.with(|c| c.set(false));
}

unsafe extern "C" fn set_callbacks(
    channel: VMBCHANNEL,
    process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET,
    processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NTSTATUS {
    let mut registered = process_packet;
    if let Some(trampoline) = process_packet {
        *TRAMPOLINE.lock().unwrap() = Some(trampoline);
        registered = Some(counted_process_packet);
    }
    // SAFETY: forwards the caller's arguments, with a callback that forwards to theirs.
    unsafe {
        vmbus_kmcl_sim::exports::VmbChannelInitSetProcessPacketCallbacks(
            channel,
            registered,
            processing_complete,
        )
    }
}

unsafe extern "C" fn get_pointer(channel: VMBCHANNEL) -> PVOID {
    let _kmcl = NotCounted::new();
    // SAFETY: forwards the caller's argument.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelGetPointer(channel) }
}

unsafe extern "C" fn complete(p: VMBPACKETCOMPLETION, b: PVOID, n: u32) {
    let _kmcl = NotCounted::new();
    // SAFETY: forwards the caller's arguments.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelPacketComplete(p, b, n) }
}

unsafe extern "C" fn fail(p: VMBPACKETCOMPLETION) {
    let _kmcl = NotCounted::new();
    // SAFETY: forwards the caller's argument.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelPacketFail(p) }
}

unsafe extern "C" fn defer(p: VMBPACKETCOMPLETION) {
    let _kmcl = NotCounted::new();
    // SAFETY: forwards the caller's argument.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelPacketDeferToPassive(p) }
}

unsafe extern "C" fn external(p: VMBPACKETCOMPLETION, f: u32, m: *mut PMDL) -> NTSTATUS {
    let _kmcl = NotCounted::new();
    // SAFETY: forwards the caller's arguments.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelPacketGetExternalData(p, f, m) }
}

/// The sim's server table, with the entries above in place of the receive functions. Both
/// tables of this test binary belong to the one KMCL (the sim), as `from_raw` requires.
fn server_table() -> &'static ServerInterface {
    static TABLE: OnceLock<ServerInterface> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut raw = vmbus_kmcl_sim::server_interface();
        let client = &mut raw.ClientMethods;
        client.VmbChannelInitSetProcessPacketCallbacks = Some(set_callbacks);
        client.VmbChannelGetPointer = Some(get_pointer);
        client.VmbChannelPacketComplete = Some(complete);
        client.VmbChannelPacketFail = Some(fail);
        client.VmbChannelPacketDeferToPassive = Some(defer);
        client.VmbChannelPacketGetExternalData = Some(external);
        // SAFETY: a filled server table holding one reference, handed over; the replaced
        // entries forward to the functions they replace.
        unsafe { ServerInterface::from_raw(raw) }.expect("the sim fills every entry")
    })
}

/// The client part of the same table, for the client channel.
fn client_table() -> &'static ClientInterface {
    static TABLE: OnceLock<ClientInterface> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut raw = vmbus_kmcl_sim::client_interface();
        raw.VmbChannelGetPointer = Some(get_pointer);
        // SAFETY: a filled client table holding one reference, handed over.
        unsafe { ClientInterface::from_raw(raw) }.expect("the sim fills every entry")
    })
}

// ----- The handlers -----

#[derive(FromBytes, KnownLayout, Immutable, IntoBytes, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Request {
    id: u32,
    value: u32,
}

#[derive(IntoBytes, Immutable)]
#[repr(C)]
struct Response {
    id: u32,
    tripled: u32,
}

/// What the server's handler does with each packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Parse a `Request`, answer with a `Response`; fail a short payload.
    Parse,
    /// Complete without a response.
    Empty,
    /// Drop the token unanswered.
    Drop,
    /// Defer at DISPATCH_LEVEL, parse at PASSIVE_LEVEL.
    Defer,
    /// Detach the token and keep it for the test.
    Detach,
    /// Fetch the external data (pending or ready) and answer with its bytes.
    External,
    /// Fetch the external data and detach the token with it, for the test to answer.
    ExternalDetach,
}

struct Vsp<K: ChannelBackend> {
    mode: AtomicU8,
    irqls: Mutex<Vec<KIRQL>>,
    held: Mutex<Vec<(Request, DeferredPacket<K>)>>,
    held_external: Mutex<Vec<DeferredPacket<K>>>,
    external: Mutex<Vec<Option<Vec<u8>>>>,
    errors: Mutex<Vec<PayloadError>>,
}

impl<K: ChannelBackend> Vsp<K> {
    fn new(mode: Mode) -> Self {
        Self {
            mode: AtomicU8::new(mode as u8),
            irqls: Mutex::default(),
            held: Mutex::default(),
            held_external: Mutex::default(),
            external: Mutex::default(),
            errors: Mutex::default(),
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Parse,
            1 => Mode::Empty,
            2 => Mode::Drop,
            3 => Mode::Defer,
            4 => Mode::Detach,
            5 => Mode::External,
            _ => Mode::ExternalDetach,
        }
    }

    /// The allocation-free handler: copy the request out, answer it or fail it.
    fn parse(&self, packet: IncomingPacket<'_, K>) {
        match packet.read::<Request>() {
            Ok((request, _rest)) => packet.complete_with(&Response {
                id: request.id,
                tripled: request.value.wrapping_mul(3),
            }),
            Err(error) => {
                let _kmcl = NotCounted::new();
                self.errors.lock().unwrap().push(error);
                drop(_kmcl);
                packet.fail();
            }
        }
    }
}

impl<K: ChannelBackend> Handler<Server, K> for Vsp<K> {
    fn process_packet(&self, _: &OpenView<'_, Server, K>, packet: IncomingPacket<'_, K>) {
        let irql = vmbus_kmcl_sim::nt::current_irql();
        if self.mode() != Mode::Parse {
            self.irqls.lock().unwrap().push(irql);
        }
        match self.mode() {
            Mode::Parse => self.parse(packet),
            Mode::Empty => {
                assert!(matches!(
                    packet.external_data(ExternalDataFlags::empty()),
                    Err(Error::NoExternalData)
                ));
                packet.complete_empty();
            }
            Mode::Drop => drop(packet),
            Mode::Defer if irql == PASSIVE_LEVEL => self.parse(packet),
            Mode::Defer => packet.defer_to_passive(),
            Mode::Detach => {
                let request = packet.read_exact::<Request>().unwrap();
                self.held.lock().unwrap().push((request, packet.detach()));
            }
            Mode::ExternalDetach => {
                let ready = packet.external_data(ExternalDataFlags::empty()).unwrap();
                assert!(matches!(ready, ExternalData::Ready(_)));
                self.held_external.lock().unwrap().push(packet.detach());
            }
            Mode::External => {
                assert!(packet.flags().contains(PacketFlags::EXTERNAL_DATA));
                match packet.external_data(ExternalDataFlags::READ_ONLY).unwrap() {
                    ExternalData::Pending => self.external.lock().unwrap().push(None),
                    ExternalData::Ready(view) => {
                        // SAFETY: a sim MDL, valid until the packet is completed below.
                        let bytes = unsafe { vmbus_kmcl_sim::mdl_read(view.as_raw()) };
                        let _ = packet.complete(bytes.as_deref().unwrap_or_default());
                        self.external.lock().unwrap().push(bytes);
                    }
                }
            }
        }
    }
}

/// The client completes whatever reaches it.
struct Vsc;

impl<K: ChannelBackend> Handler<Client, K> for Vsc {
    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.complete_empty();
    }
}

// ----- Running a scenario on both backends -----

/// What a scenario gets: the bus, the two channels and a raw sender.
struct Run<'a, K: ChannelBackend> {
    bus: &'a Bus,
    vsp: &'a Vsp<K>,
    server: VMBCHANNEL,
    client: VMBCHANNEL,
    request: &'a dyn Fn(&[u8]) -> vmbus_kmcl::Result<Vec<u8>>,
}

/// Opens a server channel with a [`Vsp`] in `mode` and a client channel, runs `scenario`, and
/// closes both; the bus must see no leak and no misuse.
fn run<S, C>(server: S, client: C, mode: Mode, passive: bool, scenario: impl FnOnce(&Run<'_, S>))
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    let bus = Bus::new();
    let vsp = Vsp::<S>::new(mode);
    // The backends may be borrowed tables: the slots come from `ChannelSlot::scope`.
    with_slots(&bus, server, vsp, client, Vsc, |vsp_slot, vsc_slot| {
        let mut vsp = ServerBuilder::allocate(vsp_slot).unwrap();
        vsp.set_interface_id(TYPE, INSTANCE).unwrap();
        vsp.set_incoming_processing_at_passive(passive);
        let vsp = vsp.enable().unwrap();
        vsp.start();
        let mut vsc = ClientBuilder::allocate(vsc_slot).unwrap();
        vsc.set_target(TYPE, Some(INSTANCE)).unwrap();
        let vsc = vsc.enable().unwrap();
        bus.run_until_idle();
        assert!(vsp.is_open() && vsc.is_open());
        let request = |bytes: &[u8]| {
            let mut response = [0u8; 64];
            vsc.request(bytes, &mut response, None).map(<[u8]>::to_vec)
        };
        scenario(&Run {
            bus: &bus,
            vsp: vsp.handler(),
            server: vsp.as_raw(),
            client: vsc.as_raw(),
            request: &request,
        });
        bus.run_until_idle();
        drop(vsc);
        drop(vsp);
        // Checked with the slots still alive: a channel left in one counts.
        bus.assert_no_leaks();
    });
}

both_backends! {
    tables: server_table(), client_table();
    complete_with_and_without_a_response => complete_linked, complete_tables;
    fail_reaches_the_sender_and_stops_the_queue => fail_linked, fail_tables;
    dropping_an_unanswered_packet_fails_it => drop_linked, drop_tables;
    defer_to_passive_delivers_again_at_passive => defer_linked, defer_tables;
    passive_channels_deliver_at_passive => passive_linked, passive_tables;
    detached_packets_complete_later_on_another_thread => detached_linked, detached_tables;
    external_data_is_pending_then_ready => external_linked, external_tables;
    truncated_guest_payloads_are_typed_errors => truncated_linked, truncated_tables;
}

fn complete_with_and_without_a_response<S: ChannelBackend + KmclServer, C: ChannelBackend>(
    server: S,
    client: C,
) {
    run(server, client, Mode::Parse, false, |run| {
        let reply = (run.request)(Request { id: 9, value: 5 }.as_bytes()).unwrap();
        assert_eq!(reply, [9, 0, 0, 0, 15, 0, 0, 0]);
        run.vsp.set(Mode::Empty);
        assert_eq!((run.request)(b"anything").unwrap(), b"");
        assert_eq!(*run.vsp.irqls.lock().unwrap(), [DISPATCH_LEVEL]);
    });
}

fn fail_reaches_the_sender_and_stops_the_queue<
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
>(
    server: S,
    client: C,
) {
    run(server, client, Mode::Parse, false, |run| {
        assert_eq!(
            (run.request)(b"short"),
            Err(Error::Status(NtStatus::UNSUCCESSFUL))
        );
        assert!(matches!(
            run.vsp.errors.lock().unwrap()[..],
            [PayloadError::TooShort {
                needed: 8,
                available: 5
            }]
        ));
        assert!(
            run.bus
                .channel_info(run.server)
                .unwrap()
                .incoming_queue_failed
        );
    });
}

fn dropping_an_unanswered_packet_fails_it<S: ChannelBackend + KmclServer, C: ChannelBackend>(
    server: S,
    client: C,
) {
    run(server, client, Mode::Drop, false, |run| {
        // The documented outcome of a dropped token: the packet is failed.
        assert_eq!(
            (run.request)(b"forgotten"),
            Err(Error::Status(NtStatus::UNSUCCESSFUL))
        );
        assert!(
            run.bus
                .channel_info(run.server)
                .unwrap()
                .incoming_queue_failed
        );
    });
}

fn defer_to_passive_delivers_again_at_passive<S: ChannelBackend + KmclServer, C: ChannelBackend>(
    server: S,
    client: C,
) {
    run(server, client, Mode::Defer, false, |run| {
        let reply = (run.request)(Request { id: 1, value: 1 }.as_bytes()).unwrap();
        assert_eq!(reply, [1, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(
            *run.vsp.irqls.lock().unwrap(),
            [DISPATCH_LEVEL, PASSIVE_LEVEL]
        );
    });
}

fn passive_channels_deliver_at_passive<S: ChannelBackend + KmclServer, C: ChannelBackend>(
    server: S,
    client: C,
) {
    run(server, client, Mode::Defer, true, |run| {
        (run.request)(Request { id: 2, value: 2 }.as_bytes()).unwrap();
        // Already at PASSIVE_LEVEL: no deferral needed.
        assert_eq!(*run.vsp.irqls.lock().unwrap(), [PASSIVE_LEVEL]);
    });
}

fn detached_packets_complete_later_on_another_thread<S, C>(server: S, client: C)
where
    S: ChannelBackend + KmclServer,
    C: ChannelBackend,
{
    run(server, client, Mode::Detach, false, |run| {
        std::thread::scope(|scope| {
            // The completer waits for the detached token, then answers it from its own thread.
            scope.spawn(|| loop {
                let Some((request, packet)) = run.vsp.held.lock().unwrap().pop() else {
                    std::thread::yield_now();
                    continue;
                };
                packet.complete_with(&Response {
                    id: request.id,
                    tripled: request.value * 3,
                });
                break;
            });
            let reply = (run.request)(Request { id: 4, value: 10 }.as_bytes()).unwrap();
            assert_eq!(reply, [4, 0, 0, 0, 30, 0, 0, 0]);
        });
    });
}

thread_local! {
    static COMPLETED: std::cell::RefCell<Vec<(NTSTATUS, Vec<u8>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "C" fn on_completion(packet: VMBPACKET, status: NTSTATUS, buf: PVOID, len: u32) {
    let data = if buf.is_null() {
        Vec::new()
    } else {
        // SAFETY: KMCL passes `len` readable bytes of the completion at `buf`.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) }.to_vec()
    };
    COMPLETED.with(|c| c.borrow_mut().push((status, data)));
    // SAFETY: the transaction is over; the packet is freed once.
    unsafe { vmbus_kmcl_sys::VmbPacketFree(packet) };
}

/// Sends `header` with `mdl` as external data from the client, waiting for a completion.
fn send_external(client: VMBCHANNEL, header: &[u8], mdl: &SimMdl) {
    // SAFETY: a live client channel.
    let packet = unsafe { vmbus_kmcl_sys::VmbPacketAllocate(client) };
    assert!(!packet.is_null());
    // SAFETY: a live packet and a routine sound for KMCL's arguments (it frees the packet).
    unsafe { vmbus_kmcl_sys::VmbPacketSetCompletionRoutine(packet, Some(on_completion)) };
    let flags = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
    let len = u32::try_from(header.len()).unwrap();
    let buffer = header.as_ptr().cast_mut().cast();
    // SAFETY: a live packet; `len` readable bytes (copied by the sim); the MDL outlives the
    // transaction (the callers keep it until the completion arrived).
    let status =
        unsafe { vmbus_kmcl_sys::VmbPacketSend(packet, buffer, len, mdl.as_pmdl(), flags) };
    assert_eq!(status, 0);
}

fn external_data_is_pending_then_ready<S: ChannelBackend + KmclServer, C: ChannelBackend>(
    server: S,
    client: C,
) {
    run(server, client, Mode::External, false, |run| {
        run.bus.pend_next_external_data(1);
        let mdl = SimMdl::from_bytes(b"guest pages");
        send_external(run.client, b"hdr", &mdl);
        run.bus.run_until_idle();
        assert_eq!(
            *run.vsp.external.lock().unwrap(),
            [None, Some(b"guest pages".to_vec())]
        );
        assert_eq!(COMPLETED.with(|c| c.take()), [(0, b"guest pages".to_vec())]);

        // Ready data stays with a detached token until it is answered.
        run.vsp.set(Mode::ExternalDetach);
        send_external(run.client, b"", &mdl);
        run.bus.run_until_idle();
        let deferred = run.vsp.held_external.lock().unwrap().pop().unwrap();
        let view = deferred.external_data().unwrap();
        // SAFETY: a sim MDL, valid until the packet is completed below.
        let bytes = unsafe { vmbus_kmcl_sim::mdl_read(view.as_raw()) };
        assert_eq!(bytes.as_deref(), Some(&b"guest pages"[..]));
        assert!(COMPLETED.with(|c| c.take()).is_empty(), "not answered yet");
        deferred.complete_empty();
        run.bus.run_until_idle();
        assert_eq!(COMPLETED.with(|c| c.take()), [(0, Vec::new())]);
    });
}

fn truncated_guest_payloads_are_typed_errors<S: ChannelBackend + KmclServer, C: ChannelBackend>(
    server: S,
    client: C,
) {
    run(server, client, Mode::Parse, false, |run| {
        // A hostile guest's in-band packet (type 6), data at 16 bytes, 24 bytes in all, a
        // completion requested, transaction 5: a well-formed VMBus packet whose 8-byte payload
        // holds a full `Request`, then one whose payload is empty.
        let mut raw = Vec::new();
        for half in [6u16, 2, 3, 1] {
            raw.extend_from_slice(&half.to_le_bytes());
        }
        raw.extend_from_slice(&5u64.to_le_bytes());
        raw.extend_from_slice(Request { id: 3, value: 3 }.as_bytes());
        run.bus.inject_raw_guest_packet(run.server, &raw).unwrap();
        run.bus.run_until_idle();
        let done = run.bus.take_raw_guest_completions();
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].transaction_id, done[0].status, &done[0].data[..]),
            (5, 0, &[3, 0, 0, 0, 9, 0, 0, 0][..])
        );

        let mut empty = raw[..16].to_vec();
        empty[4..6].copy_from_slice(&2u16.to_le_bytes());
        run.bus.inject_raw_guest_packet(run.server, &empty).unwrap();
        run.bus.run_until_idle();
        assert!(matches!(
            run.vsp.errors.lock().unwrap()[..],
            [PayloadError::TooShort {
                needed: 8,
                available: 0
            }]
        ));
        let done = run.bus.take_raw_guest_completions();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].status, NtStatus::UNSUCCESSFUL.to_raw());
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the allocation counter is meaningless under Miri's allocator"
)]
fn the_receive_path_allocates_nothing() {
    run(server_table(), client_table(), Mode::Parse, false, |run| {
        counting::check_the_counter_and_reset();
        for id in 0..16 {
            let reply = (run.request)(Request { id, value: id }.as_bytes()).unwrap();
            assert_eq!(reply[..4], id.to_le_bytes());
        }
        // Trampoline, token, parse and complete: no allocation (KMCL's own work is not
        // counted).
        assert_eq!(ALLOCATIONS.with(Cell::get), 0);
    });
}
