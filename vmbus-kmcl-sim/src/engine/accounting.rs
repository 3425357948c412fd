//! Accounting of misuse: violations recorded on a bus, orphan violations no live bus can be
//! charged with, and the leak report tests check at the end.
#![forbid(unsafe_code)]

use super::*;

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
    /// Where each channel, packet object, incoming packet, GPADL, GPADL mapping and save context
    /// counted above was allocated, oldest first: the allocation's sequence number on this bus,
    /// the KMCL function that made it and the thread it ran on (under `cargo test`, the name of
    /// the test). Kernel handles, interface references and waiting synchronous requests are
    /// counted only.
    pub leaked: Vec<String>,
}

/// Where an object of the bus was made: its allocation sequence number on the bus, the KMCL
/// function (or sim step) that made it and the thread that called it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AllocSite {
    seq: u64,
    /// Index of the thread's name in [`THREAD_NAMES`].
    thread: u32,
    what: AllocFn,
}

/// What made an object (kept as a byte: sites sit in every packet, on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllocFn {
    ChannelAllocate,
    PacketAllocate,
    PacketInitialize,
    Delivery,
    GpadlFromBuffer,
    GpadlFromMdl,
    MapGpadl,
    SaveBegin,
}

impl AllocFn {
    /// The KMCL function (or sim step) it names.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AllocFn::ChannelAllocate => "VmbChannelAllocate",
            AllocFn::PacketAllocate => "VmbPacketAllocate",
            AllocFn::PacketInitialize => "VmbPacketInitialize",
            AllocFn::Delivery => "EvtVmbChannelProcessPacket delivery",
            AllocFn::GpadlFromBuffer => "VmbChannelCreateGpadlFromBuffer",
            AllocFn::GpadlFromMdl => "VmbChannelCreateGpadlFromMdl",
            AllocFn::MapGpadl => "VmbChannelMapGpadl",
            AllocFn::SaveBegin => "VmbChannelSaveBegin",
        }
    }
}

/// The name of every thread that allocated something, by index: a site stores the index, so
/// recording one on the hot path costs no allocation and no reference count.
static THREAD_NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    /// The current thread's id and the index of its name, looked up once per thread.
    static THIS_THREAD: (std::thread::ThreadId, u32) = {
        let t = std::thread::current();
        let name = t.name().map_or_else(|| format!("{:?}", t.id()), str::to_owned);
        let mut names = THREAD_NAMES.lock().unwrap_or_else(|e| e.into_inner());
        names.push(name);
        // CAST: one entry per thread that ever allocated; far below 2^32 in a test process.
        (t.id(), (names.len() - 1) as u32)
    };
}

/// The current thread's id, cheaply.
pub(crate) fn this_thread() -> std::thread::ThreadId {
    THIS_THREAD.with(|t| t.0)
}

impl std::fmt::Display for AllocSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = THREAD_NAMES.lock().unwrap_or_else(|e| e.into_inner());
        let thread = names.get(self.thread as usize).map_or("?", String::as_str);
        write!(
            f,
            "allocation #{} by {} on thread '{thread}'",
            self.seq,
            self.what.name()
        )
    }
}

/// Records `site` for the object at slab reference `r` in a side table indexed like the slab.
pub(super) fn set_site(sites: &mut Vec<Option<AllocSite>>, r: ObjRef, site: AllocSite) {
    let i = r.index as usize;
    if sites.len() <= i {
        sites.resize(i + 1, None);
    }
    sites[i] = Some(site);
}

/// The site recorded for slab reference `r`, as text.
fn site_of(sites: &[Option<AllocSite>], r: ObjRef) -> String {
    sites
        .get(r.index as usize)
        .copied()
        .flatten()
        .map_or_else(|| "allocation site unknown".to_owned(), |s| s.to_string())
}

/// Sequence number for ordering a report (unknown sites last).
fn seq_of(sites: &[Option<AllocSite>], r: ObjRef) -> u64 {
    sites
        .get(r.index as usize)
        .copied()
        .flatten()
        .map_or(u64::MAX, |s| s.seq)
}

impl BusState {
    /// The site of an allocation made now by `what` on the current thread.
    pub(super) fn alloc_site(&mut self, what: AllocFn) -> AllocSite {
        self.alloc_seq += 1;
        AllocSite {
            seq: self.alloc_seq,
            what,
            thread: THIS_THREAD.with(|t| t.1),
        }
    }
}

impl LeakReport {
    /// True when nothing is held and nothing was violated.
    pub fn is_clean(&self) -> bool {
        *self == LeakReport::default()
    }
}

/// Orphan violations kept at most; later ones are counted only.
pub(super) const ORPHAN_LIMIT: usize = 4096;

/// Misuses that could not be attributed to a live bus, and how many were dropped past
/// [`ORPHAN_LIMIT`].
pub(super) static ORPHANS: Mutex<(Vec<String>, usize)> = Mutex::new((Vec::new(), 0));

pub(super) fn orphans() -> MutexGuard<'static, (Vec<String>, usize)> {
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

impl BusState {
    pub(super) fn violation(&mut self, bus: u64, msg: String) {
        eprintln!("vmbus-kmcl-sim: bus {bus}: VIOLATION: {msg}");
        self.violations.push(msg);
    }
}

impl BusShared {
    pub(super) fn violation(&self, st: &mut BusState, msg: String) {
        st.violation(self.id, msg);
    }

    /// Records a violation from outside the engine.
    pub(crate) fn record_violation(&self, msg: String) {
        let mut st = self.lock();
        self.violation(&mut st, msg);
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
            leaked: Self::leaked_sites(&st),
        }
    }

    /// One line per object still held, ordered by allocation.
    fn leaked_sites(st: &BusState) -> Vec<String> {
        let mut out: Vec<(u64, String)> = Vec::new();
        for (_, c) in st.channels.iter() {
            let kind = if c.is_server { "server" } else { "client" };
            out.push((c.site.seq, format!("{kind} channel: {}", c.site)));
            if let Some(save) = &c.save {
                out.push((save.site.seq, format!("save context: {}", save.site)));
            }
        }
        for (r, p) in st.packets.iter() {
            let (seq, site) = (seq_of(&st.packet_sites, r), site_of(&st.packet_sites, r));
            if p.initialized_at.is_none() {
                out.push((seq, format!("packet: {site}")));
            } else if p.state != PacketState::Idle {
                out.push((seq, format!("initialized packet in flight: {site}")));
            }
        }
        for (r, _) in st.incoming.iter() {
            let (seq, site) = (
                seq_of(&st.incoming_sites, r),
                site_of(&st.incoming_sites, r),
            );
            out.push((seq, format!("incoming packet never completed: {site}")));
        }
        for (id, g) in &st.gpadls {
            out.push((g.site.seq, format!("GPADL {id}: {}", g.site)));
            if let Some((_, _, site)) = &g.mapping {
                out.push((site.seq, format!("mapping of GPADL {id}: {site}")));
            }
        }
        out.sort_by_key(|(seq, _)| *seq);
        out.into_iter().map(|(_, s)| s).collect()
    }

    pub(crate) fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().violations)
    }
}
