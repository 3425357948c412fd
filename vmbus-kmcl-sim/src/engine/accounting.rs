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
    /// Where each object counted above (except kernel handles and interface references, which
    /// the NT emulation and the interface tables count) was allocated, oldest first: the
    /// allocation's sequence number on this bus, the KMCL function that made it and the thread
    /// it ran on (under `cargo test`, the name of the test).
    pub leaked: Vec<String>,
}

/// Where an object of the bus was made: its allocation sequence number on the bus, the KMCL
/// function (or sim step) that made it and the thread that called it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllocSite {
    seq: u64,
    what: &'static str,
    thread: Arc<str>,
}

thread_local! {
    /// The current thread's id and name, looked up once per thread (allocations and
    /// deliveries record them on the hot path).
    static THIS_THREAD: (std::thread::ThreadId, Arc<str>) = {
        let t = std::thread::current();
        let name = t.name().map_or_else(|| format!("{:?}", t.id()), str::to_owned);
        (t.id(), Arc::from(name))
    };
}

/// The current thread's id, cheaply.
pub(crate) fn this_thread() -> std::thread::ThreadId {
    THIS_THREAD.with(|t| t.0)
}

impl std::fmt::Display for AllocSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "allocation #{} by {} on thread '{}'",
            self.seq, self.what, self.thread
        )
    }
}

impl BusState {
    /// The site of an allocation made now by `what` on the current thread.
    pub(super) fn alloc_site(&mut self, what: &'static str) -> AllocSite {
        self.alloc_seq += 1;
        AllocSite {
            seq: self.alloc_seq,
            what,
            thread: THIS_THREAD.with(|t| Arc::clone(&t.1)),
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
        for (_, p) in st.packets.iter() {
            if p.initialized_at.is_none() {
                out.push((p.site.seq, format!("packet: {}", p.site)));
            } else if p.state != PacketState::Idle {
                out.push((
                    p.site.seq,
                    format!("initialized packet in flight: {}", p.site),
                ));
            }
        }
        for (_, i) in st.incoming.iter() {
            out.push((
                i.site.seq,
                format!("incoming packet never completed: {}", i.site),
            ));
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
