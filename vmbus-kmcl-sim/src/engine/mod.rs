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
//!
//! # Layout
//!
//! This module holds the bus itself ([`BusState`], [`BusShared`]: creation, locking, waiting).
//! Each submodule holds one part of the model and the `BusShared` methods that work on it:
//! [`channel`] (the channel object) with [`init`], [`lifecycle`], [`properties`] and
//! [`connection`]; [`ring`] (frames and rings); [`packet`], [`incoming`] and [`sync`] (outgoing,
//! incoming and synchronous packets); [`gpadl`]; [`save_restore`]; [`pump`] (asynchronous work);
//! [`registry`] (live buses and handle resolution); [`accounting`] (violations and leaks); and
//! [`control`] (test control and fault injection).
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

mod accounting;
mod channel;
mod connection;
mod control;
mod gpadl;
mod incoming;
mod init;
mod lifecycle;
mod packet;
mod properties;
mod pump;
mod registry;
mod ring;
mod save_restore;
mod sync;

use self::{
    channel::*, control::*, gpadl::*, incoming::*, packet::*, pump::*, registry::*, ring::*,
    save_restore::*, sync::*,
};

pub(crate) use accounting::orphan_violation;
use accounting::set_site;
pub use accounting::{take_orphan_violations, LeakReport};
pub(crate) use accounting::{this_thread, AllocFn, AllocSite};
pub(crate) use channel::StateCallbacks;
pub use channel::{ChannelInfo, ChannelState, Side};
pub use control::{RawCompletion, RawPacketError};
pub(crate) use registry::{lookup_bus, resolve, Resolved};

/// Called by the NT emulation after `ZwClose` closed `handle`, a kernel handle to the VMBus of
/// bus `bus`: an enabled server channel of that bus that uses it as its VMBus handle
/// (`VmbServerChannelInitSetVmbusHandle`) is still bound to the VM through it, so the close is a
/// violation. Takes only the bus lock (the NT emulation has released its own).
pub(crate) fn kernel_handle_closed(bus: u64, handle: usize) {
    let Some(b) = lookup_bus(bus) else {
        return;
    };
    let mut st = b.lock();
    let in_use = st.channels.iter().any(|(_, c)| {
        c.is_server && c.vmbus_handle == Some(handle) && c.state != ChannelState::Disabled
    });
    if in_use {
        b.violation(
            &mut st,
            format!(
                "ZwClose of kernel handle {handle:#x} while an enabled server channel still uses \
                 it as its VMBus handle (VmbServerChannelInitSetVmbusHandle); close it only after \
                 VmbChannelDisable"
            ),
        );
    }
}

/// Size of one ring page.
pub(crate) const PAGE_SIZE: usize = 4096;
/// Ring pages per direction when the client does not set them.
pub(crate) const DEFAULT_RING_PAGES: u32 = 16;
/// Maximum inline packet size when the driver does not set it.
pub(crate) const DEFAULT_MAX_PACKET_SIZE: u32 = 4096;

/// The whole mutable state of a bus.
#[derive(Debug, Default)]
pub(crate) struct BusState {
    /// The bus's id (for violations recorded where only the state is at hand).
    id: u64,
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
    /// Allocations made on this bus so far (see [`accounting::AllocSite`]).
    alloc_seq: u64,
    /// Where each packet object was made, by slab index (kept beside the slab so that the
    /// packet itself stays small on the hot path).
    packet_sites: Vec<Option<AllocSite>>,
    /// Where each incoming packet was delivered, by slab index.
    incoming_sites: Vec<Option<AllocSite>>,
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

impl BusState {
    fn handle_of(&self, bus: u64, kind: Kind, r: ObjRef) -> usize {
        Handle {
            kind,
            bus,
            index: r.index,
            generation: r.generation,
        }
        .encode()
    }
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
                id,
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
        let deadline = far_deadline(Self::block_limit(&st));
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
                st = self.wait(
                    st,
                    deadline
                        .saturating_duration_since(now)
                        .min(Duration::from_millis(20)),
                );
            }
        }
    }
}

/// `now + d`, or a deadline about a century away when that does not fit in an `Instant` (a
/// block limit or timeout of `Duration::MAX` must not panic inside an `extern "C"` function).
pub(super) fn far_deadline(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}
