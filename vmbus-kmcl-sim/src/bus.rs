//! The test-facing control API: [`Bus`].
//!
//! A `Bus` is one simulated VMBus between a root partition and one guest. Tests allocate
//! channels on its two fake device objects through the ordinary KMCL functions, drive delivery
//! deterministically with [`Bus::run_until_idle`] (or let a background thread deliver with
//! [`Bus::start_background_delivery`]), inject faults, and finally check with
//! [`Bus::assert_no_leaks`] that every channel, packet, GPADL, mapping, kernel handle and
//! interface reference was released and that no misuse was detected.
//!
//! All accounting is per bus, so tests running in parallel threads do not disturb each other.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use vmbus_kmcl_sys::{HANDLE, NTSTATUS, PDEVICE_OBJECT, PVOID, VMBCHANNEL};

use crate::engine::{BusShared, ChannelInfo, LeakReport, RawCompletion, RawPacketError};
use crate::handle::{Handle, Kind};
use crate::slab::ObjRef;

/// A simulated VMBus connecting a root (server) side and a guest (client) side.
///
/// Dropping a bus stops its background thread and, unless the thread is already panicking,
/// panics when anything leaked or a violation was recorded (like
/// [`Bus::assert_no_leaks`]). Handles of a dropped bus no longer resolve.
///
/// # Examples
///
/// See the crate documentation for a server and a client channel paired on a bus.
#[derive(Debug)]
pub struct Bus {
    shared: Arc<BusShared>,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A new bus with no channels, delivering only when pumped.
    pub fn new() -> Bus {
        Bus {
            shared: BusShared::new(),
            background: Mutex::new(None),
        }
    }

    /// The bus's unique id (also the id the NT emulation tags VMBus handles with).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    fn device(&self, index: u32) -> PDEVICE_OBJECT {
        let v = Handle {
            kind: Kind::Device,
            bus: self.id(),
            index,
            generation: 0,
        }
        .encode();
        // A fake device object, never dereferenced: a pointer without provenance.
        crate::handle::to_ptr(v)
    }

    /// The fake device object of the root side: pass it to `VmbChannelAllocate` with
    /// `IsServer = TRUE`.
    pub fn root_device(&self) -> PDEVICE_OBJECT {
        self.device(0)
    }

    /// The fake device object of the guest side: pass it to `VmbChannelAllocate` with
    /// `IsServer = FALSE`.
    pub fn guest_device(&self) -> PDEVICE_OBJECT {
        self.device(1)
    }

    fn channel_ref(&self, channel: VMBCHANNEL) -> Option<ObjRef> {
        // CAST: handle value, never dereferenced.
        let h = Handle::decode(channel as usize, Kind::Channel)?;
        (h.bus == self.id()).then_some(ObjRef {
            index: h.index,
            generation: h.generation,
        })
    }

    /// Does one unit of queued work (a state callback, a delivery, a completion). Returns false
    /// when nothing was ready.
    pub fn pump_one(&self) -> bool {
        self.shared.pump_once()
    }

    /// Delivers until nothing is left to do (and no other thread is delivering). Returns the
    /// number of work items done. Never returns while drivers keep generating traffic; use
    /// [`Bus::run_at_most`] for such ping-pong protocols.
    pub fn run_until_idle(&self) -> usize {
        let mut n = 0;
        loop {
            if self.shared.pump_once() {
                n += 1;
                continue;
            }
            if self.shared.idle() {
                return n;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Does at most `limit` work items; returns how many were done.
    pub fn run_at_most(&self, limit: usize) -> usize {
        let mut n = 0;
        while n < limit && self.shared.pump_once() {
            n += 1;
        }
        n
    }

    /// Starts a background thread that delivers continuously, like the real KMCL's DPCs and
    /// worker threads. Idempotent.
    pub fn start_background_delivery(&self) {
        let mut bg = self.bg();
        if bg.is_some() {
            return;
        }
        self.shared.stop.store(false, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        *bg = Some(std::thread::spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                if !shared.pump_once() {
                    shared.park(Duration::from_millis(5));
                }
            }
        }));
    }

    /// Stops and joins the background delivery thread, if any.
    pub fn stop_background_delivery(&self) {
        let handle = self.bg().take();
        if let Some(h) = handle {
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.notify();
            if h.join().is_err() {
                eprintln!(
                    "vmbus-kmcl-sim: bus {}: the background delivery thread panicked",
                    self.id()
                );
            }
        }
    }

    fn bg(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.background.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long blocking calls (`VmbChannelPause`/`Disable` waiting for incoming packets,
    /// `VmbChannelDeleteGpadl` waiting for an unmap) wait before the sim reports a violation
    /// and gives up. Default: 5 s.
    pub fn set_block_limit(&self, limit: Duration) {
        self.shared.set_block_limit(limit);
    }

    /// The next `n` `VmbPacketAllocate` calls return NULL.
    pub fn fail_next_packet_allocations(&self, n: u32) {
        self.shared.fail_packet_allocations(n);
    }

    /// The next `n` `VmbChannelAllocate` calls fail with `STATUS_INSUFFICIENT_RESOURCES`.
    pub fn fail_next_channel_allocations(&self, n: u32) {
        self.shared.fail_channel_allocations(n);
    }

    /// The next pairing of a client with an offer fails: the client's `EvtChannelPnpFailure`
    /// runs with `status` and the client is not opened until it is enabled again.
    pub fn fail_next_open(&self, status: NTSTATUS) {
        self.shared.fail_next_open(status);
    }

    /// The next `n` packets whose external data is requested get `STATUS_PENDING` once, then
    /// are delivered again and succeed.
    pub fn pend_next_external_data(&self, n: u32) {
        self.shared.external_data_pending(n);
    }

    /// Makes the outgoing ring of `channel` report no free space (`full = true`) until called
    /// again with `false`. Returns false when `channel` is not a live channel of this bus.
    pub fn set_ring_full(&self, channel: VMBCHANNEL, full: bool) -> bool {
        self.channel_ref(channel)
            .is_some_and(|r| self.shared.set_ring_full(r, full))
    }

    /// Cuts off the peer of `channel` as if its partition crashed: `channel` sees the peer go
    /// away (suspend, cancelled transactions, closed) while the peer's driver gets no callback
    /// any more; its objects can still be disabled, freed and cleaned up. Returns false when
    /// `channel` has no peer.
    pub fn crash_peer_of(&self, channel: VMBCHANNEL) -> bool {
        self.channel_ref(channel)
            .is_some_and(|r| self.shared.crash_peer_of(r))
    }

    /// Puts `bytes` into the guest-to-host ring of the connected server channel `server`, as a
    /// hostile guest could, bypassing the client driver. `bytes` is a VMBus packet: a 16-byte
    /// descriptor (type `u16` = 6 for in-band data, data offset and total length in 8-byte
    /// units, flags `u16` with bit 0 = completion requested, transaction id `u64`, all little
    /// endian) and the payload. Type 9 (data with external pages, "GPA direct") carries one
    /// page range between the descriptor and the payload: a reserved `u32`, the range count
    /// `u32` (must be 1), the range's byte count `u32` (non-zero, at most the server's
    /// `VmbChannelInitSetMaximumExternalData` size, or one page when it set none) and byte
    /// offset `u32` (inside the first page), then one `u64` page number per page the range
    /// touches; the server gets the packet with the external-data flag and an MDL listing
    /// those pages ([`crate::mdl_pfns`]). Malformed or oversized packets are refused (and counted in
    /// [`Bus::rejected_raw_guest_packets`]) the way KMCL refuses them before any driver sees
    /// them. The ring keeps its fixed size: when it has no room for the packet (the server does
    /// not drain it, or [`Bus::set_ring_full`] holds on the client) the packet is refused with
    /// [`RawPacketError::RingFull`], as a guest would find the ring full. A completion is
    /// reported in [`Bus::take_raw_guest_completions`] only for a packet that requested one.
    pub fn inject_raw_guest_packet(
        &self,
        server: VMBCHANNEL,
        bytes: &[u8],
    ) -> Result<(), RawPacketError> {
        let r = self
            .channel_ref(server)
            .ok_or(RawPacketError::NotConnected)?;
        self.shared.inject_raw(r, bytes)
    }

    /// Completions the server sent for raw injected packets, oldest first (taken).
    pub fn take_raw_guest_completions(&self) -> Vec<RawCompletion> {
        self.shared.raw_completions()
    }

    /// Number of raw injected packets refused so far.
    pub fn rejected_raw_guest_packets(&self) -> usize {
        self.shared.rejected_raw()
    }

    /// A snapshot of `channel`'s state and configuration.
    pub fn channel_info(&self, channel: VMBCHANNEL) -> Option<ChannelInfo> {
        self.shared.channel_info(self.channel_ref(channel)?)
    }

    /// Whether `VmbServerChannelInitSetVmbusHandle` bound `channel` to this bus.
    pub fn server_vmbus_handle_set(&self, channel: VMBCHANNEL) -> bool {
        self.channel_info(channel)
            .is_some_and(|i| i.vmbus_handle.is_some())
    }

    /// Incoming packets delivered to `EvtVmbChannelProcessPacket` so far (redeliveries count).
    pub fn packets_delivered(&self) -> u64 {
        self.shared.packets_delivered()
    }

    /// Opens a user-mode VMBus handle for this bus in process `process` (the VM worker
    /// process), for `VmbConvertVmbusHandleToKernelHandle`.
    pub fn open_vmbus_handle_in(&self, process: &crate::nt::Process) -> HANDLE {
        process.open_vmbus_handle(self.id())
    }

    /// What the bus still holds, and the violations recorded so far.
    pub fn leak_report(&self) -> LeakReport {
        let mut r = self.shared.leak_counts();
        r.kernel_handles = crate::nt::open_kernel_handles_for_bus(self.id());
        r.interface_references = interface_refs_for_bus(self.id());
        let nt_violations = crate::nt::violations_for_bus(self.id());
        r.violations
            .extend(nt_violations.iter().map(|v| format!("NT: {v:?}")));
        // The NT check: violations that name no bus, committed on this thread, and process
        // references leaked by processes created on it.
        let nt_thread = crate::nt::thread_report();
        r.violations
            .extend(nt_thread.iter().map(|v| format!("NT (this thread): {v:?}")));
        r
    }

    /// The violations recorded so far, removed from the bus (so a test that provokes one on
    /// purpose can assert it and still end clean).
    pub fn take_violations(&self) -> Vec<String> {
        let mut taken = self.shared.take_violations();
        let nt_violations = crate::nt::take_violations_for_bus(self.id());
        taken.extend(nt_violations.iter().map(|v| format!("NT: {v:?}")));
        // The NT check's violations of this thread (leaked references stay until released).
        let nt_thread = crate::nt::take_thread_violations();
        taken.extend(nt_thread.iter().map(|v| format!("NT (this thread): {v:?}")));
        taken
    }

    /// Panics with a description of everything still held and every violation recorded.
    ///
    /// # Panics
    ///
    /// When [`Bus::leak_report`] is not clean.
    #[track_caller]
    pub fn assert_no_leaks(&self) {
        let r = self.leak_report();
        if !r.is_clean() {
            panic!("vmbus-kmcl-sim: bus {} is not clean: {r:#?}", self.id());
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop_background_delivery();
        let report = self.leak_report();
        self.shared.unregister();
        if !report.is_clean() && !std::thread::panicking() {
            panic!(
                "vmbus-kmcl-sim: bus {} dropped while not clean: {report:#?}",
                self.id()
            );
        }
    }
}

/// Bus (if any) and reference count of each interface context handed out.
type InterfaceTable = HashMap<usize, (Option<u64>, usize)>;

/// Reference counts of queried interface tables, by context value.
static INTERFACES: LazyLock<Mutex<InterfaceTable>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_INTERFACE: AtomicUsize = AtomicUsize::new(1);

fn interfaces() -> MutexGuard<'static, InterfaceTable> {
    INTERFACES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new interface context holding one reference (the one the exporter takes for the
/// importer), accounted to `bus` when given.
pub(crate) fn new_interface_context(bus: Option<u64>) -> PVOID {
    // Distinct, non-null, never dereferenced values.
    let id = 0x7000_0000 + NEXT_INTERFACE.fetch_add(1, Ordering::Relaxed) * 16;
    interfaces().insert(id, (bus, 1));
    crate::handle::to_ptr(id)
}

fn interface_misuse(bus: Option<u64>, msg: &str) {
    match bus.and_then(crate::engine::lookup_bus) {
        Some(b) => b.record_violation(msg.to_string()),
        None => crate::engine::orphan_violation(msg),
    }
}

/// `InterfaceReference` of the sim's interface tables.
pub(crate) extern "C" fn interface_reference(context: *mut c_void) {
    let mut map = interfaces();
    // CAST: context values are opaque ids.
    match map.get_mut(&(context as usize)) {
        Some((_, n)) if *n > 0 => *n += 1,
        Some((bus, _)) => {
            let bus = *bus;
            drop(map);
            interface_misuse(bus, "InterfaceReference on an interface already released");
        }
        None => {
            drop(map);
            interface_misuse(None, "InterfaceReference with an unknown context");
        }
    }
}

/// `InterfaceDereference` of the sim's interface tables.
pub(crate) extern "C" fn interface_dereference(context: *mut c_void) {
    let mut map = interfaces();
    // CAST: context values are opaque ids.
    match map.get_mut(&(context as usize)) {
        Some((_, n)) if *n > 0 => *n -= 1,
        Some((bus, _)) => {
            let bus = *bus;
            drop(map);
            interface_misuse(
                bus,
                "InterfaceDereference on an interface already released (one dereference too many)",
            );
        }
        None => {
            drop(map);
            interface_misuse(None, "InterfaceDereference with an unknown context");
        }
    }
}

/// References still held on the interface whose `INTERFACE.Context` is `context` (`None` for a
/// context the sim never handed out).
pub fn interface_reference_count(context: PVOID) -> Option<usize> {
    // CAST: context values are opaque ids.
    interfaces().get(&(context as usize)).map(|(_, n)| *n)
}

fn interface_refs_for_bus(bus: u64) -> usize {
    interfaces()
        .values()
        .filter(|(b, _)| *b == Some(bus))
        .map(|(_, n)| n)
        .sum()
}
