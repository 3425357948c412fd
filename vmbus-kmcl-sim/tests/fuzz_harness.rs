//! The hostile-guest harness (`fuzz` feature): a correct VSP survives random inputs, and each
//! kind of VSP bug the harness exists for is reported as a finding (a panic naming it).
#![cfg(feature = "fuzz")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the VSP's setup is a sequence of raw KMCL calls with one precondition: a fresh \
              channel of a live bus, stated once for the block"
)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};

use vmbus_kmcl_sim::fuzz::{save_restore_in_place, GuestGpadls, HostileGuest, Vsp};
use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::*;

const TYPE: GUID = GUID {
    Data1: 0xF022,
    Data2: 1,
    Data3: 2,
    Data4: [9; 8],
};
const INSTANCE: GUID = GUID {
    Data1: 0xF023,
    Data2: 1,
    Data3: 2,
    Data4: [9; 8],
};

/// What the raw VSP does with a non-empty request of even length (others are echoed): often
/// enough that a few random inputs find it, also under Miri.
static BUG: AtomicU32 = AtomicU32::new(NONE);
const NONE: u32 = 0;
/// Completes the packet twice.
const DOUBLE_COMPLETE: u32 = 1;
/// Never answers it.
const NEVER_ANSWER: u32 = 2;
/// Allocates a packet and never frees it.
const LEAK_PACKET: u32 = 3;

unsafe extern "C" fn vsp_packet(
    ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    buf: PVOID,
    len: u32,
    _flags: u32,
) {
    if len > 0 && len % 2 == 0 {
        match BUG.load(Ordering::SeqCst) {
            DOUBLE_COMPLETE => {
                // SAFETY: the delivered packet (the second call is the bug under test: the
                // sim records it, it is not UB there).
                unsafe { VmbChannelPacketComplete(pkt, std::ptr::null_mut(), 0) };
            }
            NEVER_ANSWER => return,
            LEAK_PACKET => {
                // SAFETY: a live channel; the packet is leaked on purpose.
                let _ = unsafe { VmbPacketAllocate(ch) };
            }
            _ => {}
        }
    }
    // SAFETY: KMCL passes `len` readable bytes at `buf`; answered once here.
    unsafe { VmbChannelPacketComplete(pkt, buf, len.min(64)) };
}

/// A raw VSP: echoes up to 64 bytes, optionally with the bug selected by `BUG`.
struct RawVsp {
    channel: VMBCHANNEL,
    save_restores: u32,
}

impl RawVsp {
    fn offer(bus: &Bus) -> RawVsp {
        let mut channel = std::ptr::null_mut();
        // SAFETY: plain KMCL calls with live arguments on a fresh channel.
        unsafe {
            assert_eq!(VmbChannelAllocate(bus.root_device(), 1, &mut channel), 0);
            assert_eq!(
                VmbServerChannelInitSetTargetInterfaceId(channel, TYPE, INSTANCE),
                0
            );
            assert_eq!(
                VmbChannelInitSetProcessPacketCallbacks(channel, Some(vsp_packet), None),
                0
            );
            assert_eq!(VmbChannelInitSetMaximumExternalData(channel, 65536, 4), 0);
            assert_eq!(VmbChannelEnable(channel), 0);
            VmbChannelStart(channel);
        }
        RawVsp {
            channel,
            save_restores: 0,
        }
    }
}

impl Vsp for RawVsp {
    type Request = Vec<u8>;

    fn channel(&self) -> VMBCHANNEL {
        self.channel
    }

    fn encode(&self, request: &Vec<u8>, _gpadls: &GuestGpadls<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(request);
    }

    fn save_restore(&mut self) -> bool {
        // SAFETY: the live server channel, used by this thread only, outside callbacks.
        let r = unsafe { save_restore_in_place(self.channel) };
        assert_eq!(r, Ok(()));
        self.save_restores += 1;
        true
    }
}

impl Drop for RawVsp {
    fn drop(&mut self) {
        // SAFETY: the live channel, disabled before cleanup, once.
        unsafe { VmbChannelDisable(self.channel) };
        // SAFETY: as above.
        unsafe { VmbChannelCleanup(self.channel) };
    }
}

/// Deterministic pseudo-random inputs.
fn inputs(n: usize, len: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect()
        })
        .collect()
}

/// The bugs are selected through a global: tests that set one run under this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_correct_vsp_survives_random_hostile_inputs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    BUG.store(NONE, Ordering::SeqCst);
    let n = if cfg!(miri) { 4 } else { 300 };
    let mut total = vmbus_kmcl_sim::fuzz::RunStats::default();
    for input in inputs(n, 256) {
        let bus = Bus::new();
        let vsp = RawVsp::offer(&bus);
        let stats = HostileGuest::new(TYPE).run(&bus, vsp, &input);
        total.actions += stats.actions;
        total.sent += stats.sent;
        total.raw_accepted += stats.raw_accepted;
        total.raw_refused += stats.raw_refused;
        total.replies += stats.replies;
        total.gpadls_shared += stats.gpadls_shared;
        total.gpadls_deleted += stats.gpadls_deleted;
        bus.assert_no_leaks();
    }
    // The inputs reach the VSP by both paths, and the parser refuses some raw frames.
    assert!(total.actions > n, "{total:?}");
    assert!(total.sent > 0, "{total:?}");
    assert!(total.raw_accepted > 0, "{total:?}");
    assert!(total.raw_refused > 0, "{total:?}");
    if !cfg!(miri) {
        // The guest shares and deletes GPADLs and gets synchronous replies.
        assert!(total.replies > 0, "{total:?}");
        assert!(total.gpadls_shared > 0, "{total:?}");
        assert!(total.gpadls_deleted > 0, "{total:?}");
    }
}

/// Runs random inputs against the raw VSP with `bug` until one panics; returns its message.
fn first_finding(bug: u32) -> String {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    BUG.store(bug, Ordering::SeqCst);
    let guest = HostileGuest::new(TYPE).block_limit(std::time::Duration::from_millis(10));
    let mut found = None;
    for input in inputs(if cfg!(miri) { 8 } else { 400 }, 256) {
        let bus = Bus::new();
        let vsp = RawVsp::offer(&bus);
        let r = catch_unwind(AssertUnwindSafe(|| guest.run(&bus, vsp, &input)));
        // The harness has already reported what the bus held; start the next bus clean.
        let _ = bus.take_violations();
        if let Err(panic) = r {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "non-string panic".into());
            found = Some(msg);
            // Leaked objects stay on the bus: do not let its drop report them again.
            std::mem::forget(bus);
            break;
        }
    }
    BUG.store(NONE, Ordering::SeqCst);
    found.expect("the harness found nothing")
}

#[test]
fn a_double_completion_is_a_finding() {
    let msg = first_finding(DOUBLE_COMPLETE);
    assert!(msg.contains("recorded violations"), "{msg}");
    assert!(msg.contains("stale VMBPACKETCOMPLETION"), "{msg}");
}

#[test]
fn a_packet_never_answered_is_a_finding() {
    let msg = first_finding(NEVER_ANSWER);
    assert!(
        msg.contains("never completed") || msg.contains("not clean"),
        "{msg}"
    );
}

#[test]
fn a_leaked_packet_is_a_finding() {
    let msg = first_finding(LEAK_PACKET);
    assert!(msg.contains("not clean after the VSP was dropped"), "{msg}");
    assert!(msg.contains("VmbPacketAllocate"), "{msg}");
}

#[test]
fn save_restore_in_place_reoffers_the_channel_and_the_guest_reconnects() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    BUG.store(NONE, Ordering::SeqCst);
    let bus = Bus::new();
    let mut vsp = RawVsp::offer(&bus);
    assert!(vsp.save_restore());
    assert_eq!(vsp.save_restores, 1);
    let info = bus.channel_info(vsp.channel).unwrap();
    assert_eq!(info.state, vmbus_kmcl_sim::ChannelState::Enabled);
    // A guest still finds the restored offer and gets its echo.
    let stats = HostileGuest::new(TYPE).run(&bus, vsp, &inputs(1, 512)[0]);
    assert!(stats.actions > 0);
    bus.assert_no_leaks();
}

#[test]
fn an_empty_input_opens_and_closes_the_guest_only() {
    let bus = Bus::new();
    let vsp = RawVsp::offer(&bus);
    let stats = HostileGuest::new(TYPE).run(&bus, vsp, &[]);
    assert_eq!(stats, vmbus_kmcl_sim::fuzz::RunStats::default());
    bus.assert_no_leaks();
}

#[test]
fn the_guest_shares_gpadls_and_deletes_them_before_its_channel_goes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    BUG.store(NONE, Ordering::SeqCst);
    // The first of the deterministic inputs whose guest both shares and deletes a GPADL;
    // every GPADL still shared when a guest closes, crashes or is closed by the VSP is
    // deleted by the harness (else the bus reports it left after EvtChannelClosed).
    let found = inputs(64, 512).into_iter().find_map(|input| {
        let bus = Bus::new();
        let stats = HostileGuest::new(TYPE).run(&bus, RawVsp::offer(&bus), &input);
        bus.assert_no_leaks();
        (stats.gpadls_shared > 0 && stats.gpadls_deleted > 0).then_some(stats)
    });
    assert!(found.is_some(), "no input shares and deletes a GPADL");
}
