//! End to end at the C ABI: every KMCL call goes through the `extern` declarations of
//! `vmbus-kmcl-sys` (resolved at link time to the sim's exports), exactly as a driver written
//! against the raw bindings would make them. Only the test harness (the bus, delivery and the
//! leak check) uses the sim's Rust API.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests drive sequences of raw KMCL calls whose preconditions are the same: live \
              channels and buffers owned by the test, stated once per block"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys as sys;
use vmbus_kmcl_sys::{GUID, NTSTATUS, PVOID, VMBCHANNEL, VMBPACKET, VMBPACKETCOMPLETION};

/// Per-endpoint driver state, reached through the channel and packet pointers.
#[derive(Default)]
struct Driver {
    events: Mutex<Vec<&'static str>>,
    received: AtomicUsize,
    completed: AtomicUsize,
    bad_replies: AtomicUsize,
}

unsafe fn driver<'a>(ch: VMBCHANNEL) -> &'a Driver {
    // SAFETY: every channel of this test carries a live `Driver`.
    unsafe { &*(sys::VmbChannelGetPointer(ch) as *const Driver) }
}

unsafe extern "C" fn ev_opened(ch: VMBCHANNEL) -> NTSTATUS {
    // SAFETY: see `driver`.
    unsafe { driver(ch) }.events.lock().unwrap().push("opened");
    0
}
unsafe extern "C" fn ev_closed(ch: VMBCHANNEL) {
    // SAFETY: see `driver`.
    unsafe { driver(ch) }.events.lock().unwrap().push("closed");
}
unsafe extern "C" fn ev_suspend(ch: VMBCHANNEL) {
    // SAFETY: see `driver`.
    unsafe { driver(ch) }.events.lock().unwrap().push("suspend");
}
unsafe extern "C" fn ev_started(ch: VMBCHANNEL) {
    // SAFETY: see `driver`.
    unsafe { driver(ch) }.events.lock().unwrap().push("started");
}
unsafe extern "C" fn ev_post_started(ch: VMBCHANNEL) {
    // SAFETY: see `driver`.
    unsafe { driver(ch) }
        .events
        .lock()
        .unwrap()
        .push("post_started");
}

/// Replies with the request's sequence number plus one.
unsafe extern "C" fn process(
    ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    buf: PVOID,
    len: u32,
    _f: u32,
) {
    // SAFETY: see `driver`.
    let d = unsafe { driver(ch) };
    d.received.fetch_add(1, Ordering::Relaxed);
    let mut seq = [0u8; 8];
    if len as usize >= 8 {
        // SAFETY: the sim passes `len` readable bytes.
        seq.copy_from_slice(unsafe { std::slice::from_raw_parts(buf as *const u8, 8) });
    }
    let reply = (u64::from_le_bytes(seq) + 1).to_le_bytes();
    // SAFETY: completing the delivered packet once, with a live reply buffer.
    unsafe { sys::VmbChannelPacketComplete(pkt, reply.as_ptr() as PVOID, 8) };
}

/// Checks the reply, counts, and frees the packet (the routine owns it).
unsafe extern "C" fn completion(pkt: VMBPACKET, status: NTSTATUS, buf: PVOID, len: u32) {
    // SAFETY: the packet pointer is the sender's `Driver`; the sequence number sits in the
    // driver-visible pointer of the channel's `Driver`.
    let d = unsafe { &*(sys::VmbPacketGetPointer(pkt) as *const Driver) };
    if status != 0 || len != 8 || buf.is_null() {
        d.bad_replies.fetch_add(1, Ordering::Relaxed);
    }
    d.completed.fetch_add(1, Ordering::Relaxed);
    // SAFETY: a packet with a custom routine is freed by the driver, once.
    unsafe { sys::VmbPacketFree(pkt) };
}

fn setup(ch: VMBCHANNEL, d: &Driver) {
    let mut cbs = sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS::default();
    // SAFETY: the C helper's Rust twin on a live table.
    unsafe { sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(&mut cbs) };
    cbs.EvtChannelOpened = Some(ev_opened);
    cbs.EvtChannelClosed = Some(ev_closed);
    cbs.EvtChannelSuspend = Some(ev_suspend);
    cbs.EvtChannelStarted = Some(ev_started);
    cbs.EvtChannelPostStarted = Some(ev_post_started);
    // SAFETY: live channel and table; `d` outlives the channel.
    unsafe {
        assert_eq!(sys::VmbChannelInitSetStateChangeCallbacks(ch, &mut cbs), 0);
        assert_eq!(
            sys::VmbChannelInitSetProcessPacketCallbacks(ch, Some(process), None),
            0
        );
        sys::VmbChannelSetPointer(ch, d as *const Driver as PVOID);
    }
}

fn send(ch: VMBCHANNEL, d: &Driver, seq: u64) {
    let data = seq.to_le_bytes();
    // SAFETY: live channel; the packet pointer is the live `Driver`.
    unsafe {
        let p = sys::VmbPacketAllocate(ch);
        assert!(!p.is_null());
        sys::VmbPacketSetPointer(p, d as *const Driver as PVOID);
        sys::VmbPacketSetCompletionRoutine(p, Some(completion));
        let flags = sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
        assert_eq!(
            sys::VmbPacketSend(p, data.as_ptr() as PVOID, 8, std::ptr::null_mut(), flags),
            0
        );
    }
}

#[test]
fn c_abi_end_to_end() {
    let n: u64 = if cfg!(miri) { 100 } else { 10_000 };
    let bus = Bus::new();
    let (sd, cd) = (Driver::default(), Driver::default());
    let ty = GUID {
        Data1: 0x1111_2222,
        Data2: 3,
        Data3: 4,
        Data4: [5; 8],
    };
    let inst = GUID {
        Data1: 0x9999,
        ..ty
    };
    let (mut server, mut client): (VMBCHANNEL, VMBCHANNEL) =
        (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: plain KMCL calls with live arguments.
    unsafe {
        assert_eq!(
            sys::VmbChannelAllocate(bus.root_device(), 1, &mut server),
            0
        );
        assert_eq!(
            sys::VmbServerChannelInitSetTargetInterfaceId(server, ty, inst),
            0
        );
        setup(server, &sd);
        assert_eq!(sys::VmbChannelEnable(server), 0);
        sys::VmbChannelStart(server);

        assert_eq!(
            sys::VmbChannelAllocate(bus.guest_device(), 0, &mut client),
            0
        );
        assert_eq!(
            sys::VmbClientChannelInitSetTargetPnp(client, &ty, &inst, None),
            0
        );
        assert_eq!(
            sys::VmbClientChannelInitSetRingBufferPageCount(client, 8, 8),
            0
        );
        setup(client, &cd);
        assert_eq!(sys::VmbChannelEnable(client), 0);
    }
    bus.run_until_idle();
    assert_eq!(
        *sd.events.lock().unwrap(),
        ["opened", "started", "post_started"]
    );
    assert_eq!(
        *cd.events.lock().unwrap(),
        ["opened", "started", "post_started"]
    );

    // Packets with completions both ways.
    for seq in 0..n {
        send(client, &cd, seq);
        send(server, &sd, seq);
        if seq % 256 == 255 {
            bus.run_until_idle();
        }
    }
    bus.run_until_idle();
    assert_eq!(sd.received.load(Ordering::Relaxed) as u64, n);
    assert_eq!(cd.received.load(Ordering::Relaxed) as u64, n);
    assert_eq!(cd.completed.load(Ordering::Relaxed) as u64, n);
    assert_eq!(sd.completed.load(Ordering::Relaxed) as u64, n);
    assert_eq!(
        cd.bad_replies.load(Ordering::Relaxed) + sd.bad_replies.load(Ordering::Relaxed),
        0
    );

    // A synchronous request.
    let req = 41u64.to_le_bytes();
    let mut reply = [0u8; 8];
    let mut size = 8u32;
    // SAFETY: live buffers of the stated sizes.
    let st = unsafe {
        sys::VmbChannelSendSynchronousRequest(
            client,
            req.as_ptr() as PVOID,
            8,
            std::ptr::null_mut(),
            sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            reply.as_mut_ptr() as PVOID,
            &mut size,
            std::ptr::null_mut(),
        )
    };
    assert_eq!((st, size, u64::from_le_bytes(reply)), (0, 8, 42));

    // Pause the client: server traffic waits; resume: it drains.
    // SAFETY: live channel, not from a callback.
    unsafe { sys::VmbChannelPause(client) };
    let before = cd.received.load(Ordering::Relaxed);
    for seq in 0..10 {
        send(server, &sd, seq);
    }
    bus.run_until_idle();
    assert_eq!(cd.received.load(Ordering::Relaxed), before);
    // SAFETY: live channel.
    unsafe { sys::VmbChannelStart(client) };
    bus.run_until_idle();
    assert_eq!(cd.received.load(Ordering::Relaxed), before + 10);
    assert_eq!(sd.completed.load(Ordering::Relaxed) as u64, n + 10);

    // Rescind: the server disables its offer; the client sees suspend and closed.
    // SAFETY: live channel.
    unsafe { sys::VmbChannelDisable(server) };
    bus.run_until_idle();
    assert_eq!(
        *cd.events.lock().unwrap(),
        [
            "opened",
            "started",
            "post_started",
            "suspend",
            "started",
            "post_started",
            "suspend",
            "closed"
        ]
    );
    // SAFETY: live channels, disabled before cleanup.
    unsafe {
        sys::VmbChannelDisable(client);
        sys::VmbChannelCleanup(client);
        sys::VmbChannelCleanup(server);
    }
    bus.assert_no_leaks();
}
