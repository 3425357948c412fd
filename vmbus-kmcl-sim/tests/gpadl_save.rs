//! GPADLs (create, delete, map, unmap) and save/restore (begin, continue, end, restore, the
//! per-packet callbacks), as KMCL documents them.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests drive sequences of raw KMCL calls whose preconditions are the same: live \
              channels and buffers owned by the test, stated once per block"
)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use vmbus_kmcl_sim::status::*;
use vmbus_kmcl_sim::{mdl_address, mdl_bytes, mdl_is_read_only, mdl_read, mdl_write, Bus, SimMdl};
use vmbus_kmcl_sys::*;

fn create_from_buffer(c: &Ep, buf: &mut [u8], flags: u32) -> (NTSTATUS, u32) {
    let mut id = 0;
    // SAFETY: `buf` outlives the GPADL in every test.
    let st = unsafe {
        VmbChannelCreateGpadlFromBuffer(
            c.ch,
            flags,
            buf.as_mut_ptr() as PVOID,
            buf.len() as u32,
            &mut id,
        )
    };
    (st, id)
}

fn map(s: &Ep, id: u32, flags: u32) -> (NTSTATUS, PMDL) {
    let mut mdl = std::ptr::null_mut();
    // SAFETY: writable output.
    let st = unsafe { VmbChannelMapGpadl(s.ch, flags, id, &mut mdl) };
    (st, mdl)
}

#[test]
fn gpadl_create_map_write_unmap_delete() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut buf = vec![1u8; 64];
    let (st, id) = create_from_buffer(&c, &mut buf, 0);
    assert_eq!(st, STATUS_SUCCESS);
    let (st, mdl) = map(&s, id, 0);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(mdl_is_read_only(mdl), Some(false));
    // SAFETY: the GPADL buffer is alive and nobody else touches it now.
    let bytes = unsafe { mdl_bytes(mdl) }.unwrap();
    bytes[0] = 0xAB;
    assert_eq!(bus.leak_report().gpadl_mappings, 1);
    // SAFETY: live channels.
    unsafe {
        VmbChannelUnmapGpadl(s.ch, id);
        VmbChannelDeleteGpadl(c.ch, id);
    }
    assert_eq!(buf[0], 0xAB, "the server wrote into the guest buffer");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn gpadl_from_mdl_window() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut first = SimMdl::from_bytes(b"abcd");
    let second = SimMdl::from_bytes(b"efgh");
    first.chain(&second);
    let mut id = 0;
    // SAFETY: the MDLs outlive the GPADL.
    unsafe {
        assert_eq!(
            VmbChannelCreateGpadlFromMdl(c.ch, 0, first.as_pmdl(), 2, 4, &mut id),
            0
        );
        assert_eq!(
            VmbChannelCreateGpadlFromMdl(c.ch, 0, first.as_pmdl(), 6, 4, &mut 0),
            STATUS_INVALID_PARAMETER_3,
            "window past the end of the chain"
        );
    }
    let (st, mdl) = map(&s, id, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY);
    assert_eq!(st, 0);
    // SAFETY: the MDLs are alive.
    assert_eq!(unsafe { mdl_read(mdl) }.unwrap(), b"cdef");
    // SAFETY: live channels.
    unsafe {
        VmbChannelUnmapGpadl(s.ch, id);
        VmbChannelDeleteGpadl(c.ch, id);
    }
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn a_read_only_mapping_serves_its_bytes_for_reading() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut buf: Vec<u8> = (0..48u8).collect();
    let (st, id) = create_from_buffer(&c, &mut buf, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY);
    assert_eq!(st, STATUS_SUCCESS);
    let (st, mdl) = map(&s, id, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY);
    assert_eq!(st, STATUS_SUCCESS);
    let at = mdl_address(mdl).expect("a read-only mapping has an address");
    assert!(at.read_only);
    assert_eq!(at.len, 48);
    // SAFETY: the GPADL buffer is alive (deleted below) and nothing writes it meanwhile.
    let seen = unsafe { std::slice::from_raw_parts(at.address.as_ptr(), at.len) }.to_vec();
    assert_eq!(seen, (0..48u8).collect::<Vec<_>>(), "the guest's bytes");
    // Still no writable view, and the sim's own writer refuses it.
    // SAFETY: as above.
    assert!(unsafe { mdl_bytes(mdl) }.is_none());
    // SAFETY: as above.
    assert!(!unsafe { mdl_write(mdl, 0, b"x") });
    // SAFETY: live channels.
    unsafe { VmbChannelUnmapGpadl(s.ch, id) };
    // A write mapping of a writable GPADL is addressed the same way, not read-only.
    let mut buf2 = vec![7u8; 8];
    let (_, id2) = create_from_buffer(&c, &mut buf2, 0);
    let (st, mdl2) = map(&s, id2, 0);
    assert_eq!(st, STATUS_SUCCESS);
    let at2 = mdl_address(mdl2).expect("a write mapping has an address");
    assert_eq!((at2.len, at2.read_only), (8, false));
    // A pointer that is no sim MDL has no address.
    let mut not_mdl = 0u64;
    assert_eq!(mdl_address(std::ptr::from_mut(&mut not_mdl).cast()), None);
    // SAFETY: live channels; the buffers outlive their GPADLs.
    unsafe {
        VmbChannelUnmapGpadl(s.ch, id2);
        VmbChannelDeleteGpadl(c.ch, id2);
        VmbChannelDeleteGpadl(c.ch, id);
    }
    assert_eq!(mdl_address(mdl), None, "gone with the unmap");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn gpadl_read_only_rules_and_single_mapping() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut buf = vec![0u8; 16];
    let (_, id) = create_from_buffer(&c, &mut buf, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY);
    assert_eq!(
        map(&s, id, 0).0,
        STATUS_ACCESS_DENIED,
        "write mapping of a read-only GPADL"
    );
    let (st, mdl) = map(&s, id, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY);
    assert_eq!(st, STATUS_SUCCESS);
    // SAFETY: alive; read-only MDLs give no writable slice.
    assert!(unsafe { mdl_bytes(mdl) }.is_none());
    assert_eq!(
        map(&s, id, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY).0,
        STATUS_INVALID_DEVICE_STATE
    );
    assert_eq!(map(&s, id + 100, 0).0, STATUS_INVALID_PARAMETER_3);
    assert_eq!(map(&s, id, 0x8).0, STATUS_INVALID_PARAMETER_2);
    // SAFETY: live channels.
    unsafe {
        VmbChannelUnmapGpadl(s.ch, id);
        VmbChannelUnmapGpadl(s.ch, id);
    }
    assert!(bus.take_violations()[0].contains("double unmap"));
    // A read-write GPADL may be mapped read-only too.
    let mut buf2 = vec![0u8; 16];
    let (_, id2) = create_from_buffer(&c, &mut buf2, 0);
    let (st, _) = map(&s, id2, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY);
    assert_eq!(st, STATUS_SUCCESS);
    // SAFETY: live channels.
    unsafe {
        VmbChannelUnmapGpadl(s.ch, id2);
        VmbChannelDeleteGpadl(c.ch, id2);
        VmbChannelDeleteGpadl(c.ch, id);
    }
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn gpadl_create_rules() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    let mut buf = vec![0u8; 16];
    assert_eq!(
        create_from_buffer(&c, &mut buf, 0).0,
        STATUS_INVALID_DEVICE_STATE,
        "not open"
    );
    open(&bus, &s, &c);
    assert_eq!(
        create_from_buffer(&c, &mut buf, 2).0,
        STATUS_INVALID_PARAMETER_2
    );
    assert_eq!(
        create_from_buffer(&s, &mut buf, 0).0,
        STATUS_INVALID_PARAMETER_1,
        "server"
    );
    let mut id = 0;
    // SAFETY: NULL buffer and zero size are rejected before any access.
    unsafe {
        assert_eq!(
            VmbChannelCreateGpadlFromBuffer(c.ch, 0, std::ptr::null_mut(), 4, &mut id),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(
            VmbChannelCreateGpadlFromBuffer(c.ch, 0, buf.as_mut_ptr() as PVOID, 0, &mut id),
            STATUS_INVALID_PARAMETER_4
        );
    }
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn gpadl_delete_blocks_while_mapped() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut buf = vec![0u8; 16];
    let (_, id) = create_from_buffer(&c, &mut buf, 0);
    assert_eq!(map(&s, id, 0).0, 0);
    let sch = s.ch as usize;
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: live channel.
        unsafe { VmbChannelUnmapGpadl(std::ptr::without_provenance_mut(sch), id) };
    });
    let t0 = std::time::Instant::now();
    // SAFETY: live channel.
    unsafe { VmbChannelDeleteGpadl(c.ch, id) };
    assert!(
        t0.elapsed() >= Duration::from_millis(40),
        "delete did not wait for the unmap"
    );
    t.join().unwrap();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn gpadl_delete_that_would_block_forever_is_reported() {
    let bus = Bus::new();
    bus.set_block_limit(Duration::from_millis(10));
    let (s, c) = pair(&bus);
    let mut buf = vec![0u8; 16];
    let (_, id) = create_from_buffer(&c, &mut buf, 0);
    assert_eq!(map(&s, id, 0).0, 0);
    // SAFETY: live channel.
    unsafe { VmbChannelDeleteGpadl(c.ch, id) };
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("never unmapped"), "{v:?}");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn gpadls_left_after_closed_are_reported() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut buf = vec![0u8; 16];
    let (_, _id) = create_from_buffer(&c, &mut buf, 0);
    // SAFETY: live channel.
    unsafe { VmbChannelDisable(c.ch) };
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("EvtChannelClosed"), "{v:?}");
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

// ----- Save and restore -----

/// VSP state saved per packet: 5 bytes ("vsp" + index).
static SAVED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RESTORED_PACKETS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

unsafe extern "C" fn save_packet(
    _ch: VMBCHANNEL,
    _pkt: VMBPACKET,
    buf: PVOID,
    size: u32,
    needed: PUINT32,
) -> NTSTATUS {
    if size == 0 {
        // SAFETY: the sim passes a writable `BytesNeeded`.
        unsafe { needed.write(5) };
        SAVED.lock().unwrap().push("probe".into());
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the sim passes `size` (>= 5) writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(b"vsp-1".as_ptr(), buf as *mut u8, 5) };
    SAVED.lock().unwrap().push("save".into());
    STATUS_SUCCESS
}

unsafe extern "C" fn restore_packet(
    ch: VMBCHANNEL,
    lib: PVOID,
    lib_len: u32,
    save: PVOID,
    save_len: u32,
) -> NTSTATUS {
    // SAFETY: the sim passes readable buffers of the stated sizes.
    let vsp = unsafe { std::slice::from_raw_parts(save as *const u8, save_len as usize) };
    assert_eq!(vsp, b"vsp-1");
    // SAFETY: live channel; the packet context is the channel's live Ctx.
    unsafe {
        let p = VmbPacketAllocate(ch);
        VmbPacketSetPointer(p, VmbChannelGetPointer(ch));
        VmbPacketSetCompletionRoutine(p, Some(record_completion));
        let st = VmbPacketRestore(p, lib, lib_len);
        RESTORED_PACKETS.lock().unwrap().push(p as usize);
        st
    }
}

fn save_restore_server(bus: &Bus) -> Ep {
    let s = server(bus);
    // SAFETY: live channel in the init phase.
    unsafe {
        assert_eq!(
            VmbServerChannelInitSetSaveRestorePacketCallbacks(
                s.ch,
                Some(save_packet),
                Some(restore_packet)
            ),
            0
        );
    }
    s
}

#[test]
fn save_and_restore_with_in_flight_packet() {
    let bus = Bus::new();
    let s = save_restore_server(&bus);
    let c = client(&bus);
    open(&bus, &s, &c);
    c.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (p, _) = send(&s, b"inflight", WAIT);
    bus.run_until_idle();

    // Save in small chunks.
    let mut chunks = Vec::new();
    // SAFETY: live channel and buffers.
    unsafe {
        assert_eq!(VmbChannelSaveBegin(s.ch), 0);
        assert_eq!(
            VmbChannelSaveBegin(s.ch),
            STATUS_INVALID_DEVICE_STATE,
            "one save at a time"
        );
        let (mut filled, mut required) = (0u32, 0u32);
        let mut tiny = [0u8; 8];
        let st = VmbChannelSaveContinue(
            s.ch,
            tiny.as_mut_ptr() as PVOID,
            8,
            &mut filled,
            &mut required,
        );
        assert_eq!(st, STATUS_BUFFER_TOO_SMALL);
        assert!(required > 8);
        loop {
            let mut buf = vec![0u8; 40];
            let st = VmbChannelSaveContinue(
                s.ch,
                buf.as_mut_ptr() as PVOID,
                40,
                &mut filled,
                &mut required,
            );
            buf.truncate(filled as usize);
            chunks.push(buf);
            if st == STATUS_SUCCESS {
                break;
            }
            assert_eq!(st, STATUS_BUFFER_OVERFLOW);
        }
        VmbChannelSaveEnd(s.ch);
    }
    assert!(chunks.len() > 2);
    assert_eq!(*SAVED.lock().unwrap(), ["probe", "save"]);

    // The old VM goes away; its host channel is torn down.
    complete_held(&c);
    bus.run_until_idle();
    free(&[p]);
    teardown(&[&c, &s]);
    s.ctx.completions.lock().unwrap().clear();

    // Restore into a fresh server channel.
    let s2 = save_restore_server(&bus);
    // SAFETY: live channel and chunks.
    unsafe {
        let bad = [0u8; 20];
        assert_eq!(
            VmbChannelRestoreFromBuffer(s2.ch, bad.as_ptr() as PVOID, 20),
            STATUS_INVALID_PARAMETER
        );
        for (i, ch) in chunks.iter().enumerate() {
            let st = VmbChannelRestoreFromBuffer(s2.ch, ch.as_ptr() as PVOID, ch.len() as u32);
            if i + 1 == chunks.len() {
                assert_eq!(st, STATUS_SUCCESS);
            } else {
                assert_eq!(st, STATUS_MORE_PROCESSING_REQUIRED);
            }
        }
    }
    let restored = std::mem::take(&mut *RESTORED_PACKETS.lock().unwrap());
    assert_eq!(restored.len(), 1);
    // The restored transaction is sent again when the new guest opens the channel.
    let c2 = client(&bus);
    open(&bus, &s2, &c2);
    assert_eq!(*c2.ctx.payloads.lock().unwrap(), [b"inflight".to_vec()]);
    assert_eq!(
        *s2.ctx.completions.lock().unwrap(),
        [(STATUS_SUCCESS, b"thgilfni".to_vec())]
    );
    free(&[std::ptr::without_provenance_mut(restored[0])]);
    teardown(&[&c2, &s2]);
    bus.assert_no_leaks();
}

#[test]
fn restore_rejects_chunks_out_of_order() {
    let bus = Bus::new();
    let s = save_restore_server(&bus);
    let mut chunks = Vec::new();
    // SAFETY: live channel and buffers.
    unsafe {
        assert_eq!(VmbChannelSaveBegin(s.ch), 0);
        loop {
            let mut buf = vec![0u8; 30];
            let (mut f, mut r) = (0, 0);
            let st = VmbChannelSaveContinue(s.ch, buf.as_mut_ptr() as PVOID, 30, &mut f, &mut r);
            buf.truncate(f as usize);
            chunks.push(buf);
            if st == STATUS_SUCCESS {
                break;
            }
        }
        VmbChannelSaveEnd(s.ch);
        let s2 = save_restore_server(&bus);
        let last = chunks.last().unwrap();
        assert_eq!(
            VmbChannelRestoreFromBuffer(s2.ch, last.as_ptr() as PVOID, last.len() as u32),
            STATUS_INVALID_PARAMETER
        );
        // Restore needs a server channel in the disabled state.
        let c = client(&bus);
        let first = &chunks[0];
        assert_eq!(
            VmbChannelRestoreFromBuffer(c.ch, first.as_ptr() as PVOID, first.len() as u32),
            STATUS_INVALID_PARAMETER_1
        );
        teardown(&[&c, &s2]);
    }
    teardown(&[&s]);
    bus.assert_no_leaks();
}

#[test]
fn save_end_without_begin_and_missing_save_end_are_reported() {
    let bus = Bus::new();
    let s = save_restore_server(&bus);
    // SAFETY: live channel.
    unsafe {
        VmbChannelSaveEnd(s.ch);
        assert_eq!(VmbChannelSaveBegin(s.ch), 0);
    }
    assert_eq!(bus.leak_report().save_contexts, 1);
    teardown(&[&s]);
    let v = bus.take_violations();
    assert_eq!(v.len(), 2, "{v:?}");
    bus.assert_no_leaks();
    drop(Arc::new(()));
}

static GPADL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

unsafe extern "C" fn server_closed_unmaps(ch: VMBCHANNEL) {
    // SAFETY: live channel; the GPADL is mapped by this channel.
    unsafe { VmbChannelUnmapGpadl(ch, GPADL.load(Ordering::SeqCst)) };
}

unsafe extern "C" fn client_closed_deletes(ch: VMBCHANNEL) {
    // SAFETY: live channel; this GPADL belongs to it. The server unmaps in its own closed
    // callback, which the sim must run while this call waits.
    unsafe { VmbChannelDeleteGpadl(ch, GPADL.load(Ordering::SeqCst)) };
}

#[test]
fn gpadl_torn_down_in_both_closed_callbacks() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
    cbs.EvtChannelClosed = Some(server_closed_unmaps);
    let mut ccbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
    ccbs.EvtChannelClosed = Some(client_closed_deletes);
    // SAFETY: live channels and tables.
    unsafe {
        assert_eq!(VmbChannelInitSetStateChangeCallbacks(s.ch, &mut cbs), 0);
        assert_eq!(VmbChannelInitSetStateChangeCallbacks(c.ch, &mut ccbs), 0);
    }
    open(&bus, &s, &c);
    let mut buf = vec![0u8; 32];
    let (st, id) = create_from_buffer(&c, &mut buf, 0);
    assert_eq!(st, 0);
    GPADL.store(id, Ordering::SeqCst);
    assert_eq!(map(&s, id, 0).0, 0);
    let t0 = std::time::Instant::now();
    // SAFETY: live channel.
    unsafe { VmbChannelDisable(c.ch) };
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "delete waited for the block limit"
    );
    assert_eq!(bus.leak_report().gpadls, 0);
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}
