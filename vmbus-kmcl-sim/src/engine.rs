//! The bus engine: channels, rings, packets, GPADLs and save/restore, following the KMCL state
//! model.
//!
//! One [`BusShared`] holds the whole state of a simulated VMBus behind one mutex. Every exported
//! KMCL function becomes a method here that locks, updates the state and, when a driver callback
//! is due, releases the lock before running it (through [`crate::callbacks`]), so callbacks may
//! call back into the sim. Asynchronous work (a channel opening, flow starting, a packet reaching
//! the other side, a completion coming back) is queued and carried out by the *pump*
//! ([`BusShared::pump_once`]), which tests run deterministically or on a background thread.
//!
//! # Model
//!
//! * A channel is *disabled*, *enabled* (offered or waiting for an offer), *connecting* (paired,
//!   `EvtChannelOpened` not yet run), *open*, or *crashed* (its side of the bus was cut off by
//!   fault injection). Flow is a second axis: *paused* or not, *running* (started) or not.
//! * Each open channel owns its outgoing ring: a byte budget derived from the ring page counts
//!   and the maximum packet size, a FIFO of frames in the ring, and a FIFO of frames waiting for
//!   space. Frames leave the ring when the peer takes them; waiting frames follow in order.
//! * A data frame leaves the ring only when the receiver's incoming queue is on and its
//!   transaction quota allows; the receiver then holds an incoming packet
//!   (`VMBPACKETCOMPLETION`) until it completes it. A completion travels back through the
//!   receiver's ring to the sender's packet object.
//! * Every misuse the sim detects is a *violation*: printed at once and kept for
//!   [`crate::Bus::assert_no_leaks`].
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use vmbus_kmcl_sys::{
    GUID, NTSTATUS, PFN_VMB_CHANNEL_CLOSED, PFN_VMB_CHANNEL_OPENED, PFN_VMB_CHANNEL_PNP_FAILURE,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESS_PACKET,
    PFN_VMB_CHANNEL_RESTORE_PACKET, PFN_VMB_CHANNEL_SAVE_PACKET, PFN_VMB_PACKET_COMPLETION_ROUTINE,
    VMBUS_CHANNEL_FORMAT_FLAGS, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
    VMBUS_CHANNEL_GPADL_FLAGS, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, VMBUS_CHANNEL_INIT_FLAGS,
    VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS, VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
    VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA, VMBUS_SERVER_CHANNEL_INIT_FLAGS,
};

use crate::callbacks::{self, Call, UserPtr};
use crate::handle::{Handle, Kind, MAX_BUS_ID};
use crate::mdl::{Described, OwnedMdl};
use crate::slab::{ObjRef, Slab};
use crate::status::*;

/// Size of one ring page.
pub(crate) const PAGE_SIZE: usize = 4096;
/// Ring pages per direction when the client does not set them.
pub(crate) const DEFAULT_RING_PAGES: u32 = 16;
/// Maximum inline packet size when the driver does not set it.
pub(crate) const DEFAULT_MAX_PACKET_SIZE: u32 = 4096;
/// Bytes of a ring frame header (descriptor) and trailer.
const FRAME_OVERHEAD: usize = 16 + 8;
/// Bytes `VmbPacketInitialize` needs besides the maximum packet size.
const PACKET_OBJECT_OVERHEAD: u32 = 64;
/// Largest number of pooled payload buffers kept for reuse.
const POOL_LIMIT: usize = 4096;
/// Save-chunk header: magic, sequence, payload length, last flag.
const CHUNK_HEADER: usize = 16;
const CHUNK_MAGIC: u32 = 0x4843_4D4B; // "KMCH"
const SAVE_MAGIC: u32 = 0x5653_4D4B; // "KMSV"
const PACKET_MAGIC: u32 = 0x4B50_4D4B; // "KMPK"

/// Which side of the bus a device (and the channels allocated on it) is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The root (host) partition: servers (VSPs).
    Root,
    /// The guest partition: clients (VSCs).
    Guest,
}

/// Connection state of a channel, as the sim reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Allocated or disabled: the init setters are allowed.
    Disabled,
    /// Enabled: the server's offer is published, or the client waits for an offer.
    Enabled,
    /// Paired with a peer; `EvtChannelOpened` has not run yet.
    Connecting,
    /// Open: traffic may flow.
    Open,
    /// Cut off by [`crate::Bus::crash_peer_of`]: no callback runs any more.
    Crashed,
}

/// The five state-change callbacks, copied from the driver's table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StateCallbacks {
    pub opened: PFN_VMB_CHANNEL_OPENED,
    pub closed: PFN_VMB_CHANNEL_CLOSED,
    pub suspend: PFN_VMB_CHANNEL_CLOSED,
    pub started: PFN_VMB_CHANNEL_CLOSED,
    pub post_started: PFN_VMB_CHANNEL_CLOSED,
}

/// Where a transaction's completion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A packet object, in the send numbered `txn`.
    Packet(ObjRef, u64),
    /// A waiting `VmbChannelSendSynchronousRequest`.
    Sync(u64),
    /// A packet injected by a test as a hostile guest.
    Raw(u64),
}

/// What a frame carries.
#[derive(Debug)]
enum FrameBody {
    /// A data packet.
    Data {
        origin: Origin,
        wants_completion: bool,
        external: Option<Described>,
    },
    /// The completion of a data packet.
    Completion { origin: Origin, status: NTSTATUS },
}

/// One packet in a ring or waiting for ring space.
#[derive(Debug)]
struct Frame {
    size: usize,
    payload: Vec<u8>,
    body: FrameBody,
}

/// The outgoing direction of a channel.
#[derive(Debug, Default)]
struct Outgoing {
    capacity: usize,
    used: usize,
    ring: VecDeque<Frame>,
    waiting: VecDeque<Frame>,
    /// Fault injection: the ring reports no free space.
    forced_full: bool,
}

/// State of a delivered incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InState {
    /// Inside `EvtVmbChannelProcessPacket`.
    Delivering,
    /// Returned from the callback, not completed yet.
    Held,
    /// `VmbChannelPacketDeferToPassive` was called during delivery.
    Deferred,
    /// `VmbChannelPacketGetExternalData` returned `STATUS_PENDING` during delivery.
    PendingExternal,
    /// Waiting in the channel's redelivery queue.
    Redeliver,
}

/// A delivered packet (`VMBPACKETCOMPLETION`).
#[derive(Debug)]
struct Incoming {
    receiver: ObjRef,
    payload: Vec<u8>,
    origin: Origin,
    wants_completion: bool,
    external: Option<Described>,
    external_mdl: Option<OwnedMdl>,
    state: InState,
    pended_once: bool,
}

/// State of an outgoing packet object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PacketState {
    Idle,
    InFlight,
    Completing,
}

/// An outgoing packet object (`VMBPACKET`).
#[derive(Debug)]
struct Packet {
    channel: ObjRef,
    /// Caller memory address for `VmbPacketInitialize` packets.
    initialized_at: Option<UserPtr>,
    state: PacketState,
    pointer: UserPtr,
    routine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
    custom_routine: bool,
    txn: u64,
    /// Payload and flags of the current send, kept only for restored packets.
    restored: Option<(Vec<u8>, bool)>,
}

/// A GPADL created by a client.
#[derive(Debug)]
struct Gpadl {
    owner: ObjRef,
    described: Described,
    read_only: bool,
    mapping: Option<(ObjRef, OwnedMdl)>,
}

/// An in-progress save.
#[derive(Debug, Default)]
struct SaveCtx {
    blob: Option<Vec<u8>>,
    offset: usize,
    seq: u32,
}

/// An in-progress restore.
#[derive(Debug, Default)]
struct RestoreCtx {
    data: Vec<u8>,
    seq: u32,
    /// True while `EvtVmbChannelRestorePacket` runs (the only place `VmbPacketRestore` is legal).
    in_callback: bool,
}

/// A waiting synchronous request.
#[derive(Debug)]
struct SyncWait {
    channel: ObjRef,
    result: Option<(NTSTATUS, Vec<u8>)>,
}

/// A channel.
#[derive(Debug)]
pub(crate) struct Channel {
    handle: usize,
    side: Side,
    is_server: bool,
    state: ChannelState,
    peer: Option<ObjRef>,
    /// Refused by its own `EvtChannelOpened`: not paired again until re-enabled.
    rejected: bool,
    paused: bool,
    pause_armed: bool,
    running: bool,
    incoming_enabled: bool,
    suspended: bool,
    queue_failed: bool,
    in_state_cb: bool,
    in_closed_cb: bool,
    in_delivery: bool,
    batch: u32,
    outstanding: u32,
    quota: u32,
    passive: bool,
    pointer: UserPtr,
    latency: u16,
    // Configuration.
    init_flags: u32,
    server_flags: u32,
    friendly_name: Option<String>,
    client_context_size: u32,
    max_packet_size: u32,
    max_external_data: Option<(u32, u32)>,
    ring_pages: (u32, u32),
    interface_type: GUID,
    interface_instance: GUID,
    target_any_instance: bool,
    target_set: bool,
    mmio_megabytes: (u16, u16),
    mmio_space: (u64, u64),
    target_vtl: u8,
    vmbus_handle: Option<usize>,
    state_cbs: StateCallbacks,
    process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET,
    processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    save_packet: PFN_VMB_CHANNEL_SAVE_PACKET,
    restore_packet: PFN_VMB_CHANNEL_RESTORE_PACKET,
    pnp_failure: PFN_VMB_CHANNEL_PNP_FAILURE,
    out: Outgoing,
    redeliver: VecDeque<ObjRef>,
    save: Option<SaveCtx>,
    restore: Option<RestoreCtx>,
}

impl Channel {
    fn new(handle: usize, side: Side, is_server: bool) -> Channel {
        Channel {
            handle,
            side,
            is_server,
            state: ChannelState::Disabled,
            peer: None,
            rejected: false,
            paused: false,
            pause_armed: false,
            running: false,
            incoming_enabled: false,
            suspended: false,
            queue_failed: false,
            in_state_cb: false,
            in_closed_cb: false,
            in_delivery: false,
            batch: 0,
            outstanding: 0,
            quota: u32::MAX,
            passive: false,
            pointer: UserPtr::default(),
            latency: 0,
            init_flags: 0,
            server_flags: 0,
            friendly_name: None,
            client_context_size: 0,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_external_data: None,
            ring_pages: (DEFAULT_RING_PAGES, DEFAULT_RING_PAGES),
            interface_type: GUID::default(),
            interface_instance: GUID::default(),
            target_any_instance: true,
            target_set: false,
            mmio_megabytes: (0, 0),
            mmio_space: (0, 0),
            target_vtl: 0,
            vmbus_handle: None,
            state_cbs: StateCallbacks::default(),
            process_packet: None,
            processing_complete: None,
            save_packet: None,
            restore_packet: None,
            pnp_failure: None,
            out: Outgoing::default(),
            redeliver: VecDeque::new(),
            save: None,
            restore: None,
        }
    }

    /// Whether the receiver may take one more data packet now.
    fn can_take_data(&self) -> bool {
        self.state == ChannelState::Open
            && self.incoming_enabled
            && !self.in_delivery
            && !self.queue_failed
            && self.outstanding < self.quota
            && self.process_packet.is_some()
    }
}

/// A snapshot of one channel for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// Bus side the channel was allocated on.
    pub side: Side,
    /// Server endpoint (`IsServer` was TRUE).
    pub is_server: bool,
    /// Connection state.
    pub state: ChannelState,
    /// Flow is paused.
    pub paused: bool,
    /// Flow is started (after `EvtChannelStarted`, before `EvtChannelSuspend`).
    pub running: bool,
    /// The incoming queue was stopped by `VmbChannelPacketFail`.
    pub incoming_queue_failed: bool,
    /// Name set with `VmbChannelInitSetFriendlyName`.
    pub friendly_name: Option<String>,
    /// Bytes set with `VmbChannelInitSetClientContextSize`.
    pub client_context_size: u32,
    /// `VMBUS_CHANNEL_INIT_FLAG_*` bits.
    pub init_flags: u32,
    /// `VMBUS_SERVER_CHANNEL_INIT_FLAG_*` bits.
    pub server_flags: u32,
    /// Maximum inline packet size.
    pub max_packet_size: u32,
    /// `(DataSize, ChainLength)` from `VmbChannelInitSetMaximumExternalData`.
    pub max_external_data: Option<(u32, u32)>,
    /// `(incoming, outgoing)` ring page counts (client setting; defaults otherwise).
    pub ring_page_counts: (u32, u32),
    /// Byte capacity of the outgoing ring (0 until connected).
    pub outgoing_ring_capacity: usize,
    /// Bytes currently used in the outgoing ring.
    pub outgoing_ring_used: usize,
    /// Frames in the outgoing ring.
    pub outgoing_in_ring: usize,
    /// Frames waiting for outgoing ring space (or for the channel to open).
    pub outgoing_waiting: usize,
    /// Incoming packets delivered and not completed yet.
    pub outstanding_incoming: u32,
    /// Transaction quota (`u32::MAX` = unlimited).
    pub transaction_quota: u32,
    /// `VmbChannelSetIncomingProcessingAtPassive(TRUE)` is in force.
    pub incoming_at_passive: bool,
    /// Current interrupt latency (100 ns units).
    pub interrupt_latency: u16,
    /// `(required, optional)` MiB from `VmbServerChannelInitSetMmioMegabytes`.
    pub mmio_megabytes: (u16, u16),
    /// `(address, size)` of the MMIO space assigned at open (client side).
    pub mmio_space: (u64, u64),
    /// Target VTL of the offer.
    pub target_vtl: u8,
    /// Kernel handle value recorded by `VmbServerChannelInitSetVmbusHandle`.
    pub vmbus_handle: Option<usize>,
    /// Interface type GUID (offer or target).
    pub interface_type: GUID,
    /// Interface instance GUID.
    pub interface_instance: GUID,
    /// The channel's pointer (`VmbChannelSetPointer`).
    pub pointer: usize,
}

/// Counts of everything a bus still holds, for leak checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakReport {
    /// Channels allocated and not cleaned up.
    pub channels: usize,
    /// Packet objects from `VmbPacketAllocate` not freed.
    pub packets: usize,
    /// `VmbPacketInitialize` packets still in flight.
    pub initialized_packets_in_flight: usize,
    /// Incoming packets delivered and never completed.
    pub incoming_packets: usize,
    /// GPADLs not deleted.
    pub gpadls: usize,
    /// GPADL mappings not unmapped.
    pub gpadl_mappings: usize,
    /// Kernel handles to this bus's VMBus still open (from the NT emulation).
    pub kernel_handles: usize,
    /// Interface references taken through this bus and not released.
    pub interface_references: usize,
    /// Saves begun and not ended.
    pub save_contexts: usize,
    /// Synchronous requests still waiting.
    pub sync_requests: usize,
    /// Violations recorded and not taken.
    pub violations: Vec<String>,
}

impl LeakReport {
    /// True when nothing is held and nothing was violated.
    pub fn is_clean(&self) -> bool {
        *self == LeakReport::default()
    }
}

/// Why a packet injected with [`crate::Bus::inject_raw_guest_packet`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawPacketError {
    /// The channel is not a connected server channel of this bus.
    NotConnected,
    /// Shorter than a descriptor, or the descriptor's offsets or lengths are inconsistent.
    Malformed,
    /// The packet type or flags are not a guest data packet.
    UnsupportedType,
    /// The payload exceeds the server's maximum packet size or the ring.
    Oversized,
}

/// A completion the server sent for a raw injected packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCompletion {
    /// Transaction id from the injected descriptor.
    pub transaction_id: u64,
    /// Completion status.
    pub status: NTSTATUS,
    /// Completion data.
    pub data: Vec<u8>,
}

/// Fault-injection settings.
#[derive(Debug, Default)]
struct Faults {
    fail_packet_allocations: u32,
    fail_channel_allocations: u32,
    external_data_pending: u32,
    pnp_failures: VecDeque<NTSTATUS>,
}

/// State-change work queued for the pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Opened,
    StartFlow,
    PeerGone { was_open: bool, was_running: bool },
    PnpFailure(NTSTATUS),
}

#[derive(Debug, Clone, Copy)]
struct Event {
    channel: ObjRef,
    kind: EventKind,
}

/// A completion routine (or sync result) to deliver.
#[derive(Debug)]
struct LocalCompletion {
    origin: Origin,
    status: NTSTATUS,
    payload: Vec<u8>,
}

/// The whole mutable state of a bus.
#[derive(Debug, Default)]
pub(crate) struct BusState {
    channels: Slab<Channel>,
    packets: Slab<Packet>,
    incoming: Slab<Incoming>,
    gpadls: BTreeMap<u32, Gpadl>,
    next_gpadl: u32,
    syncs: HashMap<u64, SyncWait>,
    next_txn: u64,
    events: VecDeque<Event>,
    local: VecDeque<LocalCompletion>,
    pool: Vec<Vec<u8>>,
    violations: Vec<String>,
    faults: Faults,
    raw_completions: Vec<RawCompletion>,
    rejected_raw: usize,
    next_mmio: u64,
    active: usize,
    rr: usize,
    block_limit: Option<Duration>,
    delivered: u64,
}

/// A simulated VMBus: the state plus the wake-up signal for blocked calls and the pump.
#[derive(Debug)]
pub(crate) struct BusShared {
    /// Unique id (also in every handle).
    pub id: u64,
    state: Mutex<BusState>,
    cond: Condvar,
    /// Asks the background pump to stop.
    pub stop: AtomicBool,
    /// Threads waiting on `cond`; signalling is skipped when there are none (it costs a system
    /// call on the hot path otherwise).
    waiters: AtomicUsize,
}

/// Every live bus by id, for resolving handles.
static REGISTRY: LazyLock<RwLock<HashMap<u64, Weak<BusShared>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));
static NEXT_BUS_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static CACHE: std::cell::RefCell<Option<(u64, Weak<BusShared>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The live bus with id `id`.
pub(crate) fn lookup_bus(id: u64) -> Option<Arc<BusShared>> {
    let cached = CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(cid, _)| *cid == id)
            .and_then(|(_, w)| w.upgrade())
    });
    if cached.is_some() {
        return cached;
    }
    let bus = REGISTRY
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)?
        .upgrade()?;
    CACHE.with(|c| *c.borrow_mut() = Some((id, Arc::downgrade(&bus))));
    Some(bus)
}

/// Orphan violations kept at most; later ones are counted only.
const ORPHAN_LIMIT: usize = 4096;

/// Misuses that could not be attributed to a live bus, and how many were dropped past
/// [`ORPHAN_LIMIT`].
static ORPHANS: Mutex<(Vec<String>, usize)> = Mutex::new((Vec::new(), 0));

fn orphans() -> MutexGuard<'static, (Vec<String>, usize)> {
    ORPHANS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reports a misuse that cannot be attributed to a live bus (a NULL or garbage handle, or a
/// handle of a bus already dropped): printed at once and kept for [`take_orphan_violations`].
pub(crate) fn orphan_violation(msg: &str) {
    eprintln!("vmbus-kmcl-sim: VIOLATION (no live bus): {msg}");
    let mut o = orphans();
    if o.0.len() < ORPHAN_LIMIT {
        o.0.push(msg.to_string());
    } else {
        o.1 += 1;
    }
}

/// The misuses recorded so far that no live bus could be charged with, oldest first, removed
/// from the process-wide list: a NULL or garbage `VMBCHANNEL`, `VMBPACKET` or
/// `VMBPACKETCOMPLETION` (which a void export such as `VmbChannelCleanup(NULL)` cannot report
/// through a status), a handle of a bus already dropped, an unknown interface context.
///
/// A misuse whose handle names a live bus (a stale or forged handle of that bus, or a handle of
/// the wrong kind) is recorded on that bus instead, in its [`crate::Bus::take_violations`].
/// The list is shared by every thread of the process, so a test that asserts on it must not run
/// concurrently with another test that takes it. At most 4096 entries are kept; a last entry
/// says how many more were dropped.
pub fn take_orphan_violations() -> Vec<String> {
    let mut o = orphans();
    let mut taken = std::mem::take(&mut o.0);
    let dropped = std::mem::take(&mut o.1);
    if dropped > 0 {
        taken.push(format!(
            "{dropped} more orphan violations dropped (limit {ORPHAN_LIMIT})"
        ));
    }
    taken
}

/// Resolution of a handle value.
pub(crate) enum Resolved {
    /// A handle of a live bus (the object may still be stale).
    Live(Arc<BusShared>, ObjRef),
    /// NULL.
    Null,
    /// Not a sim handle, or its bus is gone.
    Unknown,
}

/// Resolves a handle value of kind `kind`.
pub(crate) fn resolve(value: usize, kind: Kind) -> Resolved {
    if value == 0 {
        return Resolved::Null;
    }
    let Some(h) = Handle::decode(value, kind).or_else(|| {
        if kind == Kind::Packet {
            initialized_packet(value)
        } else {
            None
        }
    }) else {
        return Resolved::Unknown;
    };
    match lookup_bus(h.bus) {
        Some(bus) => Resolved::Live(
            bus,
            ObjRef {
                index: h.index,
                generation: h.generation,
            },
        ),
        None => Resolved::Unknown,
    }
}

/// Caller-memory packets (`VmbPacketInitialize`) by address.
static INITIALIZED: LazyLock<Mutex<HashMap<usize, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn initialized_map() -> MutexGuard<'static, HashMap<usize, usize>> {
    INITIALIZED.lock().unwrap_or_else(|e| e.into_inner())
}

fn initialized_packet(addr: usize) -> Option<Handle> {
    let v = *initialized_map().get(&addr)?;
    Handle::decode(v, Kind::Packet)
}

fn round8(n: usize) -> usize {
    n.div_ceil(8).saturating_mul(8)
}

fn frame_size(payload: usize, external: Option<&Described>) -> usize {
    let ext = match external {
        Some(d) => 16 + 8 * d.byte_len().div_ceil(PAGE_SIZE).max(1),
        None => 0,
    };
    FRAME_OVERHEAD + round8(payload) + ext
}

/// An in-use packet found by a save: reference, caller memory, data of its send, wait flag.
type SavedPacket = (ObjRef, Option<UserPtr>, Vec<u8>, bool);

/// Result of a synchronous request: status and completion bytes.
pub(crate) type SyncOutcome = (NTSTATUS, Vec<u8>);

impl BusState {
    fn violation(&mut self, bus: u64, msg: String) {
        eprintln!("vmbus-kmcl-sim: bus {bus}: VIOLATION: {msg}");
        self.violations.push(msg);
    }

    fn take_buf(&mut self, data: &[u8]) -> Vec<u8> {
        let mut v = self.pool.pop().unwrap_or_default();
        v.extend_from_slice(data);
        v
    }

    fn give_buf(&mut self, mut v: Vec<u8>) {
        if self.pool.len() < POOL_LIMIT && v.capacity() <= 65536 {
            v.clear();
            self.pool.push(v);
        }
    }

    fn handle_of(&self, bus: u64, kind: Kind, r: ObjRef) -> usize {
        Handle {
            kind,
            bus,
            index: r.index,
            generation: r.generation,
        }
        .encode()
    }

    /// Moves waiting frames of `c` into its ring while they fit; queues local completions for
    /// data frames that do not wait for the peer.
    fn refill(&mut self, c: ObjRef) {
        loop {
            let Some(ch) = self.channels.get_mut(c) else {
                return;
            };
            if ch.state != ChannelState::Open || ch.peer.is_none() || ch.out.forced_full {
                return;
            }
            let Some(front) = ch.out.waiting.front() else {
                return;
            };
            if ch.out.used + front.size > ch.out.capacity {
                return;
            }
            let Some(f) = ch.out.waiting.pop_front() else {
                return;
            };
            ch.out.used += f.size;
            let local = match f.body {
                FrameBody::Data {
                    origin,
                    wants_completion: false,
                    ..
                } => Some(origin),
                _ => None,
            };
            ch.out.ring.push_back(f);
            if let Some(origin) = local {
                self.local.push_back(LocalCompletion {
                    origin,
                    status: STATUS_SUCCESS,
                    payload: Vec::new(),
                });
            }
        }
    }

    /// Queues `frame` on channel `c`: into the ring when open and there is room (and nothing is
    /// waiting ahead), otherwise at the end of the waiting queue.
    fn enqueue(&mut self, c: ObjRef, frame: Frame) {
        let Some(ch) = self.channels.get_mut(c) else {
            self.drop_frame(frame);
            return;
        };
        ch.out.waiting.push_back(frame);
        self.refill(c);
    }

    fn drop_frame(&mut self, f: Frame) {
        self.give_buf(f.payload);
    }

    fn alloc_txn(&mut self) -> u64 {
        self.next_txn += 1;
        self.next_txn
    }

    /// Completions owed to the senders of frames that will never be delivered.
    fn cancel_frames(&mut self, frames: Vec<Frame>, status: NTSTATUS) {
        for f in frames {
            if let FrameBody::Data { origin, .. } = f.body {
                self.local.push_back(LocalCompletion {
                    origin,
                    status,
                    payload: Vec::new(),
                });
            }
            self.give_buf(f.payload);
        }
    }

    /// Cancels every transaction of channel `c` that is still in flight: queued frames are
    /// dropped, and packet objects waiting for a completion are completed with `status`.
    fn cancel_in_flight(&mut self, c: ObjRef, status: NTSTATUS) {
        let mut frames = Vec::new();
        if let Some(ch) = self.channels.get_mut(c) {
            frames.extend(ch.out.ring.drain(..));
            frames.extend(ch.out.waiting.drain(..));
            ch.out.used = 0;
        }
        // Frames cancelled here complete their packets; data frames already delivered are
        // covered by the scan below.
        let mut cancelled: Vec<Origin> = Vec::new();
        for f in frames {
            match f.body {
                FrameBody::Data { origin, .. } => cancelled.push(origin),
                FrameBody::Completion { .. } => {}
            }
            self.give_buf(f.payload);
        }
        let pending: Vec<(ObjRef, u64)> = self
            .packets
            .iter()
            .filter(|(_, p)| p.channel == c && p.state == PacketState::InFlight)
            .map(|(r, p)| (r, p.txn))
            .collect();
        for (r, txn) in pending {
            let o = Origin::Packet(r, txn);
            if !cancelled.contains(&o) {
                cancelled.push(o);
            }
        }
        for s in self.syncs.values_mut() {
            if s.channel == c && s.result.is_none() {
                s.result = Some((STATUS_DEVICE_REMOVED, Vec::new()));
            }
        }
        for origin in cancelled {
            self.local.push_back(LocalCompletion {
                origin,
                status,
                payload: Vec::new(),
            });
        }
    }

    /// Separates `a` from its peer. The peer gets a `PeerGone` event when `notify_peer`.
    fn disconnect(&mut self, a: ObjRef, notify_peer: bool, crash_peer: bool) {
        let Some(peer) = self.channels.get_mut(a).and_then(|c| c.peer.take()) else {
            return;
        };
        // Drop completions travelling toward either side; the data frames are cancelled.
        let mut frames = Vec::new();
        if let Some(ch) = self.channels.get_mut(a) {
            frames.extend(ch.out.ring.drain(..));
            ch.out.used = 0;
        }
        let mut peer_frames = Vec::new();
        let mut peer_info = None;
        if let Some(p) = self.channels.get_mut(peer) {
            p.peer = None;
            peer_frames.extend(p.out.ring.drain(..));
            p.out.used = 0;
            let was_open = p.state == ChannelState::Open;
            let was_running = p.running;
            p.running = false;
            p.incoming_enabled = false;
            if crash_peer {
                p.state = ChannelState::Crashed;
            } else if p.state != ChannelState::Disabled && p.state != ChannelState::Crashed {
                p.state = if p.is_server {
                    ChannelState::Enabled
                } else {
                    ChannelState::Disabled
                };
            }
            peer_info = Some((was_open, was_running));
        }
        // Frames of `a` in flight in its ring go back to `a`'s waiting queue owners as
        // cancellations (handled by the caller's cancel_in_flight); frames of the peer likewise.
        self.cancel_frames(frames, STATUS_CANCELLED);
        self.cancel_frames(peer_frames, STATUS_CANCELLED);
        if let Some((was_open, was_running)) = peer_info {
            if crash_peer {
                self.silence_packets(peer);
            } else {
                self.cancel_in_flight(peer, STATUS_CANCELLED);
                if notify_peer {
                    self.events.retain(|e| e.channel != peer);
                    self.events.push_back(Event {
                        channel: peer,
                        kind: EventKind::PeerGone {
                            was_open,
                            was_running,
                        },
                    });
                }
            }
        }
    }

    /// A crashed side's packets: default-routine packets are freed, others become idle; nothing
    /// is reported to the crashed driver.
    fn silence_packets(&mut self, c: ObjRef) {
        let list: Vec<(ObjRef, bool)> = self
            .packets
            .iter()
            .filter(|(_, p)| p.channel == c && p.state == PacketState::InFlight)
            .map(|(r, p)| (r, p.routine.is_none() && p.initialized_at.is_none()))
            .collect();
        for (r, free) in list {
            if free {
                self.packets.remove(r);
            } else if let Some(p) = self.packets.get_mut(r) {
                p.state = PacketState::Idle;
            }
        }
        if let Some(ch) = self.channels.get_mut(c) {
            let frames: Vec<Frame> = ch.out.waiting.drain(..).collect();
            for f in frames {
                self.give_buf(f.payload);
            }
        }
        let syncs: Vec<u64> = self
            .syncs
            .iter()
            .filter(|(_, s)| s.channel == c)
            .map(|(k, _)| *k)
            .collect();
        for k in syncs {
            if let Some(s) = self.syncs.get_mut(&k) {
                s.result = Some((STATUS_DEVICE_REMOVED, Vec::new()));
            }
        }
    }

    fn try_connect(&mut self, c: ObjRef) {
        let Some(ch) = self.channels.get(c) else {
            return;
        };
        if ch.state != ChannelState::Enabled || ch.peer.is_some() || ch.rejected {
            return;
        }
        let is_server = ch.is_server;
        let candidate = self
            .channels
            .iter()
            .filter(|(r, o)| {
                *r != c
                    && o.is_server != is_server
                    && o.state == ChannelState::Enabled
                    && o.peer.is_none()
                    && !o.rejected
            })
            .find(|(_, o)| {
                let (server, client) = if is_server { (ch, *o) } else { (*o, ch) };
                server.target_vtl == 0
                    && client.target_set
                    && client.interface_type == server.interface_type
                    && (client.target_any_instance
                        || client.interface_instance == server.interface_instance)
            })
            .map(|(r, _)| r);
        let Some(other) = candidate else { return };
        let (s, cl) = if is_server { (c, other) } else { (other, c) };
        if let Some(status) = self.faults.pnp_failures.pop_front() {
            if let Some(client) = self.channels.get_mut(cl) {
                client.rejected = true;
            }
            self.events.push_back(Event {
                channel: cl,
                kind: EventKind::PnpFailure(status),
            });
            return;
        }
        let (client_pages, client_max) = match self.channels.get(cl) {
            Some(x) => (x.ring_pages, x.max_packet_size),
            None => return,
        };
        let (server_max, mmio, server_instance) = match self.channels.get(s) {
            Some(x) => (x.max_packet_size, x.mmio_megabytes, x.interface_instance),
            None => return,
        };
        let mmio_size = (u64::from(mmio.0) + u64::from(mmio.1)) << 20;
        let mmio_base = if mmio_size > 0 {
            let base = 0xF_0000_0000 + self.next_mmio;
            self.next_mmio += mmio_size;
            base
        } else {
            0
        };
        let min_ring = |max: u32| frame_size(max as usize, None);
        if let Some(x) = self.channels.get_mut(s) {
            x.peer = Some(cl);
            x.state = ChannelState::Connecting;
            x.out.capacity = (client_pages.0 as usize * PAGE_SIZE).max(min_ring(server_max));
        }
        if let Some(x) = self.channels.get_mut(cl) {
            x.peer = Some(s);
            x.state = ChannelState::Connecting;
            x.out.capacity = (client_pages.1 as usize * PAGE_SIZE).max(min_ring(client_max));
            x.mmio_space = (mmio_base, mmio_size);
            x.interface_instance = server_instance;
        }
        self.events.push_back(Event {
            channel: s,
            kind: EventKind::Opened,
        });
        self.events.push_back(Event {
            channel: cl,
            kind: EventKind::Opened,
        });
    }
}

/// What the pump does next, decided under the lock.
enum Work {
    Event(Event),
    Local(LocalCompletion),
    Deliver {
        receiver: ObjRef,
        incoming: ObjRef,
    },
    Complete {
        origin: Origin,
        status: NTSTATUS,
        payload: Vec<u8>,
    },
    BatchDone {
        channel: ObjRef,
    },
}

impl BusShared {
    /// A new, registered bus.
    pub(crate) fn new() -> Arc<BusShared> {
        let id = NEXT_BUS_ID.fetch_add(1, Ordering::Relaxed);
        assert!(
            id <= MAX_BUS_ID,
            "vmbus-kmcl-sim: too many buses in one process"
        );
        let bus = Arc::new(BusShared {
            id,
            state: Mutex::new(BusState {
                next_gpadl: 1,
                ..BusState::default()
            }),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
        });
        REGISTRY
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::downgrade(&bus));
        bus
    }

    /// Removes the bus from the registry: its handles stop resolving.
    pub(crate) fn unregister(&self) {
        REGISTRY
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        let mut map = initialized_map();
        map.retain(|_, v| Handle::decode(*v, Kind::Packet).is_none_or(|h| h.bus != self.id));
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cond.notify_all();
        }
    }

    /// Sleeps until the bus is signalled or `d` passed.
    pub(crate) fn park(&self, d: Duration) {
        let st = self.lock();
        drop(self.wait(st, d));
    }

    fn violation(&self, st: &mut BusState, msg: String) {
        st.violation(self.id, msg);
    }

    /// Records a violation from outside the engine.
    pub(crate) fn record_violation(&self, msg: String) {
        let mut st = self.lock();
        self.violation(&mut st, msg);
    }

    fn chan_handle(&self, r: ObjRef) -> usize {
        Handle {
            kind: Kind::Channel,
            bus: self.id,
            index: r.index,
            generation: r.generation,
        }
        .encode()
    }

    /// Waits on the bus signal for at most `d`.
    fn wait<'a>(&self, st: MutexGuard<'a, BusState>, d: Duration) -> MutexGuard<'a, BusState> {
        // Registered while the lock is held, so a notifier that changes the state under the
        // lock afterwards sees the waiter.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let g = match self.cond.wait_timeout(st, d) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        g
    }

    fn block_limit(st: &BusState) -> Duration {
        st.block_limit.unwrap_or(Duration::from_secs(5))
    }

    /// Blocks until `done` holds, up to the bus's block limit; returns false on timeout.
    fn block_until<'a>(
        &'a self,
        mut st: MutexGuard<'a, BusState>,
        mut done: impl FnMut(&BusState) -> bool,
    ) -> (MutexGuard<'a, BusState>, bool) {
        let deadline = Instant::now() + Self::block_limit(&st);
        loop {
            if done(&st) {
                return (st, true);
            }
            let now = Instant::now();
            if now >= deadline {
                return (st, false);
            }
            // Help the bus make progress (the peer's callbacks may be what we wait for, and in
            // deterministic tests no other thread delivers); sleep only when nothing is ready.
            drop(st);
            let progressed = self.pump_once();
            st = self.lock();
            if !progressed && !done(&st) {
                st = self.wait(st, (deadline - now).min(Duration::from_millis(20)));
            }
        }
    }

    // ----- Test control -----

    pub(crate) fn set_block_limit(&self, d: Duration) {
        self.lock().block_limit = Some(d);
    }

    pub(crate) fn fail_packet_allocations(&self, n: u32) {
        self.lock().faults.fail_packet_allocations = n;
    }

    pub(crate) fn fail_channel_allocations(&self, n: u32) {
        self.lock().faults.fail_channel_allocations = n;
    }

    pub(crate) fn external_data_pending(&self, n: u32) {
        self.lock().faults.external_data_pending = n;
    }

    pub(crate) fn fail_next_open(&self, status: NTSTATUS) {
        self.lock().faults.pnp_failures.push_back(status);
    }

    pub(crate) fn set_ring_full(&self, c: ObjRef, full: bool) -> bool {
        let mut st = self.lock();
        let Some(ch) = st.channels.get_mut(c) else {
            return false;
        };
        ch.out.forced_full = full;
        if !full {
            st.refill(c);
        }
        drop(st);
        self.notify();
        true
    }

    pub(crate) fn crash_peer_of(&self, c: ObjRef) -> bool {
        let mut st = self.lock();
        let Some(ch) = st.channels.get(c) else {
            return false;
        };
        if ch.peer.is_none() {
            return false;
        }
        let (was_open, was_running) = (ch.state == ChannelState::Open, ch.running);
        st.disconnect(c, false, true);
        if let Some(ch) = st.channels.get_mut(c) {
            ch.running = false;
            ch.incoming_enabled = false;
            ch.state = if ch.is_server {
                ChannelState::Enabled
            } else {
                ChannelState::Disabled
            };
        }
        st.cancel_in_flight(c, STATUS_CANCELLED);
        st.events.retain(|e| e.channel != c);
        st.events.push_back(Event {
            channel: c,
            kind: EventKind::PeerGone {
                was_open,
                was_running,
            },
        });
        drop(st);
        self.notify();
        true
    }

    pub(crate) fn channel_info(&self, c: ObjRef) -> Option<ChannelInfo> {
        let st = self.lock();
        let ch = st.channels.get(c)?;
        Some(ChannelInfo {
            side: ch.side,
            is_server: ch.is_server,
            state: ch.state,
            paused: ch.paused,
            running: ch.running,
            incoming_queue_failed: ch.queue_failed,
            friendly_name: ch.friendly_name.clone(),
            client_context_size: ch.client_context_size,
            init_flags: ch.init_flags,
            server_flags: ch.server_flags,
            max_packet_size: ch.max_packet_size,
            max_external_data: ch.max_external_data,
            ring_page_counts: ch.ring_pages,
            outgoing_ring_capacity: ch.out.capacity,
            outgoing_ring_used: ch.out.used,
            outgoing_in_ring: ch.out.ring.len(),
            outgoing_waiting: ch.out.waiting.len(),
            outstanding_incoming: ch.outstanding,
            transaction_quota: ch.quota,
            incoming_at_passive: ch.passive,
            interrupt_latency: ch.latency,
            mmio_megabytes: ch.mmio_megabytes,
            mmio_space: ch.mmio_space,
            target_vtl: ch.target_vtl,
            vmbus_handle: ch.vmbus_handle,
            interface_type: ch.interface_type,
            interface_instance: ch.interface_instance,
            pointer: ch.pointer.addr(),
        })
    }

    pub(crate) fn leak_counts(&self) -> LeakReport {
        let st = self.lock();
        LeakReport {
            channels: st.channels.len(),
            packets: st
                .packets
                .iter()
                .filter(|(_, p)| p.initialized_at.is_none())
                .count(),
            initialized_packets_in_flight: st
                .packets
                .iter()
                .filter(|(_, p)| p.initialized_at.is_some() && p.state != PacketState::Idle)
                .count(),
            incoming_packets: st.incoming.len(),
            gpadls: st.gpadls.len(),
            gpadl_mappings: st.gpadls.values().filter(|g| g.mapping.is_some()).count(),
            kernel_handles: 0,
            interface_references: 0,
            save_contexts: st.channels.iter().filter(|(_, c)| c.save.is_some()).count(),
            sync_requests: st.syncs.len(),
            violations: st.violations.clone(),
        }
    }

    pub(crate) fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().violations)
    }

    pub(crate) fn raw_completions(&self) -> Vec<RawCompletion> {
        std::mem::take(&mut self.lock().raw_completions)
    }

    pub(crate) fn packets_delivered(&self) -> u64 {
        self.lock().delivered
    }

    /// Injects raw bytes as a packet the guest put in the ring of the server channel `s`.
    pub(crate) fn inject_raw(&self, s: ObjRef, bytes: &[u8]) -> Result<(), RawPacketError> {
        let mut st = self.lock();
        let result = self.inject_raw_locked(&mut st, s, bytes);
        if result.is_err() {
            st.rejected_raw += 1;
        }
        drop(st);
        self.notify();
        result
    }

    fn inject_raw_locked(
        &self,
        st: &mut BusState,
        s: ObjRef,
        bytes: &[u8],
    ) -> Result<(), RawPacketError> {
        let server = st.channels.get(s).ok_or(RawPacketError::NotConnected)?;
        if !server.is_server {
            return Err(RawPacketError::NotConnected);
        }
        let guest = server.peer.ok_or(RawPacketError::NotConnected)?;
        let max = server.max_packet_size as usize;
        // Copy the descriptor out before looking at it.
        let mut hdr = [0u8; 16];
        hdr.copy_from_slice(bytes.get(..16).ok_or(RawPacketError::Malformed)?);
        let ty = u16::from_le_bytes([hdr[0], hdr[1]]);
        let offset = usize::from(u16::from_le_bytes([hdr[2], hdr[3]])) * 8;
        let total = usize::from(u16::from_le_bytes([hdr[4], hdr[5]])) * 8;
        let flags = u16::from_le_bytes([hdr[6], hdr[7]]);
        let mut txid = [0u8; 8];
        txid.copy_from_slice(&hdr[8..16]);
        let txid = u64::from_le_bytes(txid);
        if offset < 16 || total < offset || total > bytes.len() {
            return Err(RawPacketError::Malformed);
        }
        // 0x6: in-band data; flag bit 0: completion requested.
        if ty != 0x6 || flags & !1 != 0 {
            return Err(RawPacketError::UnsupportedType);
        }
        let payload = bytes.get(offset..total).ok_or(RawPacketError::Malformed)?;
        let size = frame_size(payload.len(), None);
        let cap = st.channels.get(guest).map(|g| g.out.capacity).unwrap_or(0);
        if payload.len() > max || size > cap {
            return Err(RawPacketError::Oversized);
        }
        let payload = st.take_buf(payload);
        let frame = Frame {
            size,
            payload,
            body: FrameBody::Data {
                origin: Origin::Raw(txid),
                wants_completion: flags & 1 != 0,
                external: None,
            },
        };
        // Straight into the guest's ring, ahead of nothing the guest driver queued later.
        if let Some(g) = st.channels.get_mut(guest) {
            if g.out.used + size <= g.out.capacity {
                g.out.used += size;
                g.out.ring.push_back(frame);
                return Ok(());
            }
            g.out.waiting.push_back(frame);
            return Ok(());
        }
        Err(RawPacketError::NotConnected)
    }

    pub(crate) fn rejected_raw(&self) -> usize {
        self.lock().rejected_raw
    }

    // ----- The pump -----

    /// Does one unit of asynchronous work. Returns false when nothing could be done.
    pub(crate) fn pump_once(&self) -> bool {
        let mut st = self.lock();
        let Some(work) = self.next_work(&mut st) else {
            return false;
        };
        st.active += 1;
        drop(st);
        self.do_work(work);
        let mut st = self.lock();
        st.active -= 1;
        drop(st);
        self.notify();
        true
    }

    /// True when no work is queued and no other thread is inside a delivery.
    pub(crate) fn idle(&self) -> bool {
        let mut st = self.lock();
        st.active == 0 && !self.has_work(&mut st)
    }

    fn has_work(&self, st: &mut BusState) -> bool {
        // Cheap conservative check: run `next_work` logic without consuming is complex, so look
        // for any queue that could produce work.
        if !st.local.is_empty() || st.events.iter().any(|e| Self::event_ready(st, e)) {
            return true;
        }
        for i in 0..st.channels.capacity() {
            let Some((_, ch)) = st.channels.at(i) else {
                continue;
            };
            if ch.batch > 0 || (!ch.redeliver.is_empty() && ch.can_take_data()) {
                return true;
            }
            let Some(peer) = ch.peer else { continue };
            if let Some(p) = st.channels.get(peer) {
                match p.out.ring.front().map(|f| &f.body) {
                    Some(FrameBody::Completion { .. }) => return true,
                    Some(FrameBody::Data { .. }) if ch.can_take_data() => return true,
                    _ => {}
                }
            }
        }
        false
    }

    fn event_ready(st: &BusState, e: &Event) -> bool {
        st.channels.get(e.channel).is_none_or(|c| !c.in_state_cb)
    }

    fn next_work(&self, st: &mut BusState) -> Option<Work> {
        if let Some(pos) = st.events.iter().position(|e| Self::event_ready(st, e)) {
            return st.events.remove(pos).map(Work::Event);
        }
        if let Some(l) = st.local.pop_front() {
            return Some(Work::Local(l));
        }
        let n = st.channels.capacity();
        for k in 0..n {
            let i = (st.rr + k) % n;
            let Some((r, ch)) = st.channels.at(i) else {
                continue;
            };
            // Redelivery first: deferred or pending packets come back before new ones.
            if ch.can_take_data() {
                if let Some(&inc) = ch.redeliver.front() {
                    let ch = st.channels.get_mut(r)?;
                    ch.redeliver.pop_front();
                    ch.in_delivery = true;
                    ch.batch += 1;
                    st.rr = i + 1;
                    return Some(Work::Deliver {
                        receiver: r,
                        incoming: inc,
                    });
                }
            }
            let Some(peer) = ch.peer else { continue };
            let can_take = ch.can_take_data();
            let front_is_completion = match st.channels.get(peer).and_then(|p| p.out.ring.front()) {
                Some(f) => matches!(f.body, FrameBody::Completion { .. }),
                None => continue,
            };
            if !front_is_completion && !can_take {
                continue;
            }
            let p = st.channels.get_mut(peer)?;
            let frame = p.out.ring.pop_front()?;
            p.out.used = p.out.used.saturating_sub(frame.size);
            st.refill(peer);
            st.rr = i + 1;
            match frame.body {
                FrameBody::Completion { origin, status } => {
                    return Some(Work::Complete {
                        origin,
                        status,
                        payload: frame.payload,
                    });
                }
                FrameBody::Data {
                    origin,
                    wants_completion,
                    external,
                } => {
                    let inc = st.incoming.insert(Incoming {
                        receiver: r,
                        payload: frame.payload,
                        origin,
                        wants_completion,
                        external,
                        external_mdl: None,
                        state: InState::Delivering,
                        pended_once: false,
                    });
                    let Some(inc) = inc else {
                        self.violation(st, "too many incoming packets outstanding".into());
                        return None;
                    };
                    let ch = st.channels.get_mut(r)?;
                    ch.in_delivery = true;
                    ch.outstanding += 1;
                    ch.batch += 1;
                    return Some(Work::Deliver {
                        receiver: r,
                        incoming: inc,
                    });
                }
            }
        }
        // Batches that ended: nothing more deliverable right now.
        for i in 0..n {
            let Some((r, ch)) = st.channels.at(i) else {
                continue;
            };
            if ch.batch > 0 && !ch.in_delivery {
                return Some(Work::BatchDone { channel: r });
            }
        }
        None
    }

    fn do_work(&self, work: Work) {
        match work {
            Work::Event(e) => self.run_event(e),
            Work::Local(l) => self.complete_origin(l.origin, l.status, l.payload),
            Work::Complete {
                origin,
                status,
                payload,
            } => self.complete_origin(origin, status, payload),
            Work::Deliver { receiver, incoming } => self.deliver(receiver, incoming),
            Work::BatchDone { channel } => {
                let mut st = self.lock();
                let Some(ch) = st.channels.get_mut(channel) else {
                    return;
                };
                let count = std::mem::take(&mut ch.batch);
                let call = Call::ProcessingComplete {
                    f: ch.processing_complete,
                    channel: ch.handle,
                    count,
                    passive: ch.passive,
                };
                let skip = ch.state == ChannelState::Crashed;
                drop(st);
                if !skip {
                    callbacks::run(call);
                }
            }
        }
    }

    fn deliver(&self, r: ObjRef, inc: ObjRef) {
        let mut st = self.lock();
        let ext_flag;
        let (buf, len, redelivery) = match st.incoming.get_mut(inc) {
            Some(i) => {
                let redelivery = i.state == InState::Redeliver;
                i.state = InState::Delivering;
                ext_flag = i.external.is_some();
                (i.payload.as_mut_ptr(), i.payload.len(), redelivery)
            }
            None => {
                if let Some(ch) = st.channels.get_mut(r) {
                    ch.in_delivery = false;
                }
                return;
            }
        };
        let Some(ch) = st.channels.get(r) else { return };
        let call = Call::ProcessPacket {
            f: ch.process_packet,
            channel: ch.handle,
            packet: st.handle_of(self.id, Kind::Incoming, inc),
            buf,
            // CAST: payloads are bounded by the maximum packet size, a u32.
            len: len as u32,
            flags: if ext_flag {
                VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA
            } else {
                0
            },
            passive: ch.passive || redelivery,
        };
        let crashed = ch.state == ChannelState::Crashed;
        st.delivered += 1;
        drop(st);
        if !crashed {
            callbacks::run(call);
        }
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(r) {
            ch.in_delivery = false;
        }
        let requeue = match st.incoming.get_mut(inc) {
            Some(i) => match i.state {
                InState::Deferred | InState::PendingExternal => {
                    i.state = InState::Redeliver;
                    true
                }
                InState::Delivering => {
                    i.state = InState::Held;
                    false
                }
                _ => false,
            },
            None => false,
        };
        if requeue {
            if let Some(ch) = st.channels.get_mut(r) {
                ch.redeliver.push_back(inc);
            }
        }
    }

    /// Delivers a completion to whoever waits for it.
    fn complete_origin(&self, origin: Origin, status: NTSTATUS, payload: Vec<u8>) {
        let mut st = self.lock();
        match origin {
            Origin::Sync(id) => {
                if let Some(s) = st.syncs.get_mut(&id) {
                    if s.result.is_none() {
                        s.result = Some((status, payload));
                        drop(st);
                        self.notify();
                        return;
                    }
                }
                st.give_buf(payload);
            }
            Origin::Raw(txid) => {
                st.raw_completions.push(RawCompletion {
                    transaction_id: txid,
                    status,
                    data: payload.clone(),
                });
                st.give_buf(payload);
            }
            Origin::Packet(p, txn) => {
                let Some(pk) = st.packets.get_mut(p) else {
                    st.give_buf(payload);
                    return;
                };
                if pk.txn != txn || pk.state != PacketState::InFlight {
                    // A late completion of a cancelled transaction.
                    st.give_buf(payload);
                    return;
                }
                pk.restored = None;
                if pk.routine.is_none() {
                    // The default completion routine frees the packet.
                    st.packets.remove(p);
                    st.give_buf(payload);
                    return;
                }
                pk.state = PacketState::Completing;
                let pk_ptr = pk.initialized_at.unwrap_or(UserPtr(crate::handle::to_ptr(
                    Handle {
                        kind: Kind::Packet,
                        bus: self.id,
                        index: p.index,
                        generation: p.generation,
                    }
                    .encode(),
                )));
                let mut payload = payload;
                let (buf, len) = if payload.is_empty() {
                    (std::ptr::null_mut(), 0)
                } else {
                    // CAST: completion data is bounded by the maximum packet size.
                    (payload.as_mut_ptr(), payload.len() as u32)
                };
                let call = Call::Completion {
                    f: pk.routine,
                    packet: pk_ptr,
                    status,
                    buf,
                    len,
                };
                drop(st);
                callbacks::run(call);
                let mut st = self.lock();
                if let Some(pk) = st.packets.get_mut(p) {
                    if pk.state == PacketState::Completing {
                        pk.state = PacketState::Idle;
                    }
                }
                st.give_buf(payload);
            }
        }
    }

    fn run_event(&self, e: Event) {
        let mut st = self.lock();
        let Some(ch) = st.channels.get_mut(e.channel) else {
            return;
        };
        if ch.state == ChannelState::Crashed {
            return;
        }
        let handle = ch.handle;
        match e.kind {
            EventKind::Opened => {
                if ch.state != ChannelState::Connecting {
                    return;
                }
                ch.state = ChannelState::Open;
                ch.in_state_cb = true;
                let f = ch.state_cbs.opened;
                drop(st);
                let (status, _) = callbacks::run(Call::Opened(f, handle));
                let mut st = self.lock();
                let Some(ch) = st.channels.get_mut(e.channel) else {
                    return;
                };
                ch.in_state_cb = false;
                if ch.state != ChannelState::Open {
                    return;
                }
                if !nt_success(status) {
                    // Roll back: no traffic on this pairing.
                    ch.state = ChannelState::Enabled;
                    ch.rejected = true;
                    st.disconnect(e.channel, true, false);
                    st.cancel_in_flight(e.channel, STATUS_CANCELLED);
                    drop(st);
                    self.notify();
                    return;
                }
                let start = !ch.paused;
                st.refill(e.channel);
                if start {
                    st.events.push_back(Event {
                        channel: e.channel,
                        kind: EventKind::StartFlow,
                    });
                }
            }
            EventKind::StartFlow => {
                if ch.state != ChannelState::Open || ch.paused || ch.running {
                    return;
                }
                ch.running = true;
                ch.suspended = false;
                ch.queue_failed = false;
                ch.in_state_cb = true;
                let f = ch.state_cbs.started;
                drop(st);
                callbacks::run(Call::State(f, handle));
                let mut st = self.lock();
                let Some(ch) = st.channels.get_mut(e.channel) else {
                    return;
                };
                if ch.running {
                    ch.incoming_enabled = true;
                }
                let f = ch.state_cbs.post_started;
                let go = ch.running;
                drop(st);
                self.notify();
                if go {
                    callbacks::run(Call::State(f, handle));
                }
                let mut st = self.lock();
                if let Some(ch) = st.channels.get_mut(e.channel) {
                    ch.in_state_cb = false;
                }
            }
            EventKind::PeerGone {
                was_open,
                was_running,
            } => {
                ch.in_state_cb = true;
                let cbs = ch.state_cbs;
                drop(st);
                if was_running {
                    callbacks::run(Call::State(cbs.suspend, handle));
                }
                if was_open {
                    let mut st = self.lock();
                    if let Some(ch) = st.channels.get_mut(e.channel) {
                        ch.in_closed_cb = true;
                    }
                    drop(st);
                    callbacks::run(Call::State(cbs.closed, handle));
                }
                let mut st = self.lock();
                if let Some(ch) = st.channels.get_mut(e.channel) {
                    ch.in_state_cb = false;
                    ch.in_closed_cb = false;
                }
                self.reclaim_gpadls(&mut st, e.channel, "EvtChannelClosed returned");
                let reconnect = st.channels.get(e.channel).is_some_and(|c| c.is_server);
                if reconnect {
                    st.try_connect(e.channel);
                }
            }
            EventKind::PnpFailure(status) => {
                let f = ch.pnp_failure;
                drop(st);
                callbacks::run(Call::PnpFailure(f, handle, status));
            }
        }
    }

    /// GPADLs still owned by `c` when they must be gone: reported and reclaimed.
    fn reclaim_gpadls(&self, st: &mut BusState, c: ObjRef, when: &str) {
        let left: Vec<u32> = st
            .gpadls
            .iter()
            .filter(|(_, g)| g.owner == c)
            .map(|(k, _)| *k)
            .collect();
        for id in left {
            self.violation(st, format!("GPADL {id} still exists after {when}; the driver must delete every GPADL by the end of EvtChannelClosed"));
            st.gpadls.remove(&id);
        }
    }

    // ----- Channel lifecycle -----

    fn channel<'a>(&self, st: &'a mut BusState, c: ObjRef, what: &str) -> Option<&'a mut Channel> {
        if st.channels.get(c).is_none() {
            st.violation(
                self.id,
                format!(
                    "{what}: stale VMBCHANNEL (use after VmbChannelCleanup or a forged handle)"
                ),
            );
            return None;
        }
        st.channels.get_mut(c)
    }

    pub(crate) fn channel_allocate(&self, side: Side, is_server: bool) -> Result<usize, NTSTATUS> {
        let mut st = self.lock();
        if st.faults.fail_channel_allocations > 0 {
            st.faults.fail_channel_allocations -= 1;
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        if is_server != (side == Side::Root) {
            return Err(STATUS_INVALID_PARAMETER_2);
        }
        let r = st
            .channels
            .insert(Channel::new(0, side, is_server))
            .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let h = self.chan_handle(r);
        if let Some(ch) = st.channels.get_mut(r) {
            ch.handle = h;
        }
        Ok(h)
    }

    /// Runs `f` on a channel that is in the configurable (disabled) state; otherwise
    /// `STATUS_INVALID_PARAMETER_1`. `server` restricts the setter to one endpoint kind.
    pub(crate) fn init_set(
        &self,
        c: ObjRef,
        server: Option<bool>,
        f: impl FnOnce(&mut Channel) -> NTSTATUS,
    ) -> NTSTATUS {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "init setter") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if ch.state != ChannelState::Disabled || server.is_some_and(|s| s != ch.is_server) {
            return STATUS_INVALID_PARAMETER_1;
        }
        f(ch)
    }

    pub(crate) fn set_flags(&self, c: ObjRef, flags: u32) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            if flags & !VMBUS_CHANNEL_INIT_FLAGS != 0 {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.init_flags = flags;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_server_flags(&self, c: ObjRef, flags: u32) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            if flags & !VMBUS_SERVER_CHANNEL_INIT_FLAGS != 0 {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.server_flags = flags;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_friendly_name(&self, c: ObjRef, name: String) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            ch.friendly_name = Some(name);
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_client_context_size(&self, c: ObjRef, size: u32) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            ch.client_context_size = size;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_max_external_data(&self, c: ObjRef, size: u32, chain: u32) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            if size == 0 {
                return STATUS_INVALID_PARAMETER_2;
            }
            if chain == 0 {
                return STATUS_INVALID_PARAMETER_3;
            }
            ch.max_external_data = Some((size, chain));
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_max_packet_size(&self, c: ObjRef, size: u32) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            // The sim bounds the size so that frames and packet objects stay within u32.
            if size == 0 || size > 0x0100_0000 {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.max_packet_size = size;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_process_packet_callbacks(
        &self,
        c: ObjRef,
        pp: PFN_VMB_CHANNEL_PROCESS_PACKET,
        pc: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    ) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            if pp.is_none() {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.process_packet = pp;
            ch.processing_complete = pc;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_state_callbacks(&self, c: ObjRef, cbs: StateCallbacks) -> NTSTATUS {
        self.init_set(c, None, |ch| {
            ch.state_cbs = cbs;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_ring_pages(&self, c: ObjRef, incoming: u32, outgoing: u32) -> NTSTATUS {
        self.init_set(c, Some(false), |ch| {
            // Bounded so that ring sizes stay far from overflow.
            if incoming == 0 || incoming > 0x10000 {
                return STATUS_INVALID_PARAMETER_2;
            }
            if outgoing == 0 || outgoing > 0x10000 {
                return STATUS_INVALID_PARAMETER_3;
            }
            ch.ring_pages = (incoming, outgoing);
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_target_pnp(
        &self,
        c: ObjRef,
        ty: GUID,
        instance: Option<GUID>,
        pnp: PFN_VMB_CHANNEL_PNP_FAILURE,
    ) -> NTSTATUS {
        self.init_set(c, Some(false), |ch| {
            ch.interface_type = ty;
            ch.target_any_instance = instance.is_none();
            ch.interface_instance = instance.unwrap_or_default();
            ch.pnp_failure = pnp;
            ch.target_set = true;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_target_interface_id(&self, c: ObjRef, ty: GUID, inst: GUID) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            ch.interface_type = ty;
            ch.interface_instance = inst;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_mmio(&self, c: ObjRef, mb: u16, opt: u16) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            if mb == 0 && opt == 0 {
                return STATUS_INVALID_PARAMETER;
            }
            ch.mmio_megabytes = (mb, opt);
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_save_restore_callbacks(
        &self,
        c: ObjRef,
        save: PFN_VMB_CHANNEL_SAVE_PACKET,
        restore: PFN_VMB_CHANNEL_RESTORE_PACKET,
    ) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            if save.is_none() {
                return STATUS_INVALID_PARAMETER_2;
            }
            if restore.is_none() {
                return STATUS_INVALID_PARAMETER_3;
            }
            ch.save_packet = save;
            ch.restore_packet = restore;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_target_vtl(&self, c: ObjRef, vtl: u8) -> NTSTATUS {
        self.init_set(c, Some(true), |ch| {
            // Hyper-V defines VTL 0 to 2.
            if vtl > 2 {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.target_vtl = vtl;
            STATUS_SUCCESS
        })
    }

    pub(crate) fn set_vmbus_handle(
        &self,
        c: ObjRef,
        h: usize,
        handle_bus: Option<u64>,
    ) -> NTSTATUS {
        let bus = self.id;
        self.init_set(c, Some(true), |ch| {
            if handle_bus != Some(bus) {
                return STATUS_INVALID_PARAMETER_2;
            }
            ch.vmbus_handle = Some(h);
            STATUS_SUCCESS
        })
    }

    pub(crate) fn enable(&self, c: ObjRef) -> NTSTATUS {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelEnable") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if ch.state != ChannelState::Disabled {
            return STATUS_INVALID_DEVICE_STATE;
        }
        if !ch.is_server && !ch.target_set {
            // Nothing to open: the client never named a target.
            return STATUS_INVALID_DEVICE_STATE;
        }
        // The offer is made with the VMBus handle the server recorded: it must still be open.
        // (A leaf lookup in the NT emulation, which never calls back into a bus.)
        if let Some(h) = ch.vmbus_handle.filter(|_| ch.is_server) {
            if !crate::nt::is_open_kernel_handle(crate::handle::to_ptr(h)) {
                self.violation(
                    &mut st,
                    format!(
                        "VmbChannelEnable: the VMBus handle {h:#x} given to \
                         VmbServerChannelInitSetVmbusHandle is no longer an open kernel handle \
                         (closed with ZwClose before the channel was offered)"
                    ),
                );
                return crate::nt::STATUS_INVALID_HANDLE;
            }
        }
        ch.state = ChannelState::Enabled;
        ch.rejected = false;
        // The server always comes up paused (it starts the flow itself); the client is active
        // unless a pause was armed while it was disabled.
        ch.paused = ch.is_server || ch.pause_armed;
        ch.pause_armed = false;
        st.try_connect(c);
        drop(st);
        self.notify();
        STATUS_SUCCESS
    }

    pub(crate) fn start(&self, c: ObjRef) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelStart") else {
            return;
        };
        if ch.in_state_cb {
            self.violation(
                &mut st,
                "VmbChannelStart called from inside a state-change callback".into(),
            );
            return;
        }
        match ch.state {
            ChannelState::Disabled | ChannelState::Crashed => {
                ch.pause_armed = false;
                return;
            }
            _ => {}
        }
        if !ch.paused {
            return;
        }
        ch.paused = false;
        if ch.state == ChannelState::Open && !ch.running {
            st.events.push_back(Event {
                channel: c,
                kind: EventKind::StartFlow,
            });
        }
        drop(st);
        self.notify();
    }

    pub(crate) fn pause(&self, c: ObjRef) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelPause") else {
            return;
        };
        if ch.in_state_cb {
            self.violation(
                &mut st,
                "VmbChannelPause called from inside a state-change callback".into(),
            );
            return;
        }
        if ch.state == ChannelState::Disabled || ch.state == ChannelState::Crashed {
            ch.pause_armed = true;
            return;
        }
        ch.paused = true;
        let handle = ch.handle;
        if !ch.running {
            st.events
                .retain(|e| !(e.channel == c && e.kind == EventKind::StartFlow));
            return;
        }
        ch.running = false;
        ch.incoming_enabled = false;
        ch.suspended = true;
        ch.in_state_cb = true;
        let f = ch.state_cbs.suspend;
        drop(st);
        callbacks::run(Call::State(f, handle));
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(c) {
            ch.in_state_cb = false;
        }
        let (mut st, ok) = self.block_until(st, |s| {
            s.channels
                .get(c)
                .is_none_or(|ch| ch.outstanding == 0 && !ch.in_delivery)
        });
        if !ok {
            self.violation(&mut st, "VmbChannelPause: incoming packets were never completed after EvtChannelSuspend (the call would block forever)".into());
        }
    }

    pub(crate) fn disable(&self, c: ObjRef) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelDisable") else {
            return;
        };
        if ch.in_state_cb {
            self.violation(
                &mut st,
                "VmbChannelDisable called from inside a state-change callback".into(),
            );
            return;
        }
        if ch.state == ChannelState::Disabled {
            return;
        }
        let handle = ch.handle;
        let crashed = ch.state == ChannelState::Crashed;
        let was_open = ch.state == ChannelState::Open;
        let was_running = ch.running;
        let cbs = ch.state_cbs;
        ch.running = false;
        ch.incoming_enabled = false;
        ch.suspended = true;
        st.events.retain(|e| e.channel != c);
        if crashed {
            st.disconnect(c, false, false);
            st.silence_packets(c);
            if let Some(ch) = st.channels.get_mut(c) {
                ch.state = ChannelState::Disabled;
            }
            drop(st);
            self.notify();
            return;
        }
        if was_running {
            if let Some(ch) = st.channels.get_mut(c) {
                ch.in_state_cb = true;
            }
            drop(st);
            callbacks::run(Call::State(cbs.suspend, handle));
            st = self.lock();
            if let Some(ch) = st.channels.get_mut(c) {
                ch.in_state_cb = false;
            }
        }
        let (s2, ok) = self.block_until(st, |s| {
            s.channels
                .get(c)
                .is_none_or(|ch| ch.outstanding == 0 && !ch.in_delivery)
        });
        st = s2;
        if !ok {
            self.violation(&mut st, "VmbChannelDisable: incoming packets were never completed after EvtChannelSuspend (the call would block forever)".into());
        }
        st.disconnect(c, true, false);
        st.cancel_in_flight(c, STATUS_CANCELLED);
        if let Some(ch) = st.channels.get_mut(c) {
            ch.state = ChannelState::Disabled;
            ch.in_closed_cb = was_open;
            ch.in_state_cb = true;
        }
        drop(st);
        self.notify();
        // Cancelled transactions complete before the channel reports closed.
        self.drain_local();
        if was_open {
            callbacks::run(Call::State(cbs.closed, handle));
        }
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(c) {
            ch.in_closed_cb = false;
            ch.in_state_cb = false;
        }
        self.reclaim_gpadls(&mut st, c, "VmbChannelDisable");
        drop(st);
        self.notify();
    }

    /// Runs every queued local completion (cancellations) on this thread.
    fn drain_local(&self) {
        loop {
            let mut st = self.lock();
            let Some(l) = st.local.pop_front() else {
                return;
            };
            drop(st);
            self.complete_origin(l.origin, l.status, l.payload);
        }
    }

    pub(crate) fn cleanup(&self, c: ObjRef) {
        let st = self.lock();
        let Some(ch) = st.channels.get(c) else {
            drop(st);
            self.record_violation(
                "VmbChannelCleanup: stale VMBCHANNEL (double cleanup or use after cleanup)".into(),
            );
            return;
        };
        if ch.state != ChannelState::Disabled {
            drop(st);
            self.record_violation(
                "VmbChannelCleanup on a channel that is not disabled; the sim disables it first"
                    .into(),
            );
            self.disable(c);
        } else {
            drop(st);
        }
        let mut st = self.lock();
        if st.channels.get(c).is_some_and(|ch| ch.save.is_some()) {
            self.violation(
                &mut st,
                "VmbChannelCleanup with a save in progress (missing VmbChannelSaveEnd)".into(),
            );
        }
        self.reclaim_gpadls(&mut st, c, "VmbChannelCleanup");
        // Incoming packets of a channel that can no longer complete them (crashed) go away.
        let stale: Vec<ObjRef> = st
            .incoming
            .iter()
            .filter(|(_, i)| i.receiver == c)
            .map(|(r, _)| r)
            .collect();
        for r in stale {
            if let Some(i) = st.incoming.remove(r) {
                st.give_buf(i.payload);
            }
        }
        // Caller-memory packets die with their channel.
        let init: Vec<(ObjRef, usize)> = st
            .packets
            .iter()
            .filter_map(|(r, p)| {
                (p.channel == c)
                    .then_some(r)
                    .zip(p.initialized_at.map(|u| u.addr()))
            })
            .collect();
        {
            let mut map = initialized_map();
            for (r, addr) in init {
                map.remove(&addr);
                st.packets.remove(r);
            }
        }
        if let Some(ch) = st.channels.remove(c) {
            for f in ch.out.ring.into_iter().chain(ch.out.waiting) {
                st.give_buf(f.payload);
            }
        }
    }

    // ----- Channel properties -----

    pub(crate) fn get_pointer(&self, c: ObjRef) -> UserPtr {
        let mut st = self.lock();
        self.channel(&mut st, c, "VmbChannelGetPointer")
            .map(|ch| ch.pointer)
            .unwrap_or_default()
    }

    pub(crate) fn set_pointer(&self, c: ObjRef, p: UserPtr) {
        let mut st = self.lock();
        if let Some(ch) = self.channel(&mut st, c, "VmbChannelSetPointer") {
            ch.pointer = p;
        }
    }

    pub(crate) fn interface_instance(&self, c: ObjRef) -> Option<GUID> {
        let mut st = self.lock();
        self.channel(&mut st, c, "VmbChannelGetInterfaceInstance")
            .map(|ch| ch.interface_instance)
    }

    pub(crate) fn mmio_space(&self, c: ObjRef) -> (u64, u64) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelGetMmioSpace") else {
            return (0, 0);
        };
        if ch.state != ChannelState::Open {
            self.violation(
                &mut st,
                "VmbChannelGetMmioSpace before EvtChannelOpened".into(),
            );
            return (0, 0);
        }
        ch.mmio_space
    }

    pub(crate) fn set_passive(&self, c: ObjRef, on: bool) {
        let mut st = self.lock();
        if let Some(ch) = self.channel(&mut st, c, "VmbChannelSetIncomingProcessingAtPassive") {
            ch.passive = on;
        }
    }

    pub(crate) fn set_quota(&self, c: ObjRef, q: u32) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSetTransactionQuota") else {
            return;
        };
        if q == 0 {
            self.violation(
                &mut st,
                "VmbChannelSetTransactionQuota with a quota of 0".into(),
            );
            return;
        }
        ch.quota = q;
    }

    pub(crate) fn set_latency(&self, c: ObjRef, latency: u16) -> Result<u16, NTSTATUS> {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSetInterruptLatency") else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if ch.state != ChannelState::Open && !ch.in_closed_cb {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        Ok(std::mem::replace(&mut ch.latency, latency))
    }

    pub(crate) fn sizeof_packet(&self, c: ObjRef) -> u32 {
        let mut st = self.lock();
        self.channel(&mut st, c, "VmbChannelSizeofPacket")
            .map(|ch| Self::packet_object_size(ch.max_packet_size))
            .unwrap_or(0)
    }

    fn packet_object_size(max: u32) -> u32 {
        // CAST: pointer size is 8 on the supported targets.
        let ptr = std::mem::size_of::<usize>() as u32;
        (max + ptr + PACKET_OBJECT_OVERHEAD).div_ceil(8) * 8
    }

    // ----- Packet objects -----

    pub(crate) fn packet_allocate(&self, c: ObjRef) -> usize {
        let mut st = self.lock();
        if self.channel(&mut st, c, "VmbPacketAllocate").is_none() {
            return 0;
        }
        if st.faults.fail_packet_allocations > 0 {
            st.faults.fail_packet_allocations -= 1;
            return 0;
        }
        let p = Packet {
            channel: c,
            initialized_at: None,
            state: PacketState::Idle,
            pointer: UserPtr::default(),
            routine: None,
            custom_routine: false,
            txn: 0,
            restored: None,
        };
        match st.packets.insert(p) {
            Some(r) => st.handle_of(self.id, Kind::Packet, r),
            None => 0,
        }
    }

    pub(crate) fn packet_initialize(&self, c: ObjRef, mem: UserPtr, size: u32) -> NTSTATUS {
        let addr = mem.addr();
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbPacketInitialize") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if addr == 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        let ptr = std::mem::size_of::<usize>() as u32;
        if size <= ch.max_packet_size + ptr || size < Self::packet_object_size(ch.max_packet_size) {
            return STATUS_INVALID_PARAMETER_3;
        }
        let existing = initialized_map().get(&addr).copied();
        if let Some(h) = existing.and_then(|v| Handle::decode(v, Kind::Packet)) {
            let r = ObjRef {
                index: h.index,
                generation: h.generation,
            };
            if h.bus == self.id {
                if st
                    .packets
                    .get(r)
                    .is_some_and(|p| p.state != PacketState::Idle)
                {
                    self.violation(
                        &mut st,
                        "VmbPacketInitialize on memory of a packet still in flight".into(),
                    );
                    return STATUS_INVALID_DEVICE_STATE;
                }
                st.packets.remove(r);
            }
        }
        let p = Packet {
            channel: c,
            initialized_at: Some(mem),
            state: PacketState::Idle,
            pointer: UserPtr::default(),
            routine: None,
            custom_routine: false,
            txn: 0,
            restored: None,
        };
        let Some(r) = st.packets.insert(p) else {
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        let h = st.handle_of(self.id, Kind::Packet, r);
        initialized_map().insert(addr, h);
        STATUS_SUCCESS
    }

    fn packet<'a>(&self, st: &'a mut BusState, p: ObjRef, what: &str) -> Option<&'a mut Packet> {
        if st.packets.get(p).is_none() {
            st.violation(self.id, format!("{what}: stale VMBPACKET (double free, or use after VmbPacketFree or after the default completion routine freed it)"));
            return None;
        }
        st.packets.get_mut(p)
    }

    pub(crate) fn packet_free(&self, p: ObjRef) {
        let mut st = self.lock();
        let Some(pk) = self.packet(&mut st, p, "VmbPacketFree") else {
            return;
        };
        if pk.initialized_at.is_some() {
            self.violation(
                &mut st,
                "VmbPacketFree on a packet from VmbPacketInitialize (caller memory)".into(),
            );
            return;
        }
        if pk.state == PacketState::InFlight {
            self.violation(
                &mut st,
                "VmbPacketFree on a packet still in flight (before its completion routine ran)"
                    .into(),
            );
            return;
        }
        st.packets.remove(p);
    }

    pub(crate) fn packet_set_routine(&self, p: ObjRef, f: PFN_VMB_PACKET_COMPLETION_ROUTINE) {
        let mut st = self.lock();
        if let Some(pk) = self.packet(&mut st, p, "VmbPacketSetCompletionRoutine") {
            pk.routine = f;
            pk.custom_routine = f.is_some();
        }
    }

    pub(crate) fn packet_set_pointer(&self, p: ObjRef, v: UserPtr) {
        let mut st = self.lock();
        if let Some(pk) = self.packet(&mut st, p, "VmbPacketSetPointer") {
            pk.pointer = v;
        }
    }

    pub(crate) fn packet_get_pointer(&self, p: ObjRef) -> UserPtr {
        let mut st = self.lock();
        self.packet(&mut st, p, "VmbPacketGetPointer")
            .map(|pk| pk.pointer)
            .unwrap_or_default()
    }

    pub(crate) fn packet_channel(&self, p: ObjRef) -> usize {
        let mut st = self.lock();
        match self.packet(&mut st, p, "VmbPacketGetChannel") {
            Some(pk) => {
                let c = pk.channel;
                self.chan_handle(c)
            }
            None => 0,
        }
    }

    /// `VmbPacketSend*`. `require_wait`: the external-MDL and PFN variants demand the flag.
    pub(crate) fn packet_send(
        &self,
        p: ObjRef,
        payload: &[u8],
        external: Option<Described>,
        flags: u32,
        require_wait: bool,
    ) -> NTSTATUS {
        let mut st = self.lock();
        let Some(pk) = self.packet(&mut st, p, "VmbPacketSend") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if flags & !VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
            return STATUS_INVALID_PARAMETER;
        }
        let wait = flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
        if require_wait && !wait {
            return STATUS_INVALID_PARAMETER;
        }
        if pk.state == PacketState::InFlight {
            self.violation(
                &mut st,
                "VmbPacketSend on a packet that is already in flight".into(),
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        if pk.initialized_at.is_some() && pk.routine.is_none() {
            self.violation(
                &mut st,
                "VmbPacketSend of a VmbPacketInitialize packet without a completion routine".into(),
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        let c = pk.channel;
        let Some(ch) = st.channels.get(c) else {
            self.violation(
                &mut st,
                "VmbPacketSend on a packet whose channel was cleaned up".into(),
            );
            return STATUS_DEVICE_REMOVED;
        };
        if ch.state == ChannelState::Crashed {
            return STATUS_DEVICE_REMOVED;
        }
        if payload.len() > ch.max_packet_size as usize {
            return STATUS_INVALID_PARAMETER_3;
        }
        if let (Some(ext), Some((max, _))) = (&external, ch.max_external_data) {
            if ext.byte_len() > max as usize {
                return STATUS_INVALID_PARAMETER;
            }
        }
        let suspended = ch.suspended;
        if suspended {
            self.violation(
                &mut st,
                "VmbPacketSend after EvtChannelSuspend and before the next EvtChannelStarted"
                    .into(),
            );
        }
        let txn = st.alloc_txn();
        if let Some(pk) = st.packets.get_mut(p) {
            pk.state = PacketState::InFlight;
            pk.txn = txn;
        }
        let size = frame_size(payload.len(), external.as_ref());
        let payload = st.take_buf(payload);
        let frame = Frame {
            size,
            payload,
            body: FrameBody::Data {
                origin: Origin::Packet(p, txn),
                wants_completion: wait,
                external,
            },
        };
        st.enqueue(c, frame);
        drop(st);
        self.notify();
        STATUS_SUCCESS
    }

    // ----- Incoming packets -----

    fn incoming<'a>(
        &self,
        st: &'a mut BusState,
        r: ObjRef,
        what: &str,
    ) -> Option<&'a mut Incoming> {
        if st.incoming.get(r).is_none() {
            st.violation(self.id, format!("{what}: stale VMBPACKETCOMPLETION (double completion, or use after the packet was completed)"));
            return None;
        }
        st.incoming.get_mut(r)
    }

    pub(crate) fn packet_complete(&self, r: ObjRef, data: &[u8]) {
        self.finish_incoming(r, data, STATUS_SUCCESS, "VmbChannelPacketComplete");
    }

    pub(crate) fn packet_fail(&self, r: ObjRef) {
        let mut st = self.lock();
        let Some(i) = self.incoming(&mut st, r, "VmbChannelPacketFail") else {
            return;
        };
        let recv = i.receiver;
        if let Some(ch) = st.channels.get_mut(recv) {
            ch.queue_failed = true;
        }
        drop(st);
        self.finish_incoming(r, &[], STATUS_UNSUCCESSFUL, "VmbChannelPacketFail");
    }

    fn finish_incoming(&self, r: ObjRef, data: &[u8], status: NTSTATUS, what: &str) {
        let mut st = self.lock();
        let Some(i) = self.incoming(&mut st, r, what) else {
            return;
        };
        match i.state {
            InState::Deferred => {
                self.violation(
                    &mut st,
                    format!("{what} after VmbChannelPacketDeferToPassive in the same delivery"),
                );
                return;
            }
            InState::PendingExternal => {
                self.violation(&mut st, format!("{what} after VmbChannelPacketGetExternalData returned STATUS_PENDING; return and wait for the redelivery"));
                return;
            }
            InState::Redeliver => {
                self.violation(&mut st, format!("{what} on a packet queued for redelivery"));
                return;
            }
            InState::Delivering | InState::Held => {}
        }
        let Some(i) = st.incoming.remove(r) else {
            return;
        };
        if let Some(ch) = st.channels.get_mut(i.receiver) {
            ch.outstanding = ch.outstanding.saturating_sub(1);
        }
        drop(i.external_mdl);
        if i.wants_completion {
            let connected = st
                .channels
                .get(i.receiver)
                .is_some_and(|c| c.peer.is_some());
            if connected {
                let payload = st.take_buf(data);
                let frame = Frame {
                    size: frame_size(data.len(), None),
                    payload,
                    body: FrameBody::Completion {
                        origin: i.origin,
                        status,
                    },
                };
                st.enqueue(i.receiver, frame);
            }
        }
        st.give_buf(i.payload);
        drop(st);
        self.notify();
    }

    pub(crate) fn defer_to_passive(&self, r: ObjRef) {
        let mut st = self.lock();
        let Some(i) = self.incoming(&mut st, r, "VmbChannelPacketDeferToPassive") else {
            return;
        };
        if i.state != InState::Delivering {
            self.violation(
                &mut st,
                "VmbChannelPacketDeferToPassive outside the packet's EvtVmbChannelProcessPacket"
                    .into(),
            );
            return;
        }
        i.state = InState::Deferred;
    }

    pub(crate) fn external_data(
        &self,
        r: ObjRef,
        flags: u32,
    ) -> Result<vmbus_kmcl_sys::PMDL, NTSTATUS> {
        let mut st = self.lock();
        let pending = st.faults.external_data_pending > 0;
        let Some(i) = self.incoming(&mut st, r, "VmbChannelPacketGetExternalData") else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if flags & !VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS != 0 {
            return Err(STATUS_INVALID_PARAMETER_2);
        }
        let Some(ext) = &i.external else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if pending && !i.pended_once && i.state == InState::Delivering {
            i.pended_once = true;
            i.state = InState::PendingExternal;
            st.faults.external_data_pending -= 1;
            return Err(STATUS_PENDING);
        }
        let ro = flags & VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY != 0;
        if i.external_mdl.is_none() {
            i.external_mdl = Some(OwnedMdl::new(ext, ro));
        }
        Ok(i.external_mdl
            .as_ref()
            .map(|m| m.as_pmdl())
            .unwrap_or(std::ptr::null_mut()))
    }

    // ----- Synchronous requests -----

    /// `VmbChannelSendSynchronousRequest`. `timeout`: `None` waits forever, otherwise a
    /// KeWait-style value (negative relative, positive absolute, 0 do not queue when full).
    pub(crate) fn sync_request(
        &self,
        c: ObjRef,
        payload: &[u8],
        external: Option<Described>,
        flags: u32,
        timeout: Option<i64>,
        irql: u8,
    ) -> SyncOutcome {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSendSynchronousRequest") else {
            return (STATUS_INVALID_PARAMETER_1, Vec::new());
        };
        if flags & !VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        }
        let wait = flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
        let zero = timeout == Some(0);
        if ch.is_server && (!zero || wait) {
            return (STATUS_NOT_SUPPORTED, Vec::new());
        }
        if (!zero || wait) && irql > vmbus_kmcl_sys::nt::PASSIVE_LEVEL {
            self.violation(
                &mut st,
                "VmbChannelSendSynchronousRequest that may wait, called above PASSIVE_LEVEL".into(),
            );
            return (STATUS_INVALID_DEVICE_STATE, Vec::new());
        }
        if matches!(ch.state, ChannelState::Disabled | ChannelState::Crashed) {
            return (STATUS_DEVICE_REMOVED, Vec::new());
        }
        if payload.len() > ch.max_packet_size as usize {
            return (STATUS_INVALID_PARAMETER_3, Vec::new());
        }
        let size = frame_size(payload.len(), external.as_ref());
        if zero {
            let fits = ch.state == ChannelState::Open
                && ch.out.waiting.is_empty()
                && !ch.out.forced_full
                && ch.out.used + size <= ch.out.capacity;
            if !fits {
                return (STATUS_BUFFER_OVERFLOW, Vec::new());
            }
        }
        if ch.suspended && ch.state == ChannelState::Open {
            self.violation(&mut st, "VmbChannelSendSynchronousRequest after EvtChannelSuspend and before the next EvtChannelStarted".into());
        }
        let id = st.alloc_txn();
        st.syncs.insert(
            id,
            SyncWait {
                channel: c,
                result: None,
            },
        );
        let buf = st.take_buf(payload);
        let frame = Frame {
            size,
            payload: buf,
            body: FrameBody::Data {
                origin: Origin::Sync(id),
                wants_completion: wait,
                external,
            },
        };
        st.enqueue(c, frame);
        drop(st);
        self.notify();
        let deadline = match timeout {
            None | Some(0) => None,
            Some(t) if t < 0 => {
                Some(Instant::now() + Duration::from_nanos(t.unsigned_abs().saturating_mul(100)))
            }
            Some(t) => Some(absolute_deadline(t)),
        };
        loop {
            let mut st = self.lock();
            if let Some(result) = st.syncs.get_mut(&id).and_then(|s| s.result.take()) {
                st.syncs.remove(&id);
                return result;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                st.syncs.remove(&id);
                return (STATUS_CANCELLED, Vec::new());
            }
            drop(st);
            // Help deliver: in deterministic tests nobody else pumps.
            if !self.pump_once() {
                let st = self.lock();
                if st.syncs.get(&id).is_some_and(|s| s.result.is_some()) {
                    continue;
                }
                let step = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(10))
                    .min(Duration::from_millis(10));
                drop(self.wait(st, step));
            }
        }
    }

    // ----- GPADLs -----

    pub(crate) fn gpadl_create(
        &self,
        c: ObjRef,
        flags: u32,
        described: Described,
    ) -> Result<u32, NTSTATUS> {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelCreateGpadl") else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if ch.is_server {
            return Err(STATUS_INVALID_PARAMETER_1);
        }
        if ch.state != ChannelState::Open {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        if flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return Err(STATUS_INVALID_PARAMETER_2);
        }
        let id = st.next_gpadl;
        st.next_gpadl = st
            .next_gpadl
            .checked_add(1)
            .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        st.gpadls.insert(
            id,
            Gpadl {
                owner: c,
                described,
                read_only: flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY != 0,
                mapping: None,
            },
        );
        Ok(id)
    }

    pub(crate) fn gpadl_delete(&self, c: ObjRef, id: u32) {
        let mut st = self.lock();
        if self.channel(&mut st, c, "VmbChannelDeleteGpadl").is_none() {
            return;
        }
        match st.gpadls.get(&id) {
            Some(g) if g.owner == c => {}
            _ => {
                self.violation(
                    &mut st,
                    format!("VmbChannelDeleteGpadl of unknown GPADL {id} (double delete?)"),
                );
                return;
            }
        }
        let (mut st, ok) = self.block_until(st, |s| {
            s.gpadls.get(&id).is_none_or(|g| g.mapping.is_none())
        });
        if !ok {
            self.violation(
                &mut st,
                format!(
                    "VmbChannelDeleteGpadl of GPADL {id} blocked: the server never unmapped it"
                ),
            );
        }
        st.gpadls.remove(&id);
        drop(st);
        self.notify();
    }

    pub(crate) fn gpadl_map(
        &self,
        c: ObjRef,
        flags: u32,
        id: u32,
    ) -> Result<vmbus_kmcl_sys::PMDL, NTSTATUS> {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelMapGpadl") else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if !ch.is_server {
            return Err(STATUS_INVALID_PARAMETER_1);
        }
        if flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return Err(STATUS_INVALID_PARAMETER_2);
        }
        let peer = ch.peer;
        let Some(g) = st.gpadls.get_mut(&id) else {
            return Err(STATUS_INVALID_PARAMETER_3);
        };
        if Some(g.owner) != peer {
            return Err(STATUS_INVALID_PARAMETER_3);
        }
        if g.mapping.is_some() {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        let ro = flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY != 0;
        if g.read_only && !ro {
            return Err(STATUS_ACCESS_DENIED);
        }
        let mdl = OwnedMdl::new(&g.described, ro);
        let p = mdl.as_pmdl();
        g.mapping = Some((c, mdl));
        Ok(p)
    }

    pub(crate) fn gpadl_unmap(&self, c: ObjRef, id: u32) {
        let mut st = self.lock();
        if self.channel(&mut st, c, "VmbChannelUnmapGpadl").is_none() {
            return;
        }
        match st.gpadls.get_mut(&id) {
            Some(g) if g.mapping.as_ref().is_some_and(|(s, _)| *s == c) => {
                g.mapping = None;
            }
            _ => {
                self.violation(&mut st, format!("VmbChannelUnmapGpadl of GPADL {id}, which this channel has not mapped (double unmap?)"));
                return;
            }
        }
        drop(st);
        self.notify();
    }

    // ----- Save and restore -----

    pub(crate) fn save_begin(&self, c: ObjRef) -> NTSTATUS {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSaveBegin") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if !ch.is_server {
            return STATUS_INVALID_PARAMETER_1;
        }
        if ch.save.is_some() {
            return STATUS_INVALID_DEVICE_STATE;
        }
        ch.save = Some(SaveCtx::default());
        STATUS_SUCCESS
    }

    pub(crate) fn save_end(&self, c: ObjRef) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSaveEnd") else {
            return;
        };
        if ch.save.take().is_none() {
            self.violation(
                &mut st,
                "VmbChannelSaveEnd without VmbChannelSaveBegin".into(),
            );
        }
    }

    /// Builds the save blob: channel identity plus every in-use packet with KMCL's and the
    /// driver's state (C8 runs here, outside the lock).
    fn build_blob(&self, c: ObjRef) -> Result<Vec<u8>, NTSTATUS> {
        let st = self.lock();
        let Some(ch) = st.channels.get(c) else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        let (handle, save_cb, ty, inst) = (
            ch.handle,
            ch.save_packet,
            ch.interface_type,
            ch.interface_instance,
        );
        // In-use packets and the data of their current send, wherever that data is now.
        let mut list: Vec<SavedPacket> = Vec::new();
        for (r, p) in st.packets.iter() {
            if p.channel != c || p.state != PacketState::InFlight {
                continue;
            }
            let origin = Origin::Packet(r, p.txn);
            let mut found = p.restored.clone();
            let all = ch.out.ring.iter().chain(ch.out.waiting.iter());
            for f in all {
                if let FrameBody::Data {
                    origin: o,
                    wants_completion,
                    ..
                } = f.body
                {
                    if o == origin {
                        found = Some((f.payload.clone(), wants_completion));
                    }
                }
            }
            for (_, i) in st.incoming.iter() {
                if i.origin == origin {
                    found = Some((i.payload.clone(), i.wants_completion));
                }
            }
            let (payload, wants) = found.unwrap_or_default();
            list.push((r, p.initialized_at, payload, wants));
        }
        drop(st);
        let mut blob = Vec::new();
        put_u32(&mut blob, SAVE_MAGIC);
        put_u32(&mut blob, 1);
        blob.extend_from_slice(&guid_bytes(&ty));
        blob.extend_from_slice(&guid_bytes(&inst));
        // CAST: the packet count is bounded by the slab size (2^20).
        put_u32(&mut blob, list.len() as u32);
        for (r, initialized_at, payload, wants) in list {
            let packet = initialized_at.unwrap_or(UserPtr(crate::handle::to_ptr(
                Handle {
                    kind: Kind::Packet,
                    bus: self.id,
                    index: r.index,
                    generation: r.generation,
                }
                .encode(),
            )));
            let mut vsp = Vec::new();
            if save_cb.is_some() {
                let (s, needed) = callbacks::run(Call::SavePacket {
                    f: save_cb,
                    channel: handle,
                    packet,
                    buf: std::ptr::null_mut(),
                    size: 0,
                });
                if !nt_success(s) {
                    if needed == 0 {
                        return Err(s);
                    }
                    vsp = vec![0u8; needed as usize];
                    let (s2, _) = callbacks::run(Call::SavePacket {
                        f: save_cb,
                        channel: handle,
                        packet,
                        buf: vsp.as_mut_ptr(),
                        size: needed,
                    });
                    if !nt_success(s2) {
                        return Err(s2);
                    }
                }
            }
            let mut lib = Vec::new();
            put_u32(&mut lib, PACKET_MAGIC);
            put_u32(&mut lib, u32::from(wants));
            // CAST: payloads are bounded by the maximum packet size (at most 16 MiB).
            put_u32(&mut lib, payload.len() as u32);
            lib.extend_from_slice(&payload);
            // CAST: bounded as above.
            put_u32(&mut blob, lib.len() as u32);
            blob.extend_from_slice(&lib);
            // CAST: the driver's size is a u32 to begin with.
            put_u32(&mut blob, vsp.len() as u32);
            blob.extend_from_slice(&vsp);
        }
        Ok(blob)
    }

    /// `VmbChannelSaveContinue`: `(status, bytes filled, bytes required)`.
    pub(crate) fn save_continue(&self, c: ObjRef, out: &mut [u8]) -> (NTSTATUS, u32, u32) {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelSaveContinue") else {
            return (STATUS_INVALID_PARAMETER_1, 0, 0);
        };
        let Some(ctx) = &ch.save else {
            return (STATUS_INVALID_DEVICE_STATE, 0, 0);
        };
        if ctx.blob.is_none() {
            drop(st);
            let blob = match self.build_blob(c) {
                Ok(b) => b,
                Err(s) => return (s, 0, 0),
            };
            st = self.lock();
            match st.channels.get_mut(c).and_then(|ch| ch.save.as_mut()) {
                Some(ctx) => ctx.blob = Some(blob),
                None => return (STATUS_INVALID_DEVICE_STATE, 0, 0),
            }
        }
        let Some(ctx) = st.channels.get_mut(c).and_then(|ch| ch.save.as_mut()) else {
            return (STATUS_INVALID_DEVICE_STATE, 0, 0);
        };
        let blob = ctx.blob.as_deref().unwrap_or_default();
        let remaining = blob.len() - ctx.offset;
        if remaining == 0 {
            return (STATUS_SUCCESS, 0, 0);
        }
        let min = CHUNK_HEADER + remaining.min(8);
        if out.len() < min {
            // CAST: at most 24 bytes.
            return (STATUS_BUFFER_TOO_SMALL, 0, min as u32);
        }
        let n = remaining.min(out.len() - CHUNK_HEADER);
        let last = n == remaining;
        let mut hdr = Vec::with_capacity(CHUNK_HEADER);
        put_u32(&mut hdr, CHUNK_MAGIC);
        put_u32(&mut hdr, ctx.seq);
        // CAST: n is bounded by the caller's ULONG buffer size.
        put_u32(&mut hdr, n as u32);
        put_u32(&mut hdr, u32::from(last));
        out[..CHUNK_HEADER].copy_from_slice(&hdr);
        out[CHUNK_HEADER..CHUNK_HEADER + n].copy_from_slice(&blob[ctx.offset..ctx.offset + n]);
        ctx.offset += n;
        ctx.seq += 1;
        // CAST: bounded by the caller's ULONG buffer size.
        let filled = (CHUNK_HEADER + n) as u32;
        (
            if last {
                STATUS_SUCCESS
            } else {
                STATUS_BUFFER_OVERFLOW
            },
            filled,
            0,
        )
    }

    /// `VmbChannelRestoreFromBuffer` with one whole chunk.
    pub(crate) fn restore_chunk(&self, c: ObjRef, chunk: &[u8]) -> NTSTATUS {
        let mut st = self.lock();
        let Some(ch) = self.channel(&mut st, c, "VmbChannelRestoreFromBuffer") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if !ch.is_server || ch.state != ChannelState::Disabled {
            return STATUS_INVALID_PARAMETER_1;
        }
        let mut r = Reader(chunk);
        let (Some(magic), Some(seq), Some(len), Some(last)) = (r.u32(), r.u32(), r.u32(), r.u32())
        else {
            return STATUS_INVALID_PARAMETER;
        };
        let ctx = ch.restore.get_or_insert_with(RestoreCtx::default);
        if magic != CHUNK_MAGIC || seq != ctx.seq || last > 1 || r.0.len() != len as usize {
            ch.restore = None;
            return STATUS_INVALID_PARAMETER;
        }
        ctx.data.extend_from_slice(r.0);
        ctx.seq += 1;
        if last == 0 {
            return STATUS_MORE_PROCESSING_REQUIRED;
        }
        let data = std::mem::take(&mut ctx.data);
        let (handle, restore_cb, ty) = (ch.handle, ch.restore_packet, ch.interface_type);
        ctx.in_callback = true;
        drop(st);
        let status = self.apply_blob(c, handle, restore_cb, ty, &data);
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(c) {
            ch.restore = None;
        }
        status
    }

    fn apply_blob(
        &self,
        _c: ObjRef,
        handle: usize,
        restore_cb: PFN_VMB_CHANNEL_RESTORE_PACKET,
        ty: GUID,
        data: &[u8],
    ) -> NTSTATUS {
        let mut r = Reader(data);
        if r.u32() != Some(SAVE_MAGIC) || r.u32() != Some(1) {
            return STATUS_INVALID_PARAMETER;
        }
        let (Some(t), Some(_inst), Some(count)) = (r.bytes(16), r.bytes(16), r.u32()) else {
            return STATUS_INVALID_PARAMETER;
        };
        if ty != GUID::default() && t != guid_bytes(&ty) {
            return STATUS_INVALID_PARAMETER;
        }
        let mut entries = Vec::new();
        for _ in 0..count {
            let Some(lib_len) = r.u32() else {
                return STATUS_INVALID_PARAMETER;
            };
            let Some(lib) = r.bytes(lib_len as usize) else {
                return STATUS_INVALID_PARAMETER;
            };
            let Some(vsp_len) = r.u32() else {
                return STATUS_INVALID_PARAMETER;
            };
            let Some(vsp) = r.bytes(vsp_len as usize) else {
                return STATUS_INVALID_PARAMETER;
            };
            entries.push((lib.to_vec(), vsp.to_vec()));
        }
        if !r.0.is_empty() {
            return STATUS_INVALID_PARAMETER;
        }
        if !entries.is_empty() && restore_cb.is_none() {
            return STATUS_INVALID_DEVICE_STATE;
        }
        for (mut lib, mut vsp) in entries {
            let (s, _) = callbacks::run(Call::RestorePacket {
                f: restore_cb,
                channel: handle,
                lib: lib.as_mut_ptr(),
                // CAST: lengths were read as u32.
                lib_len: lib.len() as u32,
                save: if vsp.is_empty() {
                    std::ptr::null_mut()
                } else {
                    vsp.as_mut_ptr()
                },
                // CAST: as above.
                save_len: vsp.len() as u32,
            });
            if !nt_success(s) {
                return s;
            }
        }
        STATUS_SUCCESS
    }

    /// `VmbPacketRestore`: the packet resumes its saved transaction; the data is sent again
    /// once the channel is open.
    pub(crate) fn packet_restore(&self, p: ObjRef, lib: &[u8]) -> NTSTATUS {
        let mut st = self.lock();
        let Some(pk) = self.packet(&mut st, p, "VmbPacketRestore") else {
            return STATUS_INVALID_PARAMETER_1;
        };
        let c = pk.channel;
        if pk.state != PacketState::Idle {
            return STATUS_INVALID_DEVICE_STATE;
        }
        let in_restore = st
            .channels
            .get(c)
            .and_then(|ch| ch.restore.as_ref())
            .is_some_and(|r| r.in_callback);
        if !in_restore {
            self.violation(
                &mut st,
                "VmbPacketRestore outside EvtVmbChannelRestorePacket of the packet's channel"
                    .into(),
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        let mut r = Reader(lib);
        let (Some(magic), Some(wants), Some(len)) = (r.u32(), r.u32(), r.u32()) else {
            return STATUS_INVALID_PARAMETER_2;
        };
        if magic != PACKET_MAGIC || wants > 1 || r.0.len() != len as usize {
            return STATUS_INVALID_PARAMETER_2;
        }
        let payload_copy = r.0.to_vec();
        let txn = st.alloc_txn();
        let Some(pk) = st.packets.get_mut(p) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        pk.state = PacketState::InFlight;
        pk.txn = txn;
        pk.restored = Some((payload_copy.clone(), wants == 1));
        let payload = st.take_buf(&payload_copy);
        let frame = Frame {
            size: frame_size(payload.len(), None),
            payload,
            body: FrameBody::Data {
                origin: Origin::Packet(p, txn),
                wants_completion: wants == 1,
                external: None,
            },
        };
        st.enqueue(c, frame);
        STATUS_SUCCESS
    }
}

/// A Windows absolute time (100 ns since 1601) as an `Instant`.
fn absolute_deadline(t: i64) -> Instant {
    const EPOCH_DIFF_100NS: u64 = 116_444_736_000_000_000;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let target_unix_100ns = t.unsigned_abs().saturating_sub(EPOCH_DIFF_100NS);
    let target = Duration::from_nanos(target_unix_100ns.saturating_mul(100));
    Instant::now() + target.saturating_sub(now_unix)
}

fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn guid_bytes(g: &GUID) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&g.Data1.to_le_bytes());
    b[4..6].copy_from_slice(&g.Data2.to_le_bytes());
    b[6..8].copy_from_slice(&g.Data3.to_le_bytes());
    b[8..].copy_from_slice(&g.Data4);
    b
}

/// Checked little-endian reads from untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
