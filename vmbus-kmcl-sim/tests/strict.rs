//! The sim is as strict as the kernel: no export aborts the process, rings keep their sizes
//! against a hostile guest, frames that can never fit are errors, caller pointers are read as C
//! allows, reports say where leaked objects came from, and the documented KMCL rules the sim
//! used to relax are enforced. Each test names the rule it follows.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests drive sequences of raw KMCL calls whose preconditions are the same: live \
              channels and buffers owned by the test, stated once per block"
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use common::*;
use vmbus_kmcl_sim::status::*;
use vmbus_kmcl_sim::{Bus, RawPacketError};
use vmbus_kmcl_sys::*;

// ----- Item 1: no export aborts the process -----

/// Status of the `VmbChannelSaveContinue` made from inside the first one's packet-save
/// callback.
static INNER_SAVE: AtomicI32 = AtomicI32::new(1);
static INNER_DONE: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn save_packet_reenters(
    ch: VMBCHANNEL,
    _pkt: VMBPACKET,
    _buf: PVOID,
    _size: u32,
    _needed: PUINT32,
) -> NTSTATUS {
    if !INNER_DONE.swap(true, Ordering::SeqCst) {
        let mut out = [0u8; 64];
        let (mut filled, mut required) = (0u32, 0u32);
        // SAFETY: live channel and local outputs of the stated sizes.
        let s = unsafe {
            VmbChannelSaveContinue(ch, out.as_mut_ptr().cast(), 64, &mut filled, &mut required)
        };
        INNER_SAVE.store(s, Ordering::SeqCst);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn restore_nothing(
    _ch: VMBCHANNEL,
    _lib: PVOID,
    _lib_len: u32,
    _save: PVOID,
    _save_len: u32,
) -> NTSTATUS {
    STATUS_SUCCESS
}

/// KMCL keeps one save context per channel (`VmbChannelSaveBegin` sets it up, each
/// `VmbChannelSaveContinue` resumes where the previous stopped): a second call while the first
/// is still inside `EvtVmbChannelSavePacket` is refused, and the first finishes intact.
#[test]
fn concurrent_save_continue_is_refused_not_an_abort() {
    let bus = Bus::new();
    let s = server(&bus);
    // SAFETY: live channel in its init phase.
    unsafe {
        assert_eq!(
            VmbServerChannelInitSetSaveRestorePacketCallbacks(
                s.ch,
                Some(save_packet_reenters),
                Some(restore_nothing)
            ),
            0
        );
    }
    let c = client(&bus);
    open(&bus, &s, &c);
    c.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (p, st) = send(&s, b"in flight", WAIT);
    assert_eq!(st, STATUS_SUCCESS);
    bus.run_until_idle();
    // SAFETY: live server channel; buffers of the stated sizes.
    unsafe {
        assert_eq!(VmbChannelSaveBegin(s.ch), STATUS_SUCCESS);
        let mut out = vec![0u8; 4096];
        let (mut filled, mut required) = (0u32, 0u32);
        let st = VmbChannelSaveContinue(
            s.ch,
            out.as_mut_ptr().cast(),
            4096,
            &mut filled,
            &mut required,
        );
        assert_eq!(st, STATUS_SUCCESS);
        assert!(filled > 16);
        VmbChannelSaveEnd(s.ch);
    }
    assert_eq!(
        INNER_SAVE.load(Ordering::SeqCst),
        STATUS_INVALID_DEVICE_STATE
    );
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("must be serialised"), "{v:?}");
    assert_eq!(complete_held(&c), 1);
    bus.run_until_idle();
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

// ----- Item 2: rings have fixed sizes, also for a hostile guest -----

fn raw_frame(flags: u16, txid: u64, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from((16 + payload.len()) / 8).unwrap();
    let mut v = Vec::new();
    v.extend_from_slice(&6u16.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&total.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&txid.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// A VMBus ring is a fixed block of shared pages: a guest that finds no room cannot write. With
/// the server paused, injection stops at the ring's capacity, and frames that asked for no
/// completion get none.
#[test]
fn raw_guest_injection_stops_at_the_ring_size() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel, called at PASSIVE_LEVEL from the test thread.
    unsafe { VmbChannelPause(s.ch) };
    let capacity = bus.channel_info(c.ch).unwrap().outgoing_ring_capacity;
    let frame = raw_frame(0, 1, &[0x5a; 1000]);
    let mut accepted = 0usize;
    let mut refused = None;
    for _ in 0..50_000 {
        match bus.inject_raw_guest_packet(s.ch, &frame) {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(refused, Some(RawPacketError::RingFull));
    // 16-byte descriptor + 1000 bytes + 8-byte trailer per frame.
    assert_eq!(accepted, capacity / 1024);
    let info = bus.channel_info(c.ch).unwrap();
    assert!(info.outgoing_ring_used <= info.outgoing_ring_capacity);
    assert_eq!(info.outgoing_waiting, 0);
    // SAFETY: live channel.
    unsafe { VmbChannelStart(s.ch) };
    bus.run_until_idle();
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), accepted);
    assert_eq!(bus.take_raw_guest_completions(), []);
    // A ring forced full refuses too.
    assert!(bus.set_ring_full(c.ch, true));
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &raw_frame(1, 2, b"12345678")),
        Err(RawPacketError::RingFull)
    );
    assert!(bus.set_ring_full(c.ch, false));
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// Frames of a raw guest still in the ring when the channel closes are dropped; only those that
/// requested a completion are answered (cancelled).
#[test]
fn raw_guest_frames_cancelled_at_close_complete_only_when_requested() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    unsafe { VmbChannelPause(s.ch) };
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &raw_frame(0, 5, b"no-reply")),
        Ok(())
    );
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &raw_frame(1, 6, b"reply-me")),
        Ok(())
    );
    // SAFETY: live channels.
    unsafe { VmbChannelDisable(c.ch) };
    bus.run_until_idle();
    let done = bus.take_raw_guest_completions();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].transaction_id, 6);
    assert_eq!(done[0].status, STATUS_CANCELLED);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}
