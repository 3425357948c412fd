//! The sim's raw guest-frame parser: arbitrary frames put into the guest-to-host ring of a
//! raw server channel with `Bus::inject_raw_guest_packet`, between deliveries, pauses and a
//! full ring. Checked: the bus records no violation and leaks nothing; every accepted frame
//! reaches the server exactly once, in order, with exactly the payload its descriptor names;
//! completions come back only for frames that asked for one; the refusal count adds up.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use arbitrary::Unstructured;
use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::*;

/// Payloads the server received, oldest first (one input at a time per process).
static RECEIVED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

unsafe extern "C" fn server_packet(
    _: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: u32,
    _: u32,
) {
    let bytes = if length == 0 {
        Vec::new()
    } else {
        // SAFETY: KMCL passes `length` readable bytes at `buffer`.
        unsafe { std::slice::from_raw_parts(buffer.cast::<u8>(), length as usize) }.to_vec()
    };
    RECEIVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(bytes);
    let reply = [0xA5u8; 8];
    // SAFETY: the delivered packet, answered once; `reply` is readable.
    unsafe { VmbChannelPacketComplete(packet, reply.as_ptr().cast_mut().cast(), 8) };
}

unsafe extern "C" fn client_packet(
    _: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    _: PVOID,
    _: u32,
    _: u32,
) {
    // SAFETY: the delivered packet, answered once.
    unsafe { VmbChannelPacketComplete(packet, std::ptr::null_mut(), 0) };
}

const TYPE: GUID = GUID {
    Data1: 0x4a3f,
    Data2: 7,
    Data3: 7,
    Data4: [7; 8],
};

/// The payload a descriptor names (`None` when the descriptor itself is invalid: a frame the
/// parser must refuse). For type 9 the page range before the payload is checked by the sim.
fn named_payload(frame: &[u8]) -> Option<(Vec<u8>, bool, u64)> {
    let h = frame.get(..16)?;
    let ty = u16::from_le_bytes([h[0], h[1]]);
    let offset = usize::from(u16::from_le_bytes([h[2], h[3]])) * 8;
    let total = usize::from(u16::from_le_bytes([h[4], h[5]])) * 8;
    let flags = u16::from_le_bytes([h[6], h[7]]);
    let txid = u64::from_le_bytes(h[8..16].try_into().ok()?);
    if (ty != 6 && ty != 9)
        || flags & !1 != 0
        || offset < 16
        || total < offset
        || total > frame.len()
    {
        return None;
    }
    Some((frame[offset..total].to_vec(), flags & 1 != 0, txid))
}

fn frame(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    if u.arbitrary::<bool>()? {
        // Arbitrary bytes.
        let n = u.int_in_range(0..=600)?;
        return Ok(u.bytes(n)?.to_vec());
    }
    // A descriptor with fields near the valid ones.
    let payload_len: usize = u.int_in_range(0..=300)?;
    let payload = u.bytes(payload_len.min(u.len()))?.to_vec();
    let offset8: u16 = if u.ratio(7, 8)? { 2 } else { u.arbitrary()? };
    let total8 = ((16 + payload.len()).div_ceil(8)) as u16;
    let total8 = if u.ratio(7, 8)? {
        total8
    } else {
        total8.wrapping_add(u.arbitrary::<i8>()? as u16)
    };
    let ty: u16 = if u.ratio(15, 16)? {
        6
    } else if u.arbitrary()? {
        9
    } else {
        u.arbitrary()?
    };
    let flags: u16 = if u.ratio(15, 16)? {
        u16::from(u.arbitrary::<bool>()?)
    } else {
        u.arbitrary()?
    };
    let txid: u64 = u.arbitrary()?;
    let mut f = Vec::with_capacity(total8 as usize * 8);
    f.extend_from_slice(&ty.to_le_bytes());
    f.extend_from_slice(&offset8.to_le_bytes());
    f.extend_from_slice(&total8.to_le_bytes());
    f.extend_from_slice(&flags.to_le_bytes());
    f.extend_from_slice(&txid.to_le_bytes());
    f.extend_from_slice(&payload);
    let pad = u.int_in_range(0..=16)?;
    f.resize(f.len().max(usize::from(total8) * 8) + pad, 0);
    Ok(f)
}

/// One input.
pub fn run(data: &[u8]) {
    RECEIVED.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let mut u = Unstructured::new(data);
    let bus = Bus::new();
    let mut server = std::ptr::null_mut();
    let mut client = std::ptr::null_mut();
    let inst = GUID {
        Data1: 1,
        ..GUID::default()
    };
    // SAFETY: plain KMCL calls on fresh channels of a live bus, outside callbacks.
    unsafe {
        assert_eq!(VmbChannelAllocate(bus.root_device(), 1, &mut server), 0);
        assert_eq!(
            VmbServerChannelInitSetTargetInterfaceId(server, TYPE, inst),
            0
        );
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(server, Some(server_packet), None),
            0
        );
        assert_eq!(VmbChannelInitSetMaximumPacketSize(server, 256), 0);
        assert_eq!(VmbChannelEnable(server), 0);
        VmbChannelStart(server);
        assert_eq!(VmbChannelAllocate(bus.guest_device(), 0, &mut client), 0);
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(client, &TYPE, std::ptr::null(), None),
            0
        );
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(client, Some(client_packet), None),
            0
        );
        assert_eq!(VmbClientChannelInitSetRingBufferPageCount(client, 2, 2), 0);
        assert_eq!(VmbChannelEnable(client), 0);
    }
    bus.run_until_idle();
    let mut expected: VecDeque<Vec<u8>> = VecDeque::new();
    let mut wanting: HashSet<u64> = HashSet::new();
    let mut refused = 0usize;
    let mut paused = false;
    for _ in 0..64 {
        let Ok(op) = u.arbitrary::<u8>() else { break };
        match op % 8 {
            0..=4 => {
                let Ok(f) = frame(&mut u) else { break };
                let named = named_payload(&f);
                match bus.inject_raw_guest_packet(server, &f) {
                    Ok(()) => {
                        let (payload, wants, txid) =
                            named.expect("the parser accepted a frame with an invalid descriptor");
                        assert!(
                            payload.len() <= 256,
                            "accepted {} bytes over the maximum",
                            payload.len()
                        );
                        if wants {
                            wanting.insert(txid);
                        }
                        expected.push_back(payload);
                    }
                    Err(_) => refused += 1,
                }
            }
            5 => {
                let n = u.arbitrary::<u8>().unwrap_or(0);
                bus.run_at_most(usize::from(n));
            }
            6 => {
                // SAFETY: the live server channel, outside callbacks.
                unsafe {
                    if paused {
                        VmbChannelStart(server)
                    } else {
                        VmbChannelPause(server)
                    }
                };
                paused = !paused;
            }
            _ => {
                let full = u.arbitrary::<bool>().unwrap_or(false);
                assert!(bus.set_ring_full(client, full));
            }
        }
        for c in bus.take_raw_guest_completions() {
            assert!(
                wanting.contains(&c.transaction_id),
                "unasked completion {c:?}"
            );
            assert_eq!(c.data, [0xA5; 8]);
        }
        let v = bus.take_violations();
        assert!(v.is_empty(), "violations: {v:#?}");
    }
    assert!(bus.set_ring_full(client, false));
    // SAFETY: the live server channel, outside callbacks.
    unsafe { VmbChannelStart(server) };
    bus.run_until_idle();
    let received = std::mem::take(&mut *RECEIVED.lock().unwrap_or_else(|e| e.into_inner()));
    assert_eq!(
        received,
        Vec::from(expected),
        "the server did not get exactly the accepted frames"
    );
    assert_eq!(bus.rejected_raw_guest_packets(), refused);
    let _ = bus.take_raw_guest_completions();
    // SAFETY: live channels, disabled before cleanup, once each.
    unsafe {
        VmbChannelDisable(client);
        VmbChannelCleanup(client);
        VmbChannelDisable(server);
        VmbChannelCleanup(server);
    }
    bus.assert_no_leaks();
}
