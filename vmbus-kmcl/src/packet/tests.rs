//! The tokens on the sim. A test trampoline builds each token exactly as the channel's
//! process-packet trampoline does (from the raw callback arguments and a backend), so every
//! answer below goes through the real KMCL emulation, on both backends: the direct exports
//! ([`Linked`]) and a queried client table ([`ClientInterface`]).

extern crate std;

use core::any::Any;
use core::cell::{Cell, RefCell};
use std::alloc::{GlobalAlloc, Layout, System};
use std::boxed::Box;
use std::rc::Rc;
use std::sync::OnceLock;
use std::vec::Vec;

use vmbus_kmcl_sim::{Bus, SimMdl};
use vmbus_kmcl_sys::nt::{DISPATCH_LEVEL, KIRQL, PASSIVE_LEVEL};
use vmbus_kmcl_sys::{
    GUID, KMCL_CLIENT_INTERFACE_V1, NTSTATUS, VMBCHANNEL, VMBPACKET,
    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::*;
use crate::dispatch::{ClientInterface, Linked};

// ----- Counting allocations of the receive path -----

/// Counts the allocations made on a thread while its `COUNTING` flag is set.
struct CountingAllocator;

std::thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counters are
// const-initialised thread locals without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
        // SAFETY: the caller's layout contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Stops counting while KMCL (the sim) itself runs, and restores the flag afterwards.
struct NotCounted(bool);

impl NotCounted {
    fn new() -> Self {
        Self(COUNTING.with(|c| c.replace(false)))
    }
}

impl Drop for NotCounted {
    fn drop(&mut self) {
        COUNTING.with(|c| c.set(self.0));
    }
}

// ----- Backends -----

/// A backend the trampoline can name without an argument.
trait TestBackend: Kmcl + Send + Copy + 'static {
    fn get() -> Self;
}

impl TestBackend for Linked {
    fn get() -> Self {
        Linked
    }
}

unsafe extern "C" fn complete_not_counted(p: VMBPACKETCOMPLETION, b: PVOID, n: u32) {
    let _kmcl = NotCounted::new();
    // SAFETY: forwards the caller's arguments, for which the caller upholds the contract.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelPacketComplete(p, b, n) }
}

unsafe extern "C" fn fail_not_counted(p: VMBPACKETCOMPLETION) {
    let _kmcl = NotCounted::new();
    // SAFETY: as above.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelPacketFail(p) }
}

unsafe extern "C" fn defer_not_counted(p: VMBPACKETCOMPLETION) {
    let _kmcl = NotCounted::new();
    // SAFETY: as above.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelPacketDeferToPassive(p) }
}

unsafe extern "C" fn external_not_counted(p: VMBPACKETCOMPLETION, f: u32, m: *mut PMDL) -> i32 {
    let _kmcl = NotCounted::new();
    // SAFETY: as above.
    unsafe { vmbus_kmcl_sim::exports::VmbChannelPacketGetExternalData(p, f, m) }
}

/// The sim's client table, with its four receive entries wrapped so that the allocations the
/// sim makes are not counted as the wrapper's.
fn table() -> &'static ClientInterface {
    static TABLE: OnceLock<ClientInterface> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut raw: KMCL_CLIENT_INTERFACE_V1 = vmbus_kmcl_sim::client_interface();
        raw.VmbChannelPacketComplete = Some(complete_not_counted);
        raw.VmbChannelPacketFail = Some(fail_not_counted);
        raw.VmbChannelPacketDeferToPassive = Some(defer_not_counted);
        raw.VmbChannelPacketGetExternalData = Some(external_not_counted);
        // SAFETY: a filled client table holding one reference, which the value takes over; the
        // four wrapped entries forward to the functions they replace.
        unsafe { ClientInterface::from_raw(raw) }.expect("the sim fills every entry")
    })
}

impl TestBackend for &'static ClientInterface {
    fn get() -> Self {
        table()
    }
}

// ----- The test trampoline and the script it runs -----

type Script<B> = Box<dyn for<'cb> FnMut(IncomingPacket<'cb, B>)>;

std::thread_local! {
    /// What the next deliveries do (a `Script<B>`); the sim runs callbacks on the pumping
    /// thread, which is the test's.
    static SCRIPT: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// The IRQL of each delivery.
    static IRQLS: RefCell<Vec<KIRQL>> = const { RefCell::new(Vec::new()) };
    /// Completions the client saw: status and data.
    static COMPLETED: RefCell<Vec<(NTSTATUS, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

fn script<B: TestBackend>(f: impl for<'cb> FnMut(IncomingPacket<'cb, B>) + 'static) {
    let f: Script<B> = Box::new(f);
    SCRIPT.with(|s| *s.borrow_mut() = Some(Box::new(f)));
}

unsafe extern "C" fn on_packet<B: TestBackend>(
    _channel: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: u32,
    flags: u32,
) {
    IRQLS.with(|v| v.borrow_mut().push(vmbus_kmcl_sim::nt::current_irql()));
    let mut f = SCRIPT.with(|s| s.borrow_mut().take()).expect("a script");
    let run = f
        .downcast_mut::<Script<B>>()
        .expect("the script of this backend");
    COUNTING.with(|c| c.set(true));
    // SAFETY: the arguments KMCL passed to this running callback, with the backend every
    // channel of these tests uses (the sim's exports, directly or through its table); the
    // token does not outlive the script call.
    let token = unsafe { IncomingPacket::from_raw(B::get(), packet, buffer, length, flags) };
    run(token);
    COUNTING.with(|c| c.set(false));
    SCRIPT.with(|s| *s.borrow_mut() = Some(f));
}

unsafe extern "C" fn client_packet(
    _channel: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    _buffer: PVOID,
    _length: u32,
    _flags: u32,
) {
    // SAFETY: the packet of this delivery, answered once.
    unsafe { vmbus_kmcl_sys::VmbChannelPacketComplete(packet, core::ptr::null_mut(), 0) };
}

unsafe extern "C" fn on_completion(_packet: VMBPACKET, status: NTSTATUS, buf: PVOID, len: u32) {
    let data = if buf.is_null() {
        Vec::new()
    } else {
        // SAFETY: KMCL passes `len` readable bytes of the completion at `buf`.
        unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len as usize) }.to_vec()
    };
    COMPLETED.with(|c| c.borrow_mut().push((status, data)));
}

// ----- A connected server/client pair -----

const TYPE: GUID = GUID {
    Data1: 0x7ac3_e001,
    Data2: 1,
    Data3: 2,
    Data4: [3, 4, 5, 6, 7, 8, 9, 10],
};
const INSTANCE: GUID = GUID {
    Data1: 0x7ac3_e002,
    Data2: 1,
    Data3: 2,
    Data4: [3, 4, 5, 6, 7, 8, 9, 10],
};

/// A server channel whose packets go to the script, and a client channel that sends to it.
struct Pair {
    bus: Bus,
    server: VMBCHANNEL,
    client: VMBCHANNEL,
    sent: Vec<VMBPACKET>,
}

impl Pair {
    fn new<B: TestBackend>() -> Pair {
        IRQLS.with(|v| v.borrow_mut().clear());
        COMPLETED.with(|c| c.borrow_mut().clear());
        let bus = Bus::new();
        let mut server = core::ptr::null_mut();
        let mut client = core::ptr::null_mut();
        use vmbus_kmcl_sys::*;
        // Every block of this setup: the bus's devices outlive the channels (torn down in
        // `finish`); each call gets a live channel being initialised, or a valid place for its
        // result, and callbacks that are sound for the arguments KMCL passes.
        // SAFETY: as just said.
        let status = unsafe { VmbChannelAllocate(bus.root_device(), 1, &mut server) };
        assert_eq!(status, 0);
        // SAFETY: as above.
        let status = unsafe { VmbServerChannelInitSetTargetInterfaceId(server, TYPE, INSTANCE) };
        assert_eq!(status, 0);
        // SAFETY: as above.
        let status =
            unsafe { VmbChannelInitSetProcessPacketCallbacks(server, Some(on_packet::<B>), None) };
        assert_eq!(status, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { VmbChannelEnable(server) }, 0);
        // SAFETY: as above; an enabled channel.
        unsafe { VmbChannelStart(server) };
        // SAFETY: as above.
        let status = unsafe { VmbChannelAllocate(bus.guest_device(), 0, &mut client) };
        assert_eq!(status, 0);
        // SAFETY: as above.
        let status =
            unsafe { VmbClientChannelInitSetTargetPnp(client, &TYPE, core::ptr::null(), None) };
        assert_eq!(status, 0);
        // SAFETY: as above.
        let status =
            unsafe { VmbChannelInitSetProcessPacketCallbacks(client, Some(client_packet), None) };
        assert_eq!(status, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { VmbChannelEnable(client) }, 0);
        bus.run_until_idle();
        Pair {
            bus,
            server,
            client,
            sent: Vec::new(),
        }
    }

    /// Sends `bytes` (and external data) from the client, waiting for a completion, and
    /// delivers everything.
    fn send(&mut self, bytes: &[u8], external: Option<&SimMdl>) {
        let mdl = external.map_or(core::ptr::null_mut(), SimMdl::as_pmdl);
        // SAFETY: a live client channel; the packet is freed in `finish`.
        let packet = unsafe { vmbus_kmcl_sys::VmbPacketAllocate(self.client) };
        assert!(!packet.is_null());
        // SAFETY: a live packet, and a routine sound for what KMCL passes it.
        unsafe { vmbus_kmcl_sys::VmbPacketSetCompletionRoutine(packet, Some(on_completion)) };
        let len = u32::try_from(bytes.len()).unwrap();
        let flags = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
        let buffer = bytes.as_ptr().cast_mut().cast();
        // SAFETY: a live packet; `bytes` is readable for `len` bytes (the sim copies them) and
        // the MDL, if any, outlives the transaction (the tests keep it until `finish`).
        let status = unsafe { vmbus_kmcl_sys::VmbPacketSend(packet, buffer, len, mdl, flags) };
        assert_eq!(status, 0);
        self.sent.push(packet);
        self.bus.run_until_idle();
    }

    fn completions(&self) -> Vec<(NTSTATUS, Vec<u8>)> {
        COMPLETED.with(|c| core::mem::take(&mut *c.borrow_mut()))
    }

    fn irqls(&self) -> Vec<KIRQL> {
        IRQLS.with(|v| core::mem::take(&mut *v.borrow_mut()))
    }

    fn incoming_queue_failed(&self) -> bool {
        self.bus
            .channel_info(self.server)
            .unwrap()
            .incoming_queue_failed
    }

    /// Frees, disables and cleans up everything, and checks the sim saw no leak or misuse.
    fn finish(self) {
        self.bus.run_until_idle();
        for packet in self.sent {
            // SAFETY: the packet's transaction is over; it is freed once.
            unsafe { vmbus_kmcl_sys::VmbPacketFree(packet) };
        }
        for channel in [self.client, self.server] {
            // SAFETY: a live, enabled channel, disabled once.
            unsafe { vmbus_kmcl_sys::VmbChannelDisable(channel) };
            // SAFETY: the channel was just disabled; cleaned up once.
            unsafe { vmbus_kmcl_sys::VmbChannelCleanup(channel) };
        }
        self.bus.assert_no_leaks();
    }
}

/// Runs a generic check on both backends.
macro_rules! both_backends {
    ($($check:ident => $linked:ident, $table:ident;)*) => {$(
        #[test]
        fn $linked() {
            $check::<Linked>();
        }
        #[test]
        fn $table() {
            $check::<&'static ClientInterface>();
        }
    )*};
}

both_backends! {
    completes_with_and_without_a_response => completes_linked, completes_table;
    fails_and_stops_the_incoming_queue => fails_linked, fails_table;
    drop_fails_an_unanswered_packet => drop_fails_linked, drop_fails_table;
    defers_to_passive => defers_linked, defers_table;
    detached_packets_complete_on_another_thread => detached_linked, detached_table;
    external_data_pending_then_ready => external_linked, external_table;
    truncated_guest_payloads_are_typed_errors => truncated_linked, truncated_table;
}

#[derive(FromBytes, KnownLayout, Immutable, IntoBytes, Debug, PartialEq, Eq, Clone, Copy)]
#[repr(C)]
struct Request {
    id: u32,
    value: u32,
}

#[derive(IntoBytes, Immutable)]
#[repr(C)]
struct Response {
    id: u32,
    doubled: u32,
}

/// Answers a `Request` with a `Response`, an empty payload without one.
fn echo<B: Kmcl>(packet: IncomingPacket<'_, B>) {
    if packet.is_empty() {
        assert!(matches!(
            packet.external_data(ExternalDataFlags::empty()),
            Err(Error::NoExternalData)
        ));
        return packet.complete_empty();
    }
    let request = packet.read_exact::<Request>().unwrap();
    packet.complete_with(&Response {
        id: request.id,
        doubled: request.value.wrapping_mul(2),
    });
}

fn completes_with_and_without_a_response<B: TestBackend>() {
    let mut pair = Pair::new::<B>();
    script::<B>(echo);
    pair.send(Request { id: 7, value: 21 }.as_bytes(), None);
    pair.send(&[], None);
    script::<B>(|packet| packet.complete(b"raw bytes").unwrap());
    pair.send(b"x", None);
    assert_eq!(
        pair.completions(),
        [
            (0, [7, 0, 0, 0, 42, 0, 0, 0].to_vec()),
            (0, Vec::new()),
            (0, b"raw bytes".to_vec())
        ]
    );
    assert!(!pair.incoming_queue_failed());
    pair.finish();
}

fn fails_and_stops_the_incoming_queue<B: TestBackend>() {
    let mut pair = Pair::new::<B>();
    script::<B>(|packet| match packet.read::<Request>() {
        Ok(_) => packet.complete_empty(),
        Err(PayloadError::TooShort {
            needed: 8,
            available: 3,
        }) => packet.fail(),
        Err(other) => panic!("unexpected {other}"),
    });
    pair.send(b"bad", None);
    assert_eq!(
        pair.completions(),
        [(NtStatus::UNSUCCESSFUL.to_raw(), Vec::new())]
    );
    assert!(pair.incoming_queue_failed());
    pair.finish();
}

fn drop_fails_an_unanswered_packet<B: TestBackend>() {
    let mut pair = Pair::new::<B>();
    script::<B>(|packet| drop(packet));
    pair.send(b"forgotten", None);
    // The documented outcome: the packet was failed, so the sender's transaction failed and
    // the incoming queue stopped.
    assert_eq!(
        pair.completions(),
        [(NtStatus::UNSUCCESSFUL.to_raw(), Vec::new())]
    );
    assert!(pair.incoming_queue_failed());
    pair.finish();
}

fn defers_to_passive<B: TestBackend>() {
    let mut pair = Pair::new::<B>();
    script::<B>(|packet| {
        // SAFETY: reading the simulated IRQL has no preconditions.
        if unsafe { vmbus_kmcl_sys::nt::KeGetCurrentIrql() } == PASSIVE_LEVEL {
            echo(packet);
        } else {
            packet.defer_to_passive();
        }
    });
    pair.send(Request { id: 1, value: 2 }.as_bytes(), None);
    assert_eq!(pair.irqls(), [DISPATCH_LEVEL, PASSIVE_LEVEL]);
    assert_eq!(pair.completions(), [(0, [1, 0, 0, 0, 4, 0, 0, 0].to_vec())]);
    pair.finish();
}

fn detached_packets_complete_on_another_thread<B: TestBackend>() {
    let mut pair = Pair::new::<B>();
    type Held<B> = Rc<RefCell<Vec<(Request, DeferredPacket<B>)>>>;
    let held: Held<B> = Rc::default();
    let keep = held.clone();
    script::<B>(move |packet| {
        let request = packet.read_exact::<Request>().unwrap();
        keep.borrow_mut().push((request, packet.detach()));
    });
    pair.send(Request { id: 5, value: 50 }.as_bytes(), None);
    pair.send(Request { id: 6, value: 60 }.as_bytes(), None);
    assert!(pair.completions().is_empty(), "nothing answered yet");
    let tokens = core::mem::take(&mut *held.borrow_mut());
    std::thread::spawn(move || {
        for (request, packet) in tokens {
            packet.complete_with(&Response {
                id: request.id,
                doubled: request.value * 2,
            });
        }
    })
    .join()
    .unwrap();
    pair.bus.run_until_idle();
    assert_eq!(
        pair.completions(),
        [
            (0, [5, 0, 0, 0, 100, 0, 0, 0].to_vec()),
            (0, [6, 0, 0, 0, 120, 0, 0, 0].to_vec())
        ]
    );
    pair.finish();
}

fn external_data_pending_then_ready<B: TestBackend>() {
    let mut pair = Pair::new::<B>();
    let seen: Rc<RefCell<Vec<Option<Vec<u8>>>>> = Rc::default();
    let log = seen.clone();
    script::<B>(move |packet| {
        assert!(packet.flags().contains(PacketFlags::EXTERNAL_DATA));
        match packet.external_data(ExternalDataFlags::READ_ONLY).unwrap() {
            // Return without answering: KMCL delivers the packet again.
            ExternalData::Pending => log.borrow_mut().push(None),
            ExternalData::Ready(view) => {
                assert_eq!(vmbus_kmcl_sim::mdl_is_read_only(view.as_raw()), Some(true));
                // SAFETY: a sim MDL, valid until the packet is completed below.
                let bytes = unsafe { vmbus_kmcl_sim::mdl_read(view.as_raw()) };
                log.borrow_mut().push(bytes);
                let header: [u8; 6] = packet.read_exact().unwrap();
                packet.complete(&header).unwrap();
            }
        }
    });
    pair.bus.pend_next_external_data(1);
    let external = SimMdl::from_bytes(b"external bytes");
    pair.send(b"header", Some(&external));
    assert_eq!(*seen.borrow(), [None, Some(b"external bytes".to_vec())]);
    assert_eq!(pair.completions(), [(0, b"header".to_vec())]);

    // Ready data stays with a detached token until it is completed.
    let held: Rc<RefCell<Option<DeferredPacket<B>>>> = Rc::default();
    let keep = held.clone();
    script::<B>(move |packet| {
        let ExternalData::Ready(_) = packet.external_data(ExternalDataFlags::empty()).unwrap()
        else {
            panic!("not pended");
        };
        *keep.borrow_mut() = Some(packet.detach());
    });
    pair.send(b"", Some(&external));
    let deferred = held.borrow_mut().take().unwrap();
    let view = deferred.external_data().unwrap();
    // SAFETY: a sim MDL, valid until the packet is completed below.
    let bytes = unsafe { vmbus_kmcl_sim::mdl_read(view.as_raw()) };
    assert_eq!(bytes, Some(b"external bytes".to_vec()));
    deferred.complete_empty();
    pair.bus.run_until_idle();
    assert_eq!(pair.completions(), [(0, Vec::new())]);
    drop(external);
    pair.finish();
}

fn truncated_guest_payloads_are_typed_errors<B: TestBackend>() {
    #[derive(FromBytes, KnownLayout, Immutable)]
    #[repr(C)]
    struct Large {
        id: u64,
        length: u64,
    }
    let pair = Pair::new::<B>();
    let errors: Rc<RefCell<Vec<PayloadError>>> = Rc::default();
    let log = errors.clone();
    script::<B>(move |packet| match packet.read::<Large>() {
        Ok((large, _)) => packet.complete(&large.id.to_le_bytes()).unwrap(),
        Err(error) => {
            log.borrow_mut().push(error);
            packet.complete(&[0xEE]).unwrap();
        }
    });
    // A hostile guest's packet: in-band data (6), data at 16 bytes (2 units), 24 bytes in
    // all (3 units), completion requested, transaction 77; 8 payload bytes for a 16-byte
    // message.
    let mut raw = Vec::new();
    for half in [6u16, 2, 3, 1] {
        raw.extend_from_slice(&half.to_le_bytes());
    }
    raw.extend_from_slice(&77u64.to_le_bytes());
    raw.extend_from_slice(&[0xAB; 8]);
    pair.bus.inject_raw_guest_packet(pair.server, &raw).unwrap();
    pair.bus.run_until_idle();
    assert!(matches!(
        errors.borrow()[..],
        [PayloadError::TooShort {
            needed: 16,
            available: 8
        }]
    ));
    let completions = pair.bus.take_raw_guest_completions();
    assert_eq!(completions.len(), 1);
    assert_eq!(
        (
            completions[0].transaction_id,
            completions[0].status,
            &completions[0].data[..]
        ),
        (77, 0, &[0xEE][..])
    );
    pair.finish();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "the allocation counter is meaningless under Miri's allocator"
)]
fn the_receive_path_allocates_nothing() {
    type B = &'static ClientInterface;
    let mut pair = Pair::new::<B>();
    // The counter counts: a script that allocates is seen.
    script::<B>(|packet| {
        let copy = packet.data().to_vec();
        packet.complete(&copy).unwrap();
    });
    ALLOCATIONS.with(|n| n.set(0));
    pair.send(b"copied", None);
    assert_eq!(ALLOCATIONS.with(Cell::get), 1);
    ALLOCATIONS.with(|n| n.set(0));
    // Parse, answer, fail, defer and detach: the wrapper's part of each allocates nothing (the
    // sim's own work inside the KMCL calls is not counted).
    script::<B>(|packet| match packet.read::<Request>() {
        Ok((request, _)) if request.id == 1 => packet.complete_with(&Response {
            id: request.id,
            doubled: request.value,
        }),
        // SAFETY: reading the simulated IRQL has no preconditions.
        Ok(_) if unsafe { vmbus_kmcl_sys::nt::KeGetCurrentIrql() } != PASSIVE_LEVEL => {
            packet.defer_to_passive();
        }
        Ok(_) => packet.detach().complete_empty(),
        Err(_) => packet.fail(),
    });
    pair.send(Request { id: 1, value: 2 }.as_bytes(), None);
    pair.send(Request { id: 2, value: 2 }.as_bytes(), None);
    pair.send(b"short", None);
    assert_eq!(pair.completions().len(), 4);
    assert_eq!(ALLOCATIONS.with(Cell::get), 0);
    pair.finish();
}
