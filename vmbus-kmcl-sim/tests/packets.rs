//! Packets, completions, rings, quota, deferral, failure, external data and synchronous
//! requests, as KMCL documents them.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests drive sequences of raw KMCL calls whose preconditions are the same: live \
              channels and buffers owned by the test, stated once per block"
)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use common::*;
use vmbus_kmcl_sim::status::*;
use vmbus_kmcl_sim::{nt, Bus, SimMdl};
use vmbus_kmcl_sys::nt::{DISPATCH_LEVEL, PASSIVE_LEVEL};
use vmbus_kmcl_sys::*;

#[test]
fn completion_routine_gets_the_peer_completion_buffer() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let (p, st) = send(&c, b"abc", WAIT);
    assert_eq!(st, STATUS_SUCCESS);
    bus.run_until_idle();
    assert_eq!(*s.ctx.payloads.lock().unwrap(), [b"abc".to_vec()]);
    assert_eq!(
        *c.ctx.completions.lock().unwrap(),
        [(STATUS_SUCCESS, b"cba".to_vec())]
    );
    // Packet callbacks and completion routines run at DISPATCH_LEVEL by default.
    assert_eq!(*s.ctx.packet_irqls.lock().unwrap(), [DISPATCH_LEVEL]);
    assert_eq!(*c.ctx.completion_irqls.lock().unwrap(), [DISPATCH_LEVEL]);
    assert_eq!(nt::current_irql(), PASSIVE_LEVEL);
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn without_wait_flag_completion_comes_when_the_packet_is_in_the_ring() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (p, _) = send(&c, b"nw", 0);
    assert!(bus.pump_one());
    // Completed (no data) although the server has not seen it yet.
    assert_eq!(
        *c.ctx.completions.lock().unwrap(),
        [(STATUS_SUCCESS, vec![])]
    );
    assert!(s.ctx.payloads.lock().unwrap().is_empty());
    bus.run_until_idle();
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), 1);
    // Completing a packet whose sender did not ask for a completion sends nothing back.
    complete_held(&s);
    bus.run_until_idle();
    assert_eq!(c.ctx.completions.lock().unwrap().len(), 1);
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn default_completion_routine_frees_the_packet() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel and buffer.
    let p = unsafe { VmbPacketAllocate(c.ch) };
    let data = [1u8; 8];
    // SAFETY: as above.
    let st = unsafe { VmbPacketSend(p, data.as_ptr() as PVOID, 8, std::ptr::null_mut(), WAIT) };
    assert_eq!(st, 0);
    assert_eq!(bus.leak_report().packets, 1);
    bus.run_until_idle();
    assert_eq!(bus.leak_report().packets, 0);
    // The handle is dead now: freeing it is a double free.
    // SAFETY: deliberate misuse, detected by generation.
    unsafe { VmbPacketFree(p) };
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("stale VMBPACKET"), "{v:?}");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn double_free_double_completion_and_free_in_flight_are_reported() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (p, _) = send(&c, b"x", WAIT);
    bus.run_until_idle();
    // SAFETY: deliberate misuse: the packet is still in flight.
    unsafe { VmbPacketFree(p) };
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("still in flight"), "{v:?}");
    let held = s.ctx.take_held();
    // SAFETY: first completion is legal, the second a deliberate misuse.
    unsafe {
        VmbChannelPacketComplete(
            std::ptr::without_provenance_mut(held[0]),
            std::ptr::null_mut(),
            0,
        );
        VmbChannelPacketComplete(
            std::ptr::without_provenance_mut(held[0]),
            std::ptr::null_mut(),
            0,
        );
    }
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("double completion"), "{v:?}");
    bus.run_until_idle();
    // SAFETY: first free legal, second a deliberate double free.
    unsafe {
        VmbPacketFree(p);
        VmbPacketFree(p);
    }
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("double free"), "{v:?}");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn packet_pointer_and_channel() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live objects; the pointer is only stored.
    unsafe {
        let p = VmbPacketAllocate(c.ch);
        assert!(VmbPacketGetPointer(p).is_null());
        VmbPacketSetPointer(p, std::ptr::without_provenance_mut(0x1234));
        assert_eq!(VmbPacketGetPointer(p) as usize, 0x1234);
        assert_eq!(VmbPacketGetChannel(p), c.ch);
        VmbPacketFree(p);
        VmbChannelSetPointer(c.ch, std::ptr::without_provenance_mut(0x99));
        assert_eq!(VmbChannelGetPointer(c.ch) as usize, 0x99);
        VmbChannelSetPointer(c.ch, Arc::as_ptr(&c.ctx) as PVOID);
    }
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// Client with 64-byte packets and one-page rings: each 8-byte packet takes 32 ring bytes.
fn small_ring_pair(bus: &Bus, in_pages: u32, out_pages: u32) -> (Ep, Ep) {
    let s = server(bus);
    let c = client(bus);
    // SAFETY: live channels in the init phase.
    unsafe {
        assert_eq!(VmbChannelInitSetMaximumPacketSize(c.ch, 64), 0);
        assert_eq!(VmbChannelInitSetMaximumPacketSize(s.ch, 64), 0);
        assert_eq!(
            VmbClientChannelInitSetRingBufferPageCount(c.ch, in_pages, out_pages),
            0
        );
    }
    open(bus, &s, &c);
    (s, c)
}

#[test]
fn ring_capacity_comes_from_the_page_counts() {
    let bus = Bus::new();
    let (s, c) = small_ring_pair(&bus, 3, 2);
    assert_eq!(
        bus.channel_info(c.ch).unwrap().outgoing_ring_capacity,
        2 * 4096
    );
    assert_eq!(
        bus.channel_info(s.ch).unwrap().outgoing_ring_capacity,
        3 * 4096
    );
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn full_ring_queues_and_drains_in_order() {
    let bus = Bus::new();
    let (s, c) = small_ring_pair(&bus, 1, 1);
    let n = if cfg!(miri) { 200 } else { 1000 };
    for i in 0..n {
        let data = (i as u64).to_le_bytes();
        assert_eq!(send_default(&c, &data, WAIT), 0);
    }
    let info = bus.channel_info(c.ch).unwrap();
    // 4096 bytes / 32 bytes per frame.
    assert_eq!(info.outgoing_in_ring, 128);
    assert_eq!(info.outgoing_waiting, n - 128);
    assert!(info.outgoing_ring_used <= info.outgoing_ring_capacity);
    bus.run_until_idle();
    let got: Vec<u64> = s
        .ctx
        .payloads
        .lock()
        .unwrap()
        .iter()
        .map(|p| u64::from_le_bytes(p[..8].try_into().unwrap()))
        .collect();
    assert_eq!(got, (0..n as u64).collect::<Vec<_>>());
    assert_eq!(bus.channel_info(c.ch).unwrap().outgoing_waiting, 0);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn injected_ring_full_holds_everything_until_cleared() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    assert!(bus.set_ring_full(c.ch, true));
    for _ in 0..3 {
        assert_eq!(send_default(&c, b"q", WAIT), 0);
    }
    bus.run_until_idle();
    assert!(s.ctx.payloads.lock().unwrap().is_empty());
    assert_eq!(bus.channel_info(c.ch).unwrap().outgoing_waiting, 3);
    assert!(bus.set_ring_full(c.ch, false));
    bus.run_until_idle();
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), 3);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn packets_sent_before_open_are_held_then_delivered() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    // SAFETY: live channel.
    assert_eq!(unsafe { VmbChannelEnable(c.ch) }, 0);
    assert_eq!(send_default(&c, b"early", WAIT), 0);
    bus.run_until_idle();
    assert_eq!(bus.channel_info(c.ch).unwrap().outgoing_waiting, 1);
    // SAFETY: live channel.
    unsafe {
        assert_eq!(VmbChannelEnable(s.ch), 0);
        VmbChannelStart(s.ch);
    }
    bus.run_until_idle();
    assert_eq!(*s.ctx.payloads.lock().unwrap(), [b"early".to_vec()]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn transaction_quota_limits_outstanding_packets() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    // SAFETY: live channel.
    unsafe { VmbChannelSetTransactionQuota(s.ch, 2) };
    for _ in 0..5 {
        assert_eq!(send_default(&c, b"t", WAIT), 0);
    }
    bus.run_until_idle();
    assert_eq!(s.ctx.held.lock().unwrap().len(), 2);
    // Lowering the quota below the outstanding count just stalls; a completion restarts.
    // SAFETY: live channel.
    unsafe { VmbChannelSetTransactionQuota(s.ch, 1) };
    let held = s.ctx.take_held();
    // SAFETY: completing held packets once each.
    unsafe {
        VmbChannelPacketComplete(
            std::ptr::without_provenance_mut(held[0]),
            std::ptr::null_mut(),
            0,
        )
    };
    bus.run_until_idle();
    assert_eq!(
        s.ctx.held.lock().unwrap().len(),
        0,
        "one still outstanding with quota 1"
    );
    // SAFETY: as above.
    unsafe {
        VmbChannelPacketComplete(
            std::ptr::without_provenance_mut(held[1]),
            std::ptr::null_mut(),
            0,
        )
    };
    bus.run_until_idle();
    assert_eq!(s.ctx.held.lock().unwrap().len(), 1);
    s.ctx.mode.store(COMPLETE_INLINE, Ordering::SeqCst);
    complete_held(&s);
    bus.run_until_idle();
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), 5);
    // SAFETY: a zero quota is a misuse.
    unsafe { VmbChannelSetTransactionQuota(s.ch, 0) };
    assert_eq!(bus.take_violations().len(), 1);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn defer_to_passive_redelivers_at_passive_level() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(DEFER_ONCE, Ordering::SeqCst);
    let (p, _) = send(&c, b"dp", WAIT);
    bus.run_until_idle();
    assert_eq!(
        *s.ctx.packet_irqls.lock().unwrap(),
        [DISPATCH_LEVEL, PASSIVE_LEVEL]
    );
    assert_eq!(c.ctx.completions.lock().unwrap().len(), 1);
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn defer_outside_the_delivery_is_a_violation() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    assert_eq!(send_default(&c, b"x", WAIT), 0);
    bus.run_until_idle();
    let held = s.ctx.take_held();
    // SAFETY: deliberate misuse after the callback returned.
    unsafe { VmbChannelPacketDeferToPassive(std::ptr::without_provenance_mut(held[0])) };
    assert_eq!(bus.take_violations().len(), 1);
    // SAFETY: completing once.
    unsafe {
        VmbChannelPacketComplete(
            std::ptr::without_provenance_mut(held[0]),
            std::ptr::null_mut(),
            0,
        )
    };
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn incoming_processing_at_passive() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    unsafe { VmbChannelSetIncomingProcessingAtPassive(s.ch, 1) };
    assert_eq!(send_default(&c, b"p", WAIT), 0);
    bus.run_until_idle();
    assert_eq!(*s.ctx.packet_irqls.lock().unwrap(), [PASSIVE_LEVEL]);
    assert!(bus.channel_info(s.ch).unwrap().incoming_at_passive);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn processing_complete_reports_batches() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    for _ in 0..3 {
        assert_eq!(send_default(&c, b"b", 0), 0);
    }
    bus.run_until_idle();
    assert_eq!(*s.ctx.batches.lock().unwrap(), [3]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn packet_fail_stops_the_incoming_queue() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(FAIL, Ordering::SeqCst);
    let (p, _) = send(&c, b"bad", WAIT);
    assert_eq!(send_default(&c, b"next", WAIT), 0);
    bus.run_until_idle();
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), 1);
    assert!(bus.channel_info(s.ch).unwrap().incoming_queue_failed);
    assert_eq!(
        *c.ctx.completions.lock().unwrap(),
        [(STATUS_UNSUCCESSFUL, vec![])]
    );
    // Restarting the flow turns the queue back on.
    s.ctx.mode.store(COMPLETE_INLINE, Ordering::SeqCst);
    // SAFETY: live channel.
    unsafe {
        VmbChannelPause(s.ch);
        VmbChannelStart(s.ch);
    }
    bus.run_until_idle();
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), 2);
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn send_rules_oversize_flags_and_state() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let big = vec![0u8; 4097];
    let (p, st) = send(&c, &big, WAIT);
    assert_eq!(st, STATUS_INVALID_PARAMETER_3);
    // SAFETY: live packet; unknown flag bits.
    let st = unsafe { VmbPacketSend(p, big.as_ptr() as PVOID, 1, std::ptr::null_mut(), 0x80) };
    assert_eq!(st, STATUS_INVALID_PARAMETER);
    // SAFETY: NULL buffer with a length.
    let st = unsafe { VmbPacketSend(p, std::ptr::null_mut(), 1, std::ptr::null_mut(), 0) };
    assert_eq!(st, STATUS_INVALID_PARAMETER_2);
    let bogus: PMDL = std::ptr::without_provenance_mut(0x10);
    // SAFETY: a pointer that is not a sim MDL is rejected, not dereferenced.
    let st = unsafe { VmbPacketSend(p, big.as_ptr() as PVOID, 1, bogus, WAIT) };
    assert_eq!(st, STATUS_INVALID_PARAMETER_4);
    // Sending a packet twice while in flight.
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    // SAFETY: live packet.
    unsafe {
        assert_eq!(
            VmbPacketSend(p, big.as_ptr() as PVOID, 1, std::ptr::null_mut(), WAIT),
            0
        );
        let st = VmbPacketSend(p, big.as_ptr() as PVOID, 1, std::ptr::null_mut(), WAIT);
        assert_eq!(st, STATUS_INVALID_DEVICE_STATE);
    }
    assert_eq!(bus.take_violations().len(), 1);
    bus.run_until_idle();
    complete_held(&s);
    bus.run_until_idle();
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn sending_after_suspend_is_a_violation() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    unsafe { VmbChannelPause(c.ch) };
    assert_eq!(send_default(&c, b"late", WAIT), 0);
    let v = bus.take_violations();
    assert!(
        v.len() == 1 && v[0].contains("after EvtChannelSuspend"),
        "{v:?}"
    );
    // SAFETY: live channel.
    unsafe { VmbChannelStart(c.ch) };
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

static SEEN_PACKET: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe extern "C" fn record_packet_pointer(pkt: VMBPACKET, _s: NTSTATUS, _b: PVOID, _l: u32) {
    // The driver may treat the packet as its own memory (e.g. find its context around it).
    // SAFETY: `pkt` is the test's `Vec<u64>` buffer, alive and not otherwise accessed now.
    let first = unsafe { (pkt as *const u64).read() };
    std::hint::black_box(first);
    SEEN_PACKET.store(pkt as usize, Ordering::SeqCst);
}

#[test]
fn packet_initialize_size_rules_and_routine_requirement() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    let need = unsafe { VmbChannelSizeofPacket(c.ch) };
    assert!(
        need > 4096 + 8,
        "must exceed max packet size + sizeof(PVOID)"
    );
    let mut mem = vec![0u64; need as usize / 8 + 1];
    let pkt = mem.as_mut_ptr() as VMBPACKET;
    // SAFETY: `mem` is reserved for the packet while it is in use.
    unsafe {
        assert_eq!(
            VmbPacketInitialize(c.ch, pkt, need - 8),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(
            VmbPacketInitialize(c.ch, pkt, 4096 + 8),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(VmbPacketInitialize(c.ch, pkt, need), STATUS_SUCCESS);
        // No completion routine yet.
        let st = VmbPacketSend(pkt, mem.as_ptr() as PVOID, 4, std::ptr::null_mut(), WAIT);
        assert_eq!(st, STATUS_INVALID_DEVICE_STATE);
        assert_eq!(bus.take_violations().len(), 1);
        VmbPacketSetPointer(pkt, Arc::as_ptr(&c.ctx) as PVOID);
        VmbPacketSetCompletionRoutine(pkt, Some(record_completion));
        let data = *b"init";
        let st = VmbPacketSend(pkt, data.as_ptr() as PVOID, 4, std::ptr::null_mut(), WAIT);
        assert_eq!(st, STATUS_SUCCESS);
        assert_eq!(VmbPacketGetChannel(pkt), c.ch);
    }
    bus.run_until_idle();
    assert_eq!(
        *c.ctx.completions.lock().unwrap(),
        [(STATUS_SUCCESS, b"tini".to_vec())]
    );
    // The completion routine got the caller's own packet memory back, usable as such.
    // SAFETY: live packet memory; the routine only records the pointer.
    unsafe {
        VmbPacketSetCompletionRoutine(pkt, Some(record_packet_pointer));
        let data = *b"again";
        let st = VmbPacketSend(pkt, data.as_ptr() as PVOID, 5, std::ptr::null_mut(), WAIT);
        assert_eq!(st, STATUS_SUCCESS);
    }
    bus.run_until_idle();
    assert_eq!(
        SEEN_PACKET.load(Ordering::SeqCst),
        mem.as_ptr() as usize,
        "completion routine must receive the VMBPACKET the driver sent"
    );
    // SAFETY: caller memory packets are not freed with VmbPacketFree.
    unsafe { VmbPacketFree(pkt) };
    assert_eq!(bus.take_violations().len(), 1);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
    drop(mem);
}

#[test]
fn allocation_failure_injection() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    bus.fail_next_packet_allocations(2);
    // SAFETY: live channel.
    unsafe {
        assert!(VmbPacketAllocate(c.ch).is_null());
        assert!(VmbPacketAllocate(c.ch).is_null());
        let p = VmbPacketAllocate(c.ch);
        assert!(!p.is_null());
        VmbPacketFree(p);
    }
    bus.fail_next_channel_allocations(1);
    let mut ch = std::ptr::null_mut();
    // SAFETY: writable output.
    unsafe {
        assert_eq!(
            VmbChannelAllocate(bus.guest_device(), 0, &mut ch),
            STATUS_INSUFFICIENT_RESOURCES
        );
    }
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

// ----- External data -----

fn send_external(from: &Ep, mdl: &SimMdl, flags: u32) -> VMBPACKET {
    // SAFETY: live channel; the MDL outlives the transaction.
    unsafe {
        let p = VmbPacketAllocate(from.ch);
        VmbPacketSetPointer(p, Arc::as_ptr(&from.ctx) as PVOID);
        VmbPacketSetCompletionRoutine(p, Some(record_completion));
        let hdr = *b"ext";
        assert_eq!(
            VmbPacketSend(p, hdr.as_ptr() as PVOID, 3, mdl.as_pmdl(), flags),
            0
        );
        p
    }
}

#[test]
fn external_data_mdl_aliases_the_sender_buffer() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(EXTERNAL, Ordering::SeqCst);
    let mdl = SimMdl::from_bytes(b"payload!");
    let p = send_external(&c, &mdl, WAIT);
    bus.run_until_idle();
    let ext = s.ctx.external.lock().unwrap().clone();
    assert_eq!(ext, [(STATUS_SUCCESS, b"payload!".to_vec(), Some(false))]);
    // The server wrote through its mapping into the guest's memory.
    assert_eq!(mdl.to_vec(), b"Wayload!");
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn external_data_read_only_mapping_refuses_writes() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(EXTERNAL, Ordering::SeqCst);
    s.ctx.ext_flags.store(
        VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
        Ordering::SeqCst,
    );
    let mdl = SimMdl::from_bytes(b"ro-data");
    let p = send_external(&c, &mdl, WAIT);
    bus.run_until_idle();
    let ext = s.ctx.external.lock().unwrap().clone();
    assert_eq!(ext, [(STATUS_SUCCESS, b"ro-data".to_vec(), Some(true))]);
    assert_eq!(mdl.to_vec(), b"ro-data");
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn external_data_pending_then_redelivered() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(EXTERNAL, Ordering::SeqCst);
    bus.pend_next_external_data(1);
    let mdl = SimMdl::from_bytes(b"later");
    let p = send_external(&c, &mdl, WAIT);
    bus.run_until_idle();
    let ext = s.ctx.external.lock().unwrap().clone();
    assert_eq!(ext.len(), 2);
    assert_eq!(ext[0].0, STATUS_PENDING);
    assert_eq!(ext[1], (STATUS_SUCCESS, b"later".to_vec(), Some(false)));
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), 2, "delivered again");
    assert_eq!(c.ctx.completions.lock().unwrap().len(), 1);
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn external_mdl_window_pfns_and_wait_requirement() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(EXTERNAL, Ordering::SeqCst);
    s.ctx.ext_flags.store(
        VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
        Ordering::SeqCst,
    );
    let mdl = SimMdl::from_bytes(b"0123456789");
    // SAFETY: live objects; the MDL outlives the transactions.
    unsafe {
        let p = VmbPacketAllocate(c.ch);
        let st = VmbPacketSendWithExternalMdl(p, std::ptr::null_mut(), 0, mdl.as_pmdl(), 2, 3, 0);
        assert_eq!(
            st, STATUS_INVALID_PARAMETER,
            "WAIT_FOR_COMPLETION is required"
        );
        let st =
            VmbPacketSendWithExternalMdl(p, std::ptr::null_mut(), 0, mdl.as_pmdl(), 2, 3, WAIT);
        assert_eq!(st, STATUS_SUCCESS);
        bus.run_until_idle();
        let pfns = [7u64, 9];
        let p2 = VmbPacketAllocate(c.ch);
        let st = VmbPacketSendWithExternalPfns(
            p2,
            std::ptr::null_mut(),
            0,
            pfns.as_ptr() as PPFN_NUMBER,
            2,
            0,
        );
        assert_eq!(st, STATUS_INVALID_PARAMETER);
        let st = VmbPacketSendWithExternalPfns(
            p2,
            std::ptr::null_mut(),
            0,
            pfns.as_ptr() as PPFN_NUMBER,
            2,
            WAIT,
        );
        assert_eq!(st, STATUS_SUCCESS);
        bus.run_until_idle();
    }
    let ext = s.ctx.external.lock().unwrap().clone();
    assert_eq!(ext[0].1, b"234");
    // A PFN MDL has no host bytes.
    assert_eq!(ext[1].1, Vec::<u8>::new());
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

// ----- Synchronous requests -----

fn sync(
    ch: VMBCHANNEL,
    data: &[u8],
    flags: u32,
    cap: u32,
    timeout: Option<i64>,
) -> (NTSTATUS, Vec<u8>) {
    let mut out = vec![0u8; cap as usize];
    let mut size = cap;
    let mut t = LARGE_INTEGER {
        QuadPart: timeout.unwrap_or(0),
    };
    // SAFETY: live buffers of the stated sizes.
    let st = unsafe {
        VmbChannelSendSynchronousRequest(
            ch,
            data.as_ptr() as PVOID,
            data.len() as u32,
            std::ptr::null_mut(),
            flags,
            out.as_mut_ptr() as PVOID,
            &mut size,
            if timeout.is_some() {
                &mut t
            } else {
                std::ptr::null_mut()
            },
        )
    };
    out.truncate(size as usize);
    (st, out)
}

#[test]
fn sync_request_returns_the_reply() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let (st, reply) = sync(c.ch, b"12345", WAIT, 16, None);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(reply, b"54321");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn sync_request_completion_size_must_be_a_multiple_of_8() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    assert_eq!(sync(c.ch, b"x", WAIT, 12, None).0, STATUS_INVALID_PARAMETER);
    assert_eq!(s.ctx.payloads.lock().unwrap().len(), 0, "nothing was sent");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn sync_request_zero_timeout_does_not_queue_when_full() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    bus.set_ring_full(c.ch, true);
    assert_eq!(sync(c.ch, b"x", 0, 0, Some(0)).0, STATUS_BUFFER_OVERFLOW);
    assert_eq!(
        bus.channel_info(c.ch).unwrap().outgoing_waiting,
        0,
        "not queued"
    );
    bus.set_ring_full(c.ch, false);
    assert_eq!(sync(c.ch, b"x", 0, 0, Some(0)).0, STATUS_SUCCESS);
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn sync_request_times_out_with_cancelled() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    // 20 ms, relative.
    let (st, _) = sync(c.ch, b"slow", WAIT, 8, Some(-200_000));
    assert_eq!(st, STATUS_CANCELLED);
    // The late completion is dropped quietly.
    complete_held(&s);
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn sync_request_on_a_shut_down_channel_is_device_removed() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    unsafe { VmbChannelDisable(c.ch) };
    assert_eq!(sync(c.ch, b"x", WAIT, 8, None).0, STATUS_DEVICE_REMOVED);
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn sync_request_waiting_when_the_peer_crashes_is_device_removed() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    let ch = c.ch as usize;
    let bus = Arc::new(bus);
    let b2 = Arc::clone(&bus);
    let t = std::thread::spawn(move || {
        wait_for("the request to be in flight", || {
            b2.channel_info(std::ptr::without_provenance_mut(ch))
                .unwrap()
                .outgoing_in_ring
                > 0
                || b2.packets_delivered() > 0
        });
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert!(b2.crash_peer_of(std::ptr::without_provenance_mut(ch)));
    });
    let (st, _) = sync(c.ch, b"x", WAIT, 8, None);
    t.join().unwrap();
    assert_eq!(st, STATUS_DEVICE_REMOVED);
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn root_may_only_use_zero_timeout_without_wait() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    assert_eq!(sync(s.ch, b"x", WAIT, 8, Some(0)).0, STATUS_NOT_SUPPORTED);
    assert_eq!(sync(s.ch, b"x", 0, 0, None).0, STATUS_NOT_SUPPORTED);
    assert_eq!(sync(s.ch, b"x", 0, 0, Some(-10)).0, STATUS_NOT_SUPPORTED);
    assert_eq!(sync(s.ch, b"x", 0, 0, Some(0)).0, STATUS_SUCCESS);
    bus.run_until_idle();
    assert_eq!(c.ctx.payloads.lock().unwrap().len(), 1);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn waiting_sync_request_above_passive_is_a_violation() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let old = nt::set_current_irql(DISPATCH_LEVEL);
    let st = sync(c.ch, b"x", WAIT, 8, None).0;
    nt::set_current_irql(old);
    assert_eq!(st, STATUS_INVALID_DEVICE_STATE);
    assert_eq!(bus.take_violations().len(), 1);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

static NEGOTIATED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

unsafe extern "C" fn negotiate_in_post_started(ch: VMBCHANNEL) {
    let (st, reply) = sync(ch, b"v1.0", WAIT, 8, None);
    assert_eq!(st, STATUS_SUCCESS);
    NEGOTIATED.lock().unwrap().push(reply);
}

#[test]
fn sync_request_from_post_started_negotiates() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
    cbs.EvtChannelPostStarted = Some(negotiate_in_post_started);
    // SAFETY: live channel and table.
    unsafe { assert_eq!(VmbChannelInitSetStateChangeCallbacks(c.ch, &mut cbs), 0) };
    open(&bus, &s, &c);
    assert_eq!(*NEGOTIATED.lock().unwrap(), [b"0.1v".to_vec()]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn in_flight_packets_are_cancelled_when_the_channel_closes() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (p, _) = send(&c, b"x", WAIT);
    bus.run_until_idle();
    // The server rescinds while holding the packet: it must complete it during suspend; here it
    // completes from another thread while disable waits.
    let held = s.ctx.take_held();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        // SAFETY: completing once.
        unsafe {
            VmbChannelPacketComplete(
                std::ptr::without_provenance_mut(held[0]),
                std::ptr::null_mut(),
                0,
            )
        };
    });
    // SAFETY: live channel.
    unsafe { VmbChannelDisable(s.ch) };
    t.join().unwrap();
    bus.run_until_idle();
    assert_eq!(
        *c.ctx.completions.lock().unwrap(),
        [(STATUS_CANCELLED, vec![])]
    );
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// The orphan list is process-wide: the tests of this binary that take it run one at a time.
static ORPHANS: Mutex<()> = Mutex::new(());

/// Runs `f` and returns the orphan violations it recorded.
fn orphans_of(f: impl FnOnce()) -> Vec<String> {
    let _one_at_a_time = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    let before = vmbus_kmcl_sim::take_orphan_violations();
    assert!(
        before.is_empty(),
        "orphans left by an earlier test: {before:?}"
    );
    f();
    vmbus_kmcl_sim::take_orphan_violations()
}

/// The void exports that take a `VMBPACKET`.
const PACKET_VOIDS: [&str; 3] = [
    "VmbPacketFree",
    "VmbPacketSetPointer",
    "VmbPacketSetCompletionRoutine",
];

/// The void exports that take a `VMBPACKETCOMPLETION`.
const COMPLETION_VOIDS: [&str; 3] = [
    "VmbChannelPacketComplete",
    "VmbChannelPacketDeferToPassive",
    "VmbChannelPacketFail",
];

fn call_void(name: &str, value: usize) {
    let p: VMBPACKET = std::ptr::without_provenance_mut(value);
    let i: VMBPACKETCOMPLETION = std::ptr::without_provenance_mut(value);
    // SAFETY: these exports only decode the handle (never dereference it); the completion
    // buffer is NULL with length 0. NULL and forged values are what they must reject.
    unsafe {
        match name {
            "VmbPacketFree" => VmbPacketFree(p),
            "VmbPacketSetPointer" => VmbPacketSetPointer(p, std::ptr::null_mut()),
            "VmbPacketSetCompletionRoutine" => VmbPacketSetCompletionRoutine(p, None),
            "VmbChannelPacketComplete" => VmbChannelPacketComplete(i, std::ptr::null_mut(), 0),
            "VmbChannelPacketDeferToPassive" => VmbChannelPacketDeferToPassive(i),
            "VmbChannelPacketFail" => VmbChannelPacketFail(i),
            _ => unreachable!("{name}"),
        }
    }
}

#[test]
fn void_packet_and_completion_exports_record_null_and_forged_handles() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (sent, st) = send(&c, b"held", WAIT);
    assert_eq!(st, STATUS_SUCCESS);
    bus.run_until_idle();
    let held = s.ctx.take_held();
    assert_eq!(held.len(), 1);
    // SAFETY: live channel.
    let idle = unsafe { VmbPacketAllocate(c.ch) };
    assert!(!idle.is_null());
    let garbage = 0x1234_5670_usize;
    let families = [
        (&PACKET_VOIDS[..], idle.addr(), "VMBPACKET"),
        (&COMPLETION_VOIDS[..], held[0], "VMBPACKETCOMPLETION"),
    ];
    for (names, live, kind) in families {
        // A well-formed handle naming a bus id no bus has; the live handle with another
        // generation; a channel of this bus passed as a packet handle.
        let foreign = live | (0xF_FFFF << 36);
        let forged = live ^ 0x8000;
        let wrong_kind = c.ch.addr();
        for &name in names {
            let orphans = orphans_of(|| call_void(name, 0));
            assert_eq!(orphans, [format!("{name}: NULL handle")]);
            for value in [garbage, foreign] {
                let orphans = orphans_of(|| call_void(name, value));
                assert_eq!(
                    orphans,
                    [format!(
                        "{name}: {value:#x} is not a handle of a live sim bus (forged, or its \
                         bus was dropped)"
                    )]
                );
            }
            assert!(bus.take_violations().is_empty());

            // Handles naming this live bus are charged to it, not to the orphan list.
            let orphans = orphans_of(|| call_void(name, forged));
            assert!(orphans.is_empty(), "{orphans:?}");
            let v = bus.take_violations();
            assert!(
                v.len() == 1 && v[0].starts_with(name) && v[0].contains(&format!("stale {kind}")),
                "{name}: {v:?}"
            );
            let orphans = orphans_of(|| call_void(name, wrong_kind));
            assert!(orphans.is_empty(), "{orphans:?}");
            let v = bus.take_violations();
            assert_eq!(
                v,
                [format!(
                    "{name}: {wrong_kind:#x} is not a {kind} (a handle of another kind, or forged)"
                )]
            );
        }
    }
    // The real objects were never touched: complete and free them normally.
    call_void("VmbChannelPacketComplete", held[0]);
    bus.run_until_idle();
    // SAFETY: both packets are live, and `sent` has completed.
    unsafe {
        VmbPacketFree(idle);
        VmbPacketFree(sent);
    }
    assert_eq!(
        *c.ctx.completions.lock().unwrap(),
        [(STATUS_SUCCESS, Vec::new())]
    );
    assert!(bus.take_violations().is_empty());
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}
