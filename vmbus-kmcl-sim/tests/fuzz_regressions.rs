//! What the hostile-guest harness found, and the raw frame type it needed: each test is named
//! after the case.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests drive sequences of raw KMCL calls whose preconditions are the same: live \
              channels and buffers owned by the test, stated once per block"
)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use vmbus_kmcl_sim::status::*;
use vmbus_kmcl_sim::{Bus, RawPacketError};
use vmbus_kmcl_sys::*;

/// Completes every packet with the delivered buffer itself as the response (an echo).
unsafe extern "C" fn echo_in_place(
    _: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    buf: PVOID,
    len: u32,
    _: u32,
) {
    // SAFETY: the delivered buffer is readable for `len` bytes during the callback; the packet
    // is answered once.
    unsafe { VmbChannelPacketComplete(pkt, buf, len) };
}

/// Found by Miri on the harness: the sim recycled the payload buffer (clearing it) while the
/// completion data, a borrow of that same buffer, was still in use: undefined behaviour.
#[test]
fn completing_with_the_delivered_buffer_as_the_response_is_defined() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: the server is live and disabled for the reconfiguration.
    unsafe {
        VmbChannelDisable(s.ch);
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(s.ch, Some(echo_in_place), None),
            0
        );
        assert_eq!(VmbChannelEnable(s.ch), 0);
        VmbChannelStart(s.ch);
    }
    // SAFETY: the client was closed by the server's disable; enabled again.
    unsafe { assert_eq!(VmbChannelEnable(c.ch), 0) };
    bus.run_until_idle();
    let mut packets = Vec::new();
    for msg in [&b"hello"[..], b"echo in place", b"x"] {
        let (p, status) = send(&c, msg, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION);
        assert_eq!(status, STATUS_SUCCESS);
        packets.push(p);
        bus.run_until_idle();
    }
    free(&packets);
    let done = c.ctx.completions.lock().unwrap().clone();
    let expected: Vec<(NTSTATUS, Vec<u8>)> = [&b"hello"[..], b"echo in place", b"x"]
        .iter()
        .map(|m| (STATUS_SUCCESS, m.to_vec()))
        .collect();
    assert_eq!(done, expected);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// A raw GPA-direct frame (type 9): descriptor, reserved, range count, then one range (byte
/// count, byte offset, page numbers), then the payload at `offset8 * 8`.
fn gpa_frame(
    count: u32,
    byte_count: u32,
    byte_offset: u32,
    pfns: &[u64],
    payload: &[u8],
) -> Vec<u8> {
    let offset = 32 + 8 * pfns.len();
    let total = (offset + payload.len()).div_ceil(8) * 8;
    let mut f = Vec::new();
    f.extend_from_slice(&9u16.to_le_bytes());
    f.extend_from_slice(&((offset / 8) as u16).to_le_bytes());
    f.extend_from_slice(&((total / 8) as u16).to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&77u64.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&count.to_le_bytes());
    f.extend_from_slice(&byte_count.to_le_bytes());
    f.extend_from_slice(&byte_offset.to_le_bytes());
    for p in pfns {
        f.extend_from_slice(&p.to_le_bytes());
    }
    f.extend_from_slice(payload);
    f.resize(total, 0);
    f
}

#[test]
fn a_raw_gpa_direct_frame_reaches_the_server_with_its_pages() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    // 100 bytes at offset 4050 touch two pages.
    let frame = gpa_frame(1, 100, 4050, &[0x1234, 0x5678], b"payload!");
    assert_eq!(bus.inject_raw_guest_packet(s.ch, &frame), Ok(()));
    bus.run_until_idle();
    let held = s.ctx.take_held();
    assert_eq!(held.len(), 1);
    assert_eq!(s.ctx.payloads.lock().unwrap()[0], b"payload!");
    // The sim's handles are plain values, never dereferenced: no provenance needed.
    let pkt: VMBPACKETCOMPLETION = std::ptr::without_provenance_mut(held[0]);
    let mut mdl: PMDL = std::ptr::null_mut();
    // SAFETY: the held packet, answered once below; `mdl` is a live local.
    unsafe {
        assert_eq!(
            VmbChannelPacketGetExternalData(pkt, 0, &mut mdl),
            STATUS_SUCCESS
        );
        assert_eq!(vmbus_kmcl_sim::mdl_pfns(mdl), Some(vec![0x1234, 0x5678]));
        VmbChannelPacketComplete(pkt, std::ptr::null_mut(), 0);
    }
    bus.run_until_idle();
    let done = bus.take_raw_guest_completions();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].transaction_id, done[0].status),
        (77, STATUS_SUCCESS)
    );
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn hostile_gpa_direct_descriptors_are_refused_before_the_server_sees_them() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let cases = [
        // Two ranges: KMCL hands the driver one MDL.
        (
            gpa_frame(2, 8, 0, &[1], b"p"),
            RawPacketError::UnsupportedType,
        ),
        // No bytes.
        (gpa_frame(1, 0, 0, &[1], b"p"), RawPacketError::Malformed),
        // The offset is not inside the first page.
        (
            gpa_frame(1, 8, 4096, &[1, 2], b"p"),
            RawPacketError::Malformed,
        ),
        // The range touches two pages but lists one.
        (
            gpa_frame(1, 100, 4050, &[1], b"p"),
            RawPacketError::Malformed,
        ),
        // More bytes than the server's limit (one page: it declared no maximum).
        (
            gpa_frame(1, 4097, 0, &[1, 2], b"p"),
            RawPacketError::Oversized,
        ),
        // A byte count whose end overflows.
        (
            gpa_frame(1, u32::MAX, 4095, &[1], b"p"),
            RawPacketError::Malformed,
        ),
    ];
    for (frame, error) in &cases {
        assert_eq!(
            bus.inject_raw_guest_packet(s.ch, frame),
            Err(*error),
            "{frame:?}"
        );
    }
    // Cut off inside the range header.
    let short = &gpa_frame(1, 8, 0, &[1], b"")[..24];
    let mut short = short.to_vec();
    short[2..4].copy_from_slice(&2u16.to_le_bytes());
    short[4..6].copy_from_slice(&3u16.to_le_bytes());
    assert_eq!(
        bus.inject_raw_guest_packet(s.ch, &short),
        Err(RawPacketError::Malformed)
    );
    assert_eq!(bus.rejected_raw_guest_packets(), cases.len() + 1);
    bus.run_until_idle();
    assert!(s.ctx.payloads.lock().unwrap().is_empty());
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}
