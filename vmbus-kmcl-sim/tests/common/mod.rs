//! A small recording driver shared by the sim's tests: every callback appends to the channel's
//! log, incoming packets are completed inline (echoing a reply) or held, as the test asks.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vmbus_kmcl_sim::nt;
use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::*;

/// What the packet callback does.
pub const COMPLETE_INLINE: u32 = 0;
/// Keep the packet; the test completes it later.
pub const HOLD: u32 = 1;
/// Defer the first delivery to passive, complete the redelivery.
pub const DEFER_ONCE: u32 = 2;
/// Fetch the external data (read-only when `ext_flags` says so), then complete.
pub const EXTERNAL: u32 = 3;
/// Fail the packet.
pub const FAIL: u32 = 4;

/// What the packet callback saw of external data: status, bytes, read-only.
pub type ExternalSeen = (NTSTATUS, Vec<u8>, Option<bool>);

/// Per-channel test state, reached through `VmbChannelGetPointer`.
#[derive(Default)]
pub struct Ctx {
    pub log: Mutex<Vec<String>>,
    pub mode: AtomicU32,
    pub ext_flags: AtomicU32,
    pub opened_status: AtomicI32,
    pub held: Mutex<Vec<usize>>,
    pub payloads: Mutex<Vec<Vec<u8>>>,
    pub packet_irqls: Mutex<Vec<u8>>,
    pub external: Mutex<Vec<ExternalSeen>>,
    pub completions: Mutex<Vec<(NTSTATUS, Vec<u8>)>>,
    pub completion_irqls: Mutex<Vec<u8>>,
    pub batches: Mutex<Vec<u32>>,
}

impl Ctx {
    pub fn new() -> Arc<Ctx> {
        Arc::new(Ctx::default())
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Logs a state callback; one that does not run at PASSIVE_LEVEL is marked.
    pub fn push(&self, s: impl Into<String>) {
        let mut s = s.into();
        let irql = nt::current_irql();
        if irql != vmbus_kmcl_sys::nt::PASSIVE_LEVEL {
            s = format!("{s}@irql{irql}");
        }
        self.log.lock().unwrap().push(s);
    }

    pub fn take_held(&self) -> Vec<usize> {
        std::mem::take(&mut *self.held.lock().unwrap())
    }
}

/// The context of `ch`.
///
/// # Safety
///
/// `ch`'s pointer must be an `Arc<Ctx>` kept alive by the test.
pub unsafe fn ctx<'a>(ch: VMBCHANNEL) -> &'a Ctx {
    // SAFETY: the caller guarantees the pointer is a live Ctx.
    unsafe { &*(VmbChannelGetPointer(ch) as *const Ctx) }
}

unsafe extern "C" fn opened(ch: VMBCHANNEL) -> NTSTATUS {
    // SAFETY: test channels carry a live Ctx.
    let c = unsafe { ctx(ch) };
    c.push("opened");
    c.opened_status.load(Ordering::SeqCst)
}

unsafe extern "C" fn closed(ch: VMBCHANNEL) {
    // SAFETY: as above.
    unsafe { ctx(ch) }.push("closed");
}

unsafe extern "C" fn suspend(ch: VMBCHANNEL) {
    // SAFETY: as above.
    let c = unsafe { ctx(ch) };
    c.push("suspend");
}

unsafe extern "C" fn started(ch: VMBCHANNEL) {
    // SAFETY: as above.
    unsafe { ctx(ch) }.push("started");
}

unsafe extern "C" fn post_started(ch: VMBCHANNEL) {
    // SAFETY: as above.
    unsafe { ctx(ch) }.push("post_started");
}

pub unsafe extern "C" fn process_packet(
    ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    buf: PVOID,
    len: u32,
    flags: u32,
) {
    // SAFETY: as above.
    let c = unsafe { ctx(ch) };
    c.packet_irqls.lock().unwrap().push(nt::current_irql());
    // SAFETY: the sim passes `len` readable bytes at `buf`.
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, len as usize) }.to_vec();
    c.payloads.lock().unwrap().push(data.clone());
    match c.mode.load(Ordering::SeqCst) {
        HOLD => c.held.lock().unwrap().push(pkt as usize),
        DEFER_ONCE if nt::current_irql() != vmbus_kmcl_sys::nt::PASSIVE_LEVEL => {
            // SAFETY: inline in the packet's own delivery.
            unsafe { VmbChannelPacketDeferToPassive(pkt) };
        }
        EXTERNAL if flags & VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA != 0 => {
            let mut mdl: PMDL = std::ptr::null_mut();
            // SAFETY: `mdl` is a live local.
            let s = unsafe {
                VmbChannelPacketGetExternalData(pkt, c.ext_flags.load(Ordering::SeqCst), &mut mdl)
            };
            if s == vmbus_kmcl_sim::status::STATUS_PENDING {
                c.external.lock().unwrap().push((s, Vec::new(), None));
                return;
            }
            // SAFETY: the external data lives until the packet is completed.
            let bytes = unsafe { vmbus_kmcl_sim::mdl_read(mdl) }.unwrap_or_default();
            let ro = vmbus_kmcl_sim::mdl_is_read_only(mdl);
            if ro == Some(false) {
                // Write a marker back into the sender's buffer, through the aliasing MDL.
                // SAFETY: the memory is alive until completion; nobody else touches it now.
                unsafe { vmbus_kmcl_sim::mdl_write(mdl, 0, b"W") };
            }
            c.external.lock().unwrap().push((s, bytes, ro));
            // SAFETY: completing our own delivered packet once.
            unsafe { VmbChannelPacketComplete(pkt, std::ptr::null_mut(), 0) };
        }
        FAIL => {
            // SAFETY: during processing.
            unsafe { VmbChannelPacketFail(pkt) };
        }
        _ => {
            // Echo the payload back, reversed, as completion data.
            let mut reply = data;
            reply.reverse();
            // SAFETY: completing our own delivered packet once, with a live buffer.
            unsafe { VmbChannelPacketComplete(pkt, reply.as_mut_ptr() as PVOID, len) };
        }
    }
}

unsafe extern "C" fn processing_complete(ch: VMBCHANNEL, n: u32) {
    // SAFETY: as above.
    unsafe { ctx(ch) }.batches.lock().unwrap().push(n);
}

/// A completion routine recording into the `Ctx` stored as the packet's pointer.
pub unsafe extern "C" fn record_completion(pkt: VMBPACKET, status: NTSTATUS, buf: PVOID, len: u32) {
    // SAFETY: test packets carry a live Ctx pointer.
    let c = unsafe { &*(VmbPacketGetPointer(pkt) as *const Ctx) };
    let data = if buf.is_null() {
        Vec::new()
    } else {
        // SAFETY: the sim passes `len` readable bytes.
        unsafe { std::slice::from_raw_parts(buf as *const u8, len as usize) }.to_vec()
    };
    c.completions.lock().unwrap().push((status, data));
    c.completion_irqls.lock().unwrap().push(nt::current_irql());
}

pub fn guid(n: u32) -> GUID {
    GUID {
        Data1: n,
        Data2: 0x51,
        Data3: 0x4d,
        Data4: [1, 2, 3, 4, 5, 6, 7, 8],
    }
}

pub const TYPE: u32 = 0xC0FFEE;
pub const INSTANCE: u32 = 0xBEEF;

/// One configured endpoint.
pub struct Ep {
    pub ch: VMBCHANNEL,
    pub ctx: Arc<Ctx>,
}

fn callbacks() -> VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
    cbs.EvtChannelOpened = Some(opened);
    cbs.EvtChannelClosed = Some(closed);
    cbs.EvtChannelSuspend = Some(suspend);
    cbs.EvtChannelStarted = Some(started);
    cbs.EvtChannelPostStarted = Some(post_started);
    cbs
}

/// A server channel with the recording driver, configured but not enabled.
pub fn server(bus: &Bus) -> Ep {
    let ctx = Ctx::new();
    let mut ch = std::ptr::null_mut();
    // SAFETY: plain KMCL calls with live arguments; the Ctx outlives the channel.
    unsafe {
        assert_eq!(VmbChannelAllocate(bus.root_device(), 1, &mut ch), 0);
        assert_eq!(
            VmbServerChannelInitSetTargetInterfaceId(ch, guid(TYPE), guid(INSTANCE)),
            0
        );
    }
    register_recording_driver(ch, ctx)
}

/// Registers the recording driver's callbacks and context on a freshly allocated channel.
fn register_recording_driver(ch: VMBCHANNEL, ctx: Arc<Ctx>) -> Ep {
    let mut cbs = callbacks();
    // SAFETY: `ch` is a live channel in its init phase; `cbs` outlives the call (the sim copies
    // the table); the context pointer stays valid while `Ep` holds the `Arc`.
    unsafe {
        assert_eq!(VmbChannelInitSetStateChangeCallbacks(ch, &mut cbs), 0);
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(
                ch,
                Some(process_packet),
                Some(processing_complete)
            ),
            0
        );
        VmbChannelSetPointer(ch, Arc::as_ptr(&ctx) as PVOID);
    }
    Ep { ch, ctx }
}

/// A client channel with the recording driver, configured but not enabled.
pub fn client(bus: &Bus) -> Ep {
    let ctx = Ctx::new();
    let mut ch = std::ptr::null_mut();
    // SAFETY: as in `server`.
    unsafe {
        assert_eq!(VmbChannelAllocate(bus.guest_device(), 0, &mut ch), 0);
        let ty = guid(TYPE);
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(ch, &ty, std::ptr::null(), None),
            0
        );
    }
    register_recording_driver(ch, ctx)
}

/// A server and a client, enabled, started and open.
pub fn pair(bus: &Bus) -> (Ep, Ep) {
    let s = server(bus);
    let c = client(bus);
    open(bus, &s, &c);
    (s, c)
}

/// Enables and starts both endpoints and delivers until they are open.
pub fn open(bus: &Bus, s: &Ep, c: &Ep) {
    // SAFETY: live channels.
    unsafe {
        assert_eq!(VmbChannelEnable(s.ch), 0);
        VmbChannelStart(s.ch);
        assert_eq!(VmbChannelEnable(c.ch), 0);
    }
    bus.run_until_idle();
}

/// Disables and cleans up the endpoints.
pub fn teardown(eps: &[&Ep]) {
    for e in eps {
        // SAFETY: live channels, disabled before cleanup.
        unsafe {
            VmbChannelDisable(e.ch);
            VmbChannelCleanup(e.ch);
        }
    }
}

/// Sends `data` on a fresh packet of `from` with the recording completion routine.
pub fn send(from: &Ep, data: &[u8], flags: u32) -> (VMBPACKET, NTSTATUS) {
    // SAFETY: live channel; the packet pointer is the endpoint's live Ctx.
    unsafe {
        let p = VmbPacketAllocate(from.ch);
        assert!(!p.is_null());
        VmbPacketSetPointer(p, Arc::as_ptr(&from.ctx) as PVOID);
        VmbPacketSetCompletionRoutine(p, Some(record_completion));
        let s = VmbPacketSend(
            p,
            data.as_ptr() as PVOID,
            data.len() as u32,
            std::ptr::null_mut(),
            flags,
        );
        (p, s)
    }
}

/// Sends with the default completion routine (the packet frees itself).
pub fn send_default(from: &Ep, data: &[u8], flags: u32) -> NTSTATUS {
    // SAFETY: live channel and buffer.
    unsafe {
        let p = VmbPacketAllocate(from.ch);
        assert!(!p.is_null());
        VmbPacketSend(
            p,
            data.as_ptr() as PVOID,
            data.len() as u32,
            std::ptr::null_mut(),
            flags,
        )
    }
}

pub const WAIT: u32 = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;

/// Frees packets the test owns.
pub fn free(packets: &[VMBPACKET]) {
    for p in packets {
        // SAFETY: packets with a custom routine, completed, owned by the test.
        unsafe { VmbPacketFree(*p) };
    }
}

/// Completes every held packet of `e` with an empty reply.
pub fn complete_held(e: &Ep) -> usize {
    let held = e.ctx.take_held();
    for p in &held {
        // SAFETY: each held packet is completed exactly once.
        unsafe {
            VmbChannelPacketComplete(
                std::ptr::without_provenance_mut(*p),
                std::ptr::null_mut(),
                0,
            )
        };
    }
    held.len()
}

/// Spins until `cond` holds; panics after 20 s so a broken rule fails the test instead of
/// hanging it.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// A raw VMBus packet as a hostile guest writes it: the 16-byte descriptor (type, data offset
/// and total length in 8-byte units, flags, transaction id; little endian) and the payload.
pub fn raw(ty: u16, off8: u16, len8: u16, flags: u16, txid: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&off8.to_le_bytes());
    v.extend_from_slice(&len8.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&txid.to_le_bytes());
    v.extend_from_slice(payload);
    v
}
