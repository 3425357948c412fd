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
use std::sync::Mutex;

use common::*;
use vmbus_kmcl_sim::status::*;
use vmbus_kmcl_sim::{Bus, RawPacketError, SimMdl};
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

/// Deadlines are computed without overflow: a block limit of `Duration::MAX` and the largest
/// relative timeout of a synchronous request wait "for ever" instead of panicking inside an
/// `extern "C"` function (which would abort the test process).
#[test]
fn huge_block_limits_and_timeouts_do_not_abort() {
    let bus = Bus::new();
    bus.set_block_limit(std::time::Duration::MAX);
    let (s, c) = pair(&bus);
    // SAFETY: live channel; pause blocks until nothing is outstanding (nothing is).
    unsafe { VmbChannelPause(s.ch) };
    // SAFETY: as above.
    unsafe { VmbChannelStart(s.ch) };
    bus.run_until_idle();
    let mut reply = [0u8; 8];
    let mut size = 8u32;
    let mut timeout = LARGE_INTEGER { QuadPart: i64::MIN };
    let msg = *b"ping";
    // SAFETY: live channel and buffers of the stated sizes.
    let st = unsafe {
        VmbChannelSendSynchronousRequest(
            c.ch,
            msg.as_ptr() as PVOID,
            4,
            std::ptr::null_mut(),
            WAIT,
            reply.as_mut_ptr().cast(),
            &mut size,
            &mut timeout,
        )
    };
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(&reply[..4], b"gnip");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

// ----- Item 2: rings have fixed sizes, also for a hostile guest -----

/// A well-formed in-band data frame (payload right after the descriptor).
fn raw_frame(flags: u16, txid: u64, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from((16 + payload.len()) / 8).unwrap();
    raw(6, 2, total, flags, txid, payload)
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

// ----- Item 3: a frame that can never fit is an error, not a silent wedge -----

/// A client on the smallest rings (one page each way) with the default 4096-byte maximum
/// packet size, `max_external` declared when given, and a recording server.
fn smallest_ring_pair(bus: &Bus, max_external: Option<u32>) -> (Ep, Ep) {
    let s = server(bus);
    let c = client(bus);
    // SAFETY: live channels in their init phase.
    unsafe {
        assert_eq!(VmbClientChannelInitSetRingBufferPageCount(c.ch, 1, 1), 0);
        if let Some(size) = max_external {
            assert_eq!(VmbChannelInitSetMaximumExternalData(c.ch, size, 1), 0);
        }
    }
    open(bus, &s, &c);
    (s, c)
}

/// Sends `inline` bytes plus `mdl` on a fresh packet of `from`, waiting for the completion.
fn send_with_mdl(from: &Ep, inline: &[u8], mdl: &SimMdl) -> (VMBPACKET, NTSTATUS) {
    // SAFETY: live channel; the packet pointer is the endpoint's live Ctx; the MDL outlives
    // the transaction.
    unsafe {
        let p = VmbPacketAllocate(from.ch);
        VmbPacketSetPointer(p, std::sync::Arc::as_ptr(&from.ctx) as PVOID);
        VmbPacketSetCompletionRoutine(p, Some(record_completion));
        let st = VmbPacketSend(
            p,
            inline.as_ptr() as PVOID,
            inline.len() as u32,
            mdl.as_pmdl(),
            WAIT,
        );
        (p, st)
    }
}

/// Sends the maximum inline payload (4096 bytes) plus `mdl` on the smallest rings, with
/// `max_external` declared when given. Returns the send's status, or (when the send was
/// accepted) the status its completion brought back after the server received it.
fn max_inline_send_with(mdl: &SimMdl, max_external: Option<u32>) -> NTSTATUS {
    let bus = Bus::new();
    let (s, c) = smallest_ring_pair(&bus, max_external);
    let (p, mut st) = send_with_mdl(&c, &[1; 4096], mdl);
    if st == STATUS_SUCCESS {
        bus.run_until_idle();
        assert_eq!(s.ctx.payloads.lock().unwrap().len(), 1);
        st = c.ctx.completions.lock().unwrap()[0].0;
    }
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
    st
}

/// KMCL sizes the rings so that a packet of the maximum size fits
/// (`VmbChannelInitSetMaximumPacketSize`, `...MaximumExternalData`): the smallest ring has room
/// for the maximum inline payload plus an external-data descriptor.
#[test]
fn smallest_ring_fits_the_maximum_inline_payload_with_an_external_mdl() {
    let mdl = SimMdl::from_bytes(&[7; 100]);
    assert_eq!(max_inline_send_with(&mdl, None), STATUS_SUCCESS);
}

/// A send whose frame is larger than the ring can never be delivered: it is refused at send
/// time with `STATUS_INVALID_PARAMETER` instead of returning `STATUS_SUCCESS` and waiting for
/// ever; declaring the external data size (`VmbChannelInitSetMaximumExternalData`) makes KMCL
/// size the ring so that it fits.
#[test]
fn a_send_larger_than_the_ring_is_refused_unless_declared() {
    let mdl = SimMdl::new(3 * 4096);
    assert_eq!(max_inline_send_with(&mdl, None), STATUS_INVALID_PARAMETER);
    assert_eq!(max_inline_send_with(&mdl, Some(3 * 4096)), STATUS_SUCCESS);
}

/// A frame queued before the channel opened that turns out larger than the ring is dropped
/// when the ring is sized (a violation), and its sender completed with
/// `STATUS_INVALID_PARAMETER`, instead of blocking the ring until disable.
#[test]
fn a_queued_frame_that_can_never_fit_is_failed_at_open() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    // SAFETY: live channel in its init phase.
    unsafe { assert_eq!(VmbClientChannelInitSetRingBufferPageCount(c.ch, 1, 1), 0) };
    // SAFETY: live channel; no server offers yet, so the client waits for one.
    unsafe { assert_eq!(VmbChannelEnable(c.ch), 0) };
    let mdl = SimMdl::new(3 * 4096);
    let (p, st) = send_with_mdl(&c, &[1; 4096], &mdl);
    assert_eq!(st, STATUS_SUCCESS, "queued: the ring is not sized yet");
    let (q, st) = send(&c, b"behind it", WAIT);
    assert_eq!(st, STATUS_SUCCESS);
    // SAFETY: live channel.
    unsafe {
        assert_eq!(VmbChannelEnable(s.ch), 0);
        VmbChannelStart(s.ch);
    }
    bus.run_until_idle();
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("can never fit"), "{v:?}");
    let done = c.ctx.completions.lock().unwrap().clone();
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(done[0].0, STATUS_INVALID_PARAMETER);
    // The packet behind it was not blocked.
    assert_eq!(done[1].0, STATUS_SUCCESS);
    assert_eq!(*s.ctx.payloads.lock().unwrap(), [b"behind it".to_vec()]);
    free(&[p, q]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// A completion whose frame is larger than the ring back to the sender would block that ring
/// for ever: it is a violation, and the sender gets `STATUS_BUFFER_OVERFLOW` without data.
#[test]
fn a_completion_larger_than_the_ring_is_a_violation() {
    let bus = Bus::new();
    let (s, c) = smallest_ring_pair(&bus, None);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (p, st) = send(&c, b"ask", WAIT);
    assert_eq!(st, STATUS_SUCCESS);
    bus.run_until_idle();
    let held = s.ctx.take_held();
    assert_eq!(held.len(), 1);
    let capacity = bus.channel_info(s.ch).unwrap().outgoing_ring_capacity;
    let reply = vec![9u8; capacity];
    // SAFETY: completing the held packet once with a live buffer.
    unsafe {
        VmbChannelPacketComplete(
            std::ptr::without_provenance_mut(held[0]),
            reply.as_ptr() as PVOID,
            reply.len() as u32,
        )
    };
    bus.run_until_idle();
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("can never fit"), "{v:?}");
    assert_eq!(
        *c.ctx.completions.lock().unwrap(),
        [(STATUS_BUFFER_OVERFLOW, vec![])]
    );
    // The ring still carries traffic.
    s.ctx.mode.store(COMPLETE_INLINE, Ordering::SeqCst);
    let (q, _) = send(&c, b"next", WAIT);
    bus.run_until_idle();
    assert_eq!(
        c.ctx.completions.lock().unwrap()[1],
        (STATUS_SUCCESS, b"txen".to_vec())
    );
    free(&[p, q]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

// ----- Item 4: caller pointers are read as C allows -----

/// Scratch memory with a known alignment, so that `base + 1` is misaligned for every scalar.
#[repr(C, align(16))]
struct Scratch([u8; 256]);

impl Scratch {
    fn new() -> Box<Scratch> {
        Box::new(Scratch([0; 256]))
    }

    /// An address one byte past a 16-byte boundary, as a pointer to `T`.
    fn odd<T>(&mut self) -> *mut T {
        self.0.as_mut_ptr().wrapping_add(1).cast()
    }
}

/// C lets `OriginalLatency` (a `PUINT16`) point anywhere; the sim writes it unaligned.
#[test]
fn misaligned_latency_output_is_written_unaligned() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut mem = Scratch::new();
    let out: *mut u16 = mem.odd();
    // SAFETY: live channel; `out` has two writable bytes.
    unsafe {
        assert_eq!(
            VmbChannelSetInterruptLatency(c.ch, 100, out),
            STATUS_SUCCESS
        );
        assert_eq!(out.read_unaligned(), 0);
        assert_eq!(VmbChannelSetInterruptLatency(c.ch, 7, out), STATUS_SUCCESS);
        assert_eq!(out.read_unaligned(), 100);
    }
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// The `UNICODE_STRING` itself may sit at any address (its `Buffer` must hold whole, aligned
/// UTF-16 units, which the sim checks separately).
#[test]
fn misaligned_unicode_string_is_read_unaligned() {
    let bus = Bus::new();
    let s = server(&bus);
    let name: Vec<u16> = "Net".encode_utf16().collect();
    let mut mem = Scratch::new();
    let us: *mut UNICODE_STRING = mem.odd();
    // SAFETY: `us` has room for a UNICODE_STRING; live channel in its init phase; `name`
    // outlives the call.
    unsafe {
        us.write_unaligned(UNICODE_STRING {
            Length: 6,
            MaximumLength: 6,
            Buffer: name.as_ptr().cast_mut(),
        });
        assert_eq!(VmbChannelInitSetFriendlyName(s.ch, us), STATUS_SUCCESS);
    }
    assert_eq!(
        bus.channel_info(s.ch).unwrap().friendly_name.as_deref(),
        Some("Net")
    );
    // SAFETY: live channel.
    unsafe { VmbChannelCleanup(s.ch) };
    bus.assert_no_leaks();
}

/// `CompletionBufferSize` (a `PUINT32`) and `Timeout` (a `PLARGE_INTEGER`) of
/// `VmbChannelSendSynchronousRequest` may be misaligned.
#[test]
fn misaligned_sync_request_size_and_timeout_are_read_unaligned() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut size_mem = Scratch::new();
    let mut timeout_mem = Scratch::new();
    let size: *mut u32 = size_mem.odd();
    let timeout: *mut LARGE_INTEGER = timeout_mem.odd();
    let mut reply = [0u8; 16];
    let msg = *b"12345";
    // SAFETY: live channel; every pointer has room for its type; buffers of the stated sizes.
    let st = unsafe {
        size.write_unaligned(16);
        timeout.write_unaligned(LARGE_INTEGER {
            QuadPart: -50_000_000,
        });
        VmbChannelSendSynchronousRequest(
            c.ch,
            msg.as_ptr() as PVOID,
            5,
            std::ptr::null_mut(),
            WAIT,
            reply.as_mut_ptr().cast(),
            size,
            timeout,
        )
    };
    assert_eq!(st, STATUS_SUCCESS);
    // SAFETY: as above.
    assert_eq!(unsafe { size.read_unaligned() }, 5);
    assert_eq!(&reply[..5], b"54321");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// The GPADL handle output, the state-callback table and the target GUIDs may be misaligned.
#[test]
fn misaligned_gpadl_handle_callback_table_and_guid_are_accessed_unaligned() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    let mut mem = Scratch::new();
    let cbs: *mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS = mem.odd();
    let mut guid_mem = Scratch::new();
    let ty: *mut GUID = guid_mem.odd();
    // SAFETY: live channels in their init phase; the pointers have room for their types.
    unsafe {
        cbs.write_unaligned(VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new());
        assert_eq!(
            VmbChannelInitSetStateChangeCallbacks(s.ch, cbs),
            STATUS_SUCCESS
        );
        ty.write_unaligned(guid(TYPE));
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(c.ch, ty, std::ptr::null(), None),
            STATUS_SUCCESS
        );
    }
    open(&bus, &s, &c);
    assert_eq!(
        bus.channel_info(c.ch).unwrap().state,
        vmbus_kmcl_sim::ChannelState::Open
    );
    let mut buf = vec![0u8; 64];
    let mut out_mem = Scratch::new();
    let id: *mut u32 = out_mem.odd();
    // SAFETY: open client channel; `buf` outlives the GPADL; `id` has four writable bytes.
    unsafe {
        let st = VmbChannelCreateGpadlFromBuffer(c.ch, 0, buf.as_mut_ptr().cast(), 64, id);
        assert_eq!(st, STATUS_SUCCESS);
        let mut mdl: PMDL = std::ptr::null_mut();
        assert_eq!(
            VmbChannelMapGpadl(s.ch, 0, id.read_unaligned(), &mut mdl),
            STATUS_SUCCESS
        );
        VmbChannelUnmapGpadl(s.ch, id.read_unaligned());
        VmbChannelDeleteGpadl(c.ch, id.read_unaligned());
    }
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// An open pair whose server runs `process_packet` instead of the recording driver's.
fn pair_with_server_packet_callback(
    bus: &Bus,
    process_packet: unsafe extern "C" fn(VMBCHANNEL, VMBPACKETCOMPLETION, PVOID, u32, u32),
) -> (Ep, Ep) {
    let s = server(bus);
    // SAFETY: live channel in its init phase.
    unsafe {
        assert_eq!(
            VmbChannelInitSetProcessPacketCallbacks(s.ch, Some(process_packet), None),
            0
        );
    }
    let c = client(bus);
    open(bus, &s, &c);
    (s, c)
}

static SEEN_PFNS: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

unsafe extern "C" fn record_pfns(
    _ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    _buf: PVOID,
    _len: u32,
    _flags: u32,
) {
    let mut mdl: PMDL = std::ptr::null_mut();
    // SAFETY: inside the packet's delivery; `mdl` is a live local.
    let st = unsafe { VmbChannelPacketGetExternalData(pkt, 0, &mut mdl) };
    assert_eq!(st, STATUS_SUCCESS);
    SEEN_PFNS
        .lock()
        .unwrap()
        .push(vmbus_kmcl_sim::mdl_pfns(mdl).unwrap_or_default());
    // SAFETY: completing the delivered packet once.
    unsafe { VmbChannelPacketComplete(pkt, std::ptr::null_mut(), 0) };
}

/// The PFN array of `VmbPacketSendWithExternalPfns` may be misaligned.
#[test]
fn misaligned_pfn_array_is_read_unaligned() {
    let bus = Bus::new();
    let (s, c) = pair_with_server_packet_callback(&bus, record_pfns);
    let mut mem = Scratch::new();
    let pfns: *mut u64 = mem.odd();
    // SAFETY: `pfns` has room for two u64; live channel.
    unsafe {
        pfns.write_unaligned(0x1234);
        pfns.wrapping_add(1).write_unaligned(0x5678);
        let p = VmbPacketAllocate(c.ch);
        let st = VmbPacketSendWithExternalPfns(p, std::ptr::null_mut(), 0, pfns, 2, WAIT);
        assert_eq!(st, STATUS_SUCCESS);
    }
    bus.run_until_idle();
    assert_eq!(*SEEN_PFNS.lock().unwrap(), [vec![0x1234, 0x5678]]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

// ----- Item 5: bounded bookkeeping of closed kernel handles -----

/// A double `ZwClose` is told from a close of a never-issued value without a list of every
/// closed handle: after thousands of closes the first one's double close is still a
/// `DoubleClose`, the newest is still charged to its bus, and a forged value is still an
/// invalid close.
#[test]
fn double_close_is_detected_after_many_closes() {
    use vmbus_kmcl_sim::nt::{self, Process, Violation};
    let bus = Bus::new();
    let worker = Process::new("vmwp");
    // More closes than the emulation remembers buses for (4096); under Miri fewer, since the
    // bound itself is proven by the NT emulation's unit test.
    let n = if cfg!(miri) { 300 } else { 4200 };
    let mut kernel_handles = Vec::with_capacity(n);
    {
        let _thread = worker.enter();
        for _ in 0..n {
            let user = bus.open_vmbus_handle_in(&worker);
            let mut k: HANDLE = std::ptr::null_mut();
            // SAFETY: `k` is a valid place for the result.
            let st = unsafe { VmbConvertVmbusHandleToKernelHandle(user, &mut k) };
            assert_eq!(st, STATUS_SUCCESS);
            kernel_handles.push(k);
        }
    }
    for k in &kernel_handles {
        // SAFETY: open kernel handles, each closed once.
        assert_eq!(unsafe { vmbus_kmcl_sys::nt::ZwClose(*k) }, STATUS_SUCCESS);
    }
    let first = kernel_handles[0];
    // SAFETY: a closed value: the misuse under test (never dereferenced).
    let st = unsafe { vmbus_kmcl_sys::nt::ZwClose(first) };
    assert_eq!(st, vmbus_kmcl_sim::nt::STATUS_INVALID_HANDLE);
    assert_eq!(
        nt::take_violations(Some(first)),
        [Violation::DoubleClose(first.addr())]
    );
    let last = kernel_handles[n - 1];
    // SAFETY: as above.
    let st = unsafe { vmbus_kmcl_sys::nt::ZwClose(last) };
    assert_eq!(st, vmbus_kmcl_sim::nt::STATUS_INVALID_HANDLE);
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("DoubleClose"), "{v:?}");
    let forged: HANDLE = std::ptr::without_provenance_mut(last.addr() + 4 * 1_000_000);
    // SAFETY: a value never issued: the misuse under test.
    let st = unsafe { vmbus_kmcl_sys::nt::ZwClose(forged) };
    assert_eq!(st, vmbus_kmcl_sim::nt::STATUS_INVALID_HANDLE);
    assert_eq!(
        nt::take_violations(Some(forged)),
        [Violation::CloseOfInvalidHandle(forged.addr())]
    );
    bus.assert_no_leaks();
}

// ----- Item 6: better reports -----

/// A leak report says where each leaked object was made: the KMCL function, its allocation
/// number on the bus and the thread (here, this test).
#[test]
fn leak_report_names_where_each_leaked_object_was_allocated() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    let leaked_packet = unsafe { VmbPacketAllocate(c.ch) };
    assert!(!leaked_packet.is_null());
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    let (p, _) = send(&c, b"held", WAIT);
    bus.run_until_idle();
    let report = bus.leak_report();
    let this_test = "leak_report_names_where_each_leaked_object_was_allocated";
    let lines = &report.leaked;
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(lines[0].starts_with("server channel: allocation #1 by VmbChannelAllocate"));
    assert!(lines[1].starts_with("client channel: allocation #2 by VmbChannelAllocate"));
    assert!(lines[2].starts_with("packet: allocation #3 by VmbPacketAllocate"));
    assert!(lines[3].starts_with("packet: allocation #4 by VmbPacketAllocate"));
    assert!(lines[4].starts_with(
        "incoming packet never completed: allocation #5 by EvtVmbChannelProcessPacket delivery"
    ));
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with(&format!("thread '{this_test}'"))),
        "{lines:#?}"
    );
    assert_eq!(complete_held(&s), 1);
    bus.run_until_idle();
    free(&[p, leaked_packet]);
    teardown(&[&c, &s]);
    assert_eq!(bus.leak_report().leaked, Vec::<String>::new());
    bus.assert_no_leaks();
}

/// An open pair whose server is bound (`VmbServerChannelInitSetVmbusHandle`) to a kernel handle
/// converted from a VMBus handle of `worker`; returns the pair, the kernel and the user handle.
fn pair_bound_to_a_kernel_handle(
    bus: &Bus,
    worker: &vmbus_kmcl_sim::nt::Process,
) -> (Ep, Ep, HANDLE, HANDLE) {
    let user = bus.open_vmbus_handle_in(worker);
    let mut kernel: HANDLE = std::ptr::null_mut();
    {
        let _in = worker.enter();
        // SAFETY: a writable output, in the worker's context.
        let st = unsafe { VmbConvertVmbusHandleToKernelHandle(user, &mut kernel) };
        assert_eq!(st, STATUS_SUCCESS);
    }
    let s = server(bus);
    let c = client(bus);
    // SAFETY: live channel in its init phase; an open kernel handle.
    unsafe { assert_eq!(VmbServerChannelInitSetVmbusHandle(s.ch, kernel), 0) };
    open(bus, &s, &c);
    (s, c, kernel, user)
}

/// `VmbServerChannelInitSetVmbusHandle` binds the channel to the VM through the kernel handle:
/// closing that handle while the channel is enabled is recorded (the sim takes no reference).
#[test]
fn closing_the_vmbus_handle_of_an_enabled_channel_is_recorded() {
    use vmbus_kmcl_sim::nt::{self, Process};
    let worker = Process::new("vmwp");
    let bus = Bus::new();
    let (s, c, kernel, user) = pair_bound_to_a_kernel_handle(&bus, &worker);
    // SAFETY: closing the kernel handle we own, while the channel still uses it.
    assert_eq!(unsafe { nt::ZwClose(kernel) }, STATUS_SUCCESS);
    let v = bus.take_violations();
    assert!(
        v.len() == 1 && v[0].contains("enabled server channel still uses it"),
        "{v:?}"
    );
    teardown(&[&c, &s]);
    assert!(worker.close_handle(user));
    bus.assert_no_leaks();

    // Closed after disable and cleanup: no violation.
    let bus = Bus::new();
    let (s, c, kernel, user) = pair_bound_to_a_kernel_handle(&bus, &worker);
    teardown(&[&c, &s]);
    // SAFETY: closing the kernel handle we own, after the channel was cleaned up.
    assert_eq!(unsafe { nt::ZwClose(kernel) }, STATUS_SUCCESS);
    assert!(worker.close_handle(user));
    bus.assert_no_leaks();
}

// ----- Item 7: the documented rules -----

static STARTED_SYNC: AtomicI32 = AtomicI32::new(1);

unsafe extern "C" fn sync_in_started(ch: VMBCHANNEL) {
    let mut reply = [0u8; 8];
    let mut size = 8u32;
    let msg = *b"hello";
    // SAFETY: live channel and buffers of the stated sizes.
    let st = unsafe {
        VmbChannelSendSynchronousRequest(
            ch,
            msg.as_ptr() as PVOID,
            5,
            std::ptr::null_mut(),
            WAIT,
            reply.as_mut_ptr().cast(),
            &mut size,
            std::ptr::null_mut(),
        )
    };
    STARTED_SYNC.store(st, Ordering::SeqCst);
}

/// `EvtVmbChannelStarted` runs before the incoming queue is switched on, so a synchronous
/// request that waits for its completion there never returns on Windows. The sim records it
/// and fails the call instead of letting the request through.
#[test]
fn waiting_sync_request_in_started_is_a_violation() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
    cbs.EvtChannelStarted = Some(sync_in_started);
    // SAFETY: live channel in its init phase; the table is copied.
    unsafe { assert_eq!(VmbChannelInitSetStateChangeCallbacks(c.ch, &mut cbs), 0) };
    open(&bus, &s, &c);
    assert_eq!(
        STARTED_SYNC.load(Ordering::SeqCst),
        STATUS_INVALID_DEVICE_STATE
    );
    let v = bus.take_violations();
    assert!(v.len() == 1 && v[0].contains("EvtChannelStarted"), "{v:?}");
    // The server never received it.
    assert!(s.ctx.payloads.lock().unwrap().is_empty());
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

static SLOW_RELEASE: AtomicBool = AtomicBool::new(false);
static SLOW_ENTERED: AtomicBool = AtomicBool::new(false);

/// A packet callback that logs its start and end and holds the delivery until released.
unsafe extern "C" fn slow_packet(
    ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    _buf: PVOID,
    _len: u32,
    _flags: u32,
) {
    // SAFETY: test channels carry a live Ctx.
    let c = unsafe { ctx(ch) };
    c.log.lock().unwrap().push("packet-start".into());
    SLOW_ENTERED.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !SLOW_RELEASE.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    c.log.lock().unwrap().push("packet-end".into());
    // SAFETY: completing the delivered packet once.
    unsafe { VmbChannelPacketComplete(pkt, std::ptr::null_mut(), 0) };
}

/// Runs `stop` on the server (pause or disable) while its packet callback runs on the
/// background delivery thread; returns the server's log.
fn stop_during_a_packet_callback(stop: unsafe extern "C" fn(VMBCHANNEL)) -> Vec<String> {
    // The two tests built on this share SLOW_RELEASE and SLOW_ENTERED, and the test harness
    // runs them on parallel threads: one at a time, or one releases the other's callback early.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    SLOW_RELEASE.store(false, Ordering::SeqCst);
    SLOW_ENTERED.store(false, Ordering::SeqCst);
    let bus = Bus::new();
    let (s, c) = pair_with_server_packet_callback(&bus, slow_packet);
    bus.start_background_delivery();
    assert_eq!(send_default(&c, b"slow", WAIT), STATUS_SUCCESS);
    wait_for("the packet callback", || {
        SLOW_ENTERED.load(Ordering::SeqCst)
    });
    let server = s.ch as usize;
    let bus_ref = &bus;
    std::thread::scope(|scope| {
        // Releases the packet callback once the stop has begun (the flow is off) and had a
        // moment to run EvtChannelSuspend if it does not wait.
        scope.spawn(move || {
            let ch: VMBCHANNEL = std::ptr::without_provenance_mut(server);
            wait_for("the stop to begin", || {
                bus_ref.channel_info(ch).is_some_and(|i| !i.running)
            });
            let pause = if cfg!(miri) { 1 } else { 20 };
            std::thread::sleep(std::time::Duration::from_millis(pause));
            SLOW_RELEASE.store(true, Ordering::SeqCst);
        });
        // SAFETY: live channel, at PASSIVE_LEVEL, outside any callback of it.
        unsafe { stop(s.ch) };
    });
    bus.stop_background_delivery();
    bus.run_until_idle();
    let log = s.ctx.log();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
    log
}

/// KMCL guarantees that no `EvtVmbChannelProcessPacket` is running or queued once
/// `EvtVmbChannelSuspend` is called: pause waits for the running callback first.
#[test]
fn suspend_on_pause_waits_for_a_running_packet_callback() {
    let log = stop_during_a_packet_callback(VmbChannelPause);
    assert_eq!(
        log[3..],
        ["packet-start", "packet-end", "suspend"],
        "{log:?}"
    );
}

/// The same guarantee when the flow stops because of `VmbChannelDisable`.
#[test]
fn suspend_on_disable_waits_for_a_running_packet_callback() {
    let log = stop_during_a_packet_callback(VmbChannelDisable);
    assert_eq!(
        log[3..],
        ["packet-start", "packet-end", "suspend", "closed"],
        "{log:?}"
    );
}

/// Disables `first` and then `second` of a fresh pair without pumping in between; returns the
/// log of the one disabled second.
fn disable_before_the_close_is_delivered(guest_first: bool) -> Vec<String> {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let (first, second) = if guest_first { (&c, &s) } else { (&s, &c) };
    // SAFETY: live channels; no pumping between the two disables.
    unsafe {
        VmbChannelDisable(first.ch);
        VmbChannelDisable(second.ch);
    }
    let log = second.ctx.log();
    bus.run_until_idle();
    // Delivered once, not again later.
    assert_eq!(second.ctx.log(), log);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
    log
}

/// `VmbChannelDisable` returns only when the channel is paused and closed, running
/// `EvtChannelSuspend` (if it ran) and `EvtChannelClosed` (if it was open): also when the peer
/// closed first and its close was not delivered yet. The guest closes, the host disables.
#[test]
fn host_disable_after_an_undelivered_guest_close_still_suspends_and_closes() {
    assert_eq!(
        disable_before_the_close_is_delivered(true),
        ["opened", "started", "post_started", "suspend", "closed"]
    );
}

/// The same on the guest side: the host rescinds, and the guest disables before the close was
/// delivered.
#[test]
fn guest_disable_after_an_undelivered_host_close_still_suspends_and_closes() {
    assert_eq!(
        disable_before_the_close_is_delivered(false),
        ["opened", "started", "post_started", "suspend", "closed"]
    );
}

/// If the queue is stalled on the transaction quota, `VmbChannelSetTransactionQuota` does not
/// restart it; the next completion does.
#[test]
fn raising_the_quota_does_not_restart_a_stalled_queue() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(HOLD, Ordering::SeqCst);
    // SAFETY: live channel.
    unsafe { VmbChannelSetTransactionQuota(s.ch, 1) };
    for _ in 0..3 {
        assert_eq!(send_default(&c, b"q", WAIT), STATUS_SUCCESS);
    }
    bus.run_until_idle();
    assert_eq!(s.ctx.held.lock().unwrap().len(), 1);
    // SAFETY: live channel.
    unsafe { VmbChannelSetTransactionQuota(s.ch, 10) };
    bus.run_until_idle();
    assert_eq!(
        s.ctx.held.lock().unwrap().len(),
        1,
        "the quota call must not restart the queue"
    );
    assert_eq!(complete_held(&s), 1);
    bus.run_until_idle();
    // The completion restarted it, now with the new quota.
    assert_eq!(s.ctx.held.lock().unwrap().len(), 2);
    assert_eq!(complete_held(&s), 2);
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// A deferred packet already counts against the quota: its redelivery at PASSIVE_LEVEL is
/// not held back by a quota of one.
#[test]
fn a_deferred_packet_is_redelivered_under_a_quota_of_one() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    s.ctx.mode.store(DEFER_ONCE, Ordering::SeqCst);
    // SAFETY: live channel.
    unsafe { VmbChannelSetTransactionQuota(s.ch, 1) };
    let (p, st) = send(&c, b"defer me", WAIT);
    assert_eq!(st, STATUS_SUCCESS);
    bus.run_until_idle();
    assert_eq!(
        s.ctx.payloads.lock().unwrap().len(),
        2,
        "delivered, then redelivered"
    );
    assert_eq!(c.ctx.completions.lock().unwrap().len(), 1);
    free(&[p]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

// ----- PASSIVE_LEVEL-only functions (issue 12, item 8) -----

/// Runs `f` at DISPATCH_LEVEL on this thread.
fn at_dispatch<T>(f: impl FnOnce() -> T) -> T {
    let old = vmbus_kmcl_sim::nt::set_current_irql(vmbus_kmcl_sys::nt::DISPATCH_LEVEL);
    let out = f();
    vmbus_kmcl_sim::nt::set_current_irql(old);
    out
}

fn one_irql_violation(bus: &Bus, what: &str) {
    let v = bus.take_violations();
    assert!(
        v.len() == 1 && v[0].contains(what) && v[0].contains("only be called at PASSIVE_LEVEL"),
        "{what}: {v:?}"
    );
}

/// `VmbChannelAllocate` is documented `PASSIVE_LEVEL` (`_IRQL_requires_`): above it nothing is
/// allocated and the call is recorded.
#[test]
fn channel_allocate_above_passive_is_a_violation() {
    let bus = Bus::new();
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: `ch` is a writable output.
    let st = at_dispatch(|| unsafe { VmbChannelAllocate(bus.root_device(), 1, &mut ch) });
    assert_eq!(st, STATUS_INVALID_DEVICE_STATE);
    assert!(ch.is_null());
    one_irql_violation(&bus, "VmbChannelAllocate");
    bus.assert_no_leaks();
}

/// GPADL creation waits for the peer's acknowledgement and deletion may block: both are
/// PASSIVE_LEVEL-only.
#[test]
fn gpadl_create_and_delete_above_passive_are_violations() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    let mut buf = vec![0u8; 64];
    let mut id = 0u32;
    // SAFETY: open client channel; `buf` outlives the GPADL; `id` is writable.
    let st = at_dispatch(|| unsafe {
        VmbChannelCreateGpadlFromBuffer(c.ch, 0, buf.as_mut_ptr().cast(), 64, &mut id)
    });
    assert_eq!(st, STATUS_INVALID_DEVICE_STATE);
    one_irql_violation(&bus, "VmbChannelCreateGpadlFromBuffer");
    let mdl = SimMdl::new(64);
    // SAFETY: as above, with a live sim MDL.
    let st = at_dispatch(|| unsafe {
        VmbChannelCreateGpadlFromMdl(c.ch, 0, mdl.as_pmdl(), 0, 0, &mut id)
    });
    assert_eq!(st, STATUS_INVALID_DEVICE_STATE);
    one_irql_violation(&bus, "VmbChannelCreateGpadlFromMdl");
    // SAFETY: as above, at PASSIVE_LEVEL.
    let st =
        unsafe { VmbChannelCreateGpadlFromBuffer(c.ch, 0, buf.as_mut_ptr().cast(), 64, &mut id) };
    assert_eq!(st, STATUS_SUCCESS);
    // SAFETY: deleting the GPADL just made, once.
    at_dispatch(|| unsafe { VmbChannelDeleteGpadl(c.ch, id) });
    one_irql_violation(&bus, "VmbChannelDeleteGpadl");
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// Pause and disable block until the channel is quiet: PASSIVE_LEVEL-only.
#[test]
fn pause_and_disable_above_passive_are_violations() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    at_dispatch(|| unsafe { VmbChannelPause(s.ch) });
    one_irql_violation(&bus, "VmbChannelPause");
    // SAFETY: live channel.
    at_dispatch(|| unsafe { VmbChannelDisable(c.ch) });
    one_irql_violation(&bus, "VmbChannelDisable");
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

/// `VmbPacketRestore` belongs in `EvtVmbChannelRestorePacket`, which runs at PASSIVE_LEVEL.
#[test]
fn packet_restore_above_passive_is_a_violation() {
    let bus = Bus::new();
    let s = server(&bus);
    // SAFETY: live channel.
    let p = unsafe { VmbPacketAllocate(s.ch) };
    let blob = [0u8; 12];
    // SAFETY: live packet; `blob` is readable for its length.
    let st = at_dispatch(|| unsafe { VmbPacketRestore(p, blob.as_ptr() as PVOID, 12) });
    assert_eq!(st, STATUS_INVALID_DEVICE_STATE);
    one_irql_violation(&bus, "VmbPacketRestore");
    free(&[p]);
    teardown(&[&s]);
    bus.assert_no_leaks();
}
