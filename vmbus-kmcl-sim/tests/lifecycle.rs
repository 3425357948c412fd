//! Channel lifecycle against the documented KMCL state model: pairing by GUIDs, the order
//! of the state callbacks, pause/start, disable/rescind, re-enable, and opening failures.
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests drive sequences of raw KMCL calls whose preconditions are the same: live \
              channels and buffers owned by the test, stated once per block"
)]

mod common;

use std::sync::Mutex;

use common::*;
use vmbus_kmcl_sim::status::*;
use vmbus_kmcl_sim::{Bus, ChannelState};
use vmbus_kmcl_sys::*;

#[test]
fn open_runs_opened_started_post_started_in_order() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    assert_eq!(s.ctx.log(), ["opened", "started", "post_started"]);
    assert_eq!(c.ctx.log(), ["opened", "started", "post_started"]);
    assert_eq!(bus.channel_info(s.ch).unwrap().state, ChannelState::Open);
    assert!(bus.channel_info(c.ch).unwrap().running);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn enable_does_not_wait_for_the_peer() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    // SAFETY: live channels.
    unsafe {
        assert_eq!(VmbChannelEnable(s.ch), 0);
        VmbChannelStart(s.ch);
        assert_eq!(VmbChannelEnable(c.ch), 0);
    }
    // Nothing ran yet: opening is asynchronous.
    assert!(s.ctx.log().is_empty() && c.ctx.log().is_empty());
    assert_eq!(
        bus.channel_info(c.ch).unwrap().state,
        ChannelState::Connecting
    );
    bus.run_until_idle();
    assert_eq!(c.ctx.log(), ["opened", "started", "post_started"]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn client_enabled_first_waits_for_the_offer() {
    let bus = Bus::new();
    let c = client(&bus);
    // SAFETY: live channel.
    assert_eq!(unsafe { VmbChannelEnable(c.ch) }, 0);
    bus.run_until_idle();
    assert!(c.ctx.log().is_empty());
    assert_eq!(bus.channel_info(c.ch).unwrap().state, ChannelState::Enabled);
    let s = server(&bus);
    // SAFETY: live channel.
    unsafe {
        assert_eq!(VmbChannelEnable(s.ch), 0);
        VmbChannelStart(s.ch);
    }
    bus.run_until_idle();
    assert_eq!(c.ctx.log(), ["opened", "started", "post_started"]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn server_stays_paused_until_started() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    // SAFETY: live channels.
    unsafe {
        assert_eq!(VmbChannelEnable(s.ch), 0);
        assert_eq!(VmbChannelEnable(c.ch), 0);
    }
    bus.run_until_idle();
    assert_eq!(s.ctx.log(), ["opened"]);
    assert_eq!(c.ctx.log(), ["opened", "started", "post_started"]);
    // SAFETY: live channel.
    unsafe { VmbChannelStart(s.ch) };
    bus.run_until_idle();
    assert_eq!(s.ctx.log(), ["opened", "started", "post_started"]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn client_targets_by_type_and_instance() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    // Re-target the client at another instance: it must not open this offer.
    let ty = guid(TYPE);
    let other = guid(INSTANCE + 1);
    // SAFETY: live channel, readable GUIDs.
    unsafe {
        assert_eq!(VmbClientChannelInitSetTargetPnp(c.ch, &ty, &other, None), 0);
    }
    open(&bus, &s, &c);
    assert!(c.ctx.log().is_empty());
    teardown(&[&c]);
    // The right instance opens; the instance is reported to the client.
    let c2 = client(&bus);
    let inst = guid(INSTANCE);
    // SAFETY: as above.
    unsafe {
        assert_eq!(VmbClientChannelInitSetTargetPnp(c2.ch, &ty, &inst, None), 0);
        assert_eq!(VmbChannelEnable(c2.ch), 0);
    }
    bus.run_until_idle();
    assert_eq!(c2.ctx.log()[0], "opened");
    let mut got = GUID::default();
    // SAFETY: writable GUID.
    unsafe { VmbChannelGetInterfaceInstance(c2.ch, &mut got) };
    assert_eq!(got, inst);
    teardown(&[&c2, &s]);
    bus.assert_no_leaks();
}

#[test]
fn pause_runs_suspend_and_start_restarts_flow() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel, not from a callback.
    unsafe { VmbChannelPause(c.ch) };
    assert_eq!(c.ctx.log().last().unwrap(), "suspend");
    assert!(bus.channel_info(c.ch).unwrap().paused);
    // Packets for a paused channel wait in the ring.
    assert_eq!(send_default(&s, b"x", WAIT), 0);
    bus.run_until_idle();
    assert!(c.ctx.payloads.lock().unwrap().is_empty());
    // SAFETY: live channel.
    unsafe { VmbChannelStart(c.ch) };
    bus.run_until_idle();
    assert_eq!(
        c.ctx.log(),
        [
            "opened",
            "started",
            "post_started",
            "suspend",
            "started",
            "post_started"
        ]
    );
    assert_eq!(c.ctx.payloads.lock().unwrap().len(), 1);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn pause_waits_for_held_packets_to_be_completed() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    c.ctx.mode.store(HOLD, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(send_default(&s, b"held", WAIT), 0);
    bus.run_until_idle();
    assert_eq!(c.ctx.held.lock().unwrap().len(), 1);
    let held = c.ctx.take_held();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: completing the held packet once.
        unsafe {
            VmbChannelPacketComplete(
                std::ptr::without_provenance_mut(held[0]),
                std::ptr::null_mut(),
                0,
            )
        };
    });
    let t0 = std::time::Instant::now();
    // SAFETY: live channel.
    unsafe { VmbChannelPause(c.ch) };
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(40),
        "pause returned early"
    );
    t.join().unwrap();
    assert_eq!(bus.channel_info(c.ch).unwrap().outstanding_incoming, 0);
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn pause_that_would_block_forever_is_reported() {
    let bus = Bus::new();
    bus.set_block_limit(std::time::Duration::from_millis(20));
    let (s, c) = pair(&bus);
    c.ctx.mode.store(HOLD, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(send_default(&s, b"held", WAIT), 0);
    bus.run_until_idle();
    // SAFETY: live channel.
    unsafe { VmbChannelPause(c.ch) };
    let v = bus.take_violations();
    assert!(v.iter().any(|m| m.contains("VmbChannelPause")), "{v:?}");
    complete_held(&c);
    bus.run_until_idle();
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn pause_while_disabled_arms_coming_up_paused() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    // SAFETY: live channel.
    unsafe { VmbChannelPause(c.ch) };
    open(&bus, &s, &c);
    assert_eq!(c.ctx.log(), ["opened"]);
    assert!(bus.channel_info(c.ch).unwrap().paused);
    // SAFETY: live channel.
    unsafe { VmbChannelStart(c.ch) };
    bus.run_until_idle();
    assert_eq!(c.ctx.log(), ["opened", "started", "post_started"]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn client_disable_suspends_then_closes_both_sides() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    unsafe { VmbChannelDisable(c.ch) };
    assert_eq!(c.ctx.log()[3..], ["suspend", "closed"]);
    bus.run_until_idle();
    assert_eq!(s.ctx.log()[3..], ["suspend", "closed"]);
    assert_eq!(
        bus.channel_info(c.ch).unwrap().state,
        ChannelState::Disabled
    );
    // The server's offer stays up: a re-enabled client opens it again.
    assert_eq!(bus.channel_info(s.ch).unwrap().state, ChannelState::Enabled);
    // SAFETY: live channel.
    assert_eq!(unsafe { VmbChannelEnable(c.ch) }, 0);
    bus.run_until_idle();
    assert_eq!(c.ctx.log()[5..], ["opened", "started", "post_started"]);
    assert_eq!(s.ctx.log()[5..], ["opened", "started", "post_started"]);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn server_rescind_closes_the_client_which_must_reenable() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: live channel.
    unsafe { VmbChannelDisable(s.ch) };
    assert_eq!(s.ctx.log()[3..], ["suspend", "closed"]);
    bus.run_until_idle();
    assert_eq!(c.ctx.log()[3..], ["suspend", "closed"]);
    assert_eq!(
        bus.channel_info(c.ch).unwrap().state,
        ChannelState::Disabled
    );
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn failing_opened_rolls_back_without_traffic() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    c.ctx
        .opened_status
        .store(STATUS_UNSUCCESSFUL, std::sync::atomic::Ordering::SeqCst);
    open(&bus, &s, &c);
    assert_eq!(c.ctx.log(), ["opened"]);
    // The server had opened (its flow never started); it sees the pairing go away.
    assert_eq!(s.ctx.log(), ["opened", "closed"]);
    assert_ne!(bus.channel_info(c.ch).unwrap().state, ChannelState::Open);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

static PNP: std::sync::Mutex<Vec<NTSTATUS>> = std::sync::Mutex::new(Vec::new());

unsafe extern "C" fn pnp_failure(_ch: VMBCHANNEL, status: NTSTATUS) {
    PNP.lock().unwrap().push(status);
}

#[test]
fn pnp_failure_callback_reports_injected_open_failure() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    let ty = guid(TYPE);
    // SAFETY: live channel, readable GUID.
    unsafe {
        assert_eq!(
            VmbClientChannelInitSetTargetPnp(c.ch, &ty, std::ptr::null(), Some(pnp_failure)),
            0
        )
    };
    bus.fail_next_open(STATUS_INSUFFICIENT_RESOURCES);
    open(&bus, &s, &c);
    assert_eq!(*PNP.lock().unwrap(), [STATUS_INSUFFICIENT_RESOURCES]);
    assert!(c.ctx.log().is_empty());
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn offer_for_another_vtl_is_invisible() {
    let bus = Bus::new();
    let s = server(&bus);
    // SAFETY: live channel.
    assert_eq!(unsafe { VmbServerChannelInitSetTargetVtl(s.ch, 2) }, 0);
    let c = client(&bus);
    open(&bus, &s, &c);
    assert!(c.ctx.log().is_empty());
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn state_calls_from_state_callbacks_are_violations() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    static CH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    unsafe extern "C" fn pause_in_started(ch: VMBCHANNEL) {
        CH.store(ch as usize, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: a deliberate misuse; the sim reports it and returns.
        unsafe { VmbChannelPause(ch) };
    }
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
    cbs.EvtChannelStarted = Some(pause_in_started);
    // SAFETY: live channel and table.
    unsafe { assert_eq!(VmbChannelInitSetStateChangeCallbacks(c.ch, &mut cbs), 0) };
    open(&bus, &s, &c);
    let v = bus.take_violations();
    assert!(
        v.iter()
            .any(|m| m.contains("VmbChannelPause called from inside")),
        "{v:?}"
    );
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn cleanup_of_an_enabled_channel_is_reported_and_stale_handles_too() {
    let bus = Bus::new();
    let (s, c) = pair(&bus);
    // SAFETY: deliberate misuse: cleanup without disable.
    unsafe { VmbChannelCleanup(c.ch) };
    let v = bus.take_violations();
    assert!(v.iter().any(|m| m.contains("not disabled")), "{v:?}");
    // Use after cleanup.
    // SAFETY: deliberate misuse; the handle is only decoded, never dereferenced.
    unsafe { VmbChannelStart(c.ch) };
    // SAFETY: as above.
    let st = unsafe { VmbChannelInitSetFlags(c.ch, 0) };
    assert_eq!(st, STATUS_INVALID_PARAMETER_1);
    let v = bus.take_violations();
    assert!(
        v.len() == 2 && v.iter().all(|m| m.contains("stale VMBCHANNEL")),
        "{v:?}"
    );
    bus.run_until_idle();
    teardown(&[&s]);
    bus.assert_no_leaks();
}

#[test]
#[should_panic(expected = "not clean")]
fn leaked_channel_fails_the_leak_check() {
    let bus = Bus::new();
    let _s = server(&bus);
    bus.assert_no_leaks();
}

#[test]
fn dropping_a_bus_with_a_leak_panics() {
    let r = std::panic::catch_unwind(|| {
        let bus = Bus::new();
        let _c = client(&bus);
        drop(bus);
    });
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("dropped while not clean") && msg.contains("channels: 1"),
        "{msg}"
    );
}

static STARTED_SENDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe extern "C" fn send_in_started(ch: VMBCHANNEL) {
    // Queueing from EvtChannelStarted is allowed (waiting is not).
    let data = *b"hello-from-started";
    // SAFETY: live channel and buffer; the default routine frees the packet.
    let st = unsafe {
        let p = VmbPacketAllocate(ch);
        VmbPacketSend(
            p,
            data.as_ptr() as PVOID,
            data.len() as u32,
            std::ptr::null_mut(),
            WAIT,
        )
    };
    assert_eq!(st, 0);
    STARTED_SENDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn sending_from_started_is_queued_and_delivered() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
    cbs.EvtChannelStarted = Some(send_in_started);
    // SAFETY: live channel and table.
    unsafe { assert_eq!(VmbChannelInitSetStateChangeCallbacks(c.ch, &mut cbs), 0) };
    open(&bus, &s, &c);
    assert_eq!(STARTED_SENDS.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        *s.ctx.payloads.lock().unwrap(),
        [b"hello-from-started".to_vec()]
    );
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn run_at_most_bounds_the_work_done() {
    let bus = Bus::new();
    let s = server(&bus);
    let c = client(&bus);
    // SAFETY: live channels.
    unsafe {
        assert_eq!(VmbChannelEnable(s.ch), 0);
        VmbChannelStart(s.ch);
        assert_eq!(VmbChannelEnable(c.ch), 0);
    }
    assert_eq!(bus.run_at_most(1), 1);
    assert_eq!(s.ctx.log(), ["opened"]);
    assert!(c.ctx.log().is_empty());
    assert!(bus.run_until_idle() > 0);
    teardown(&[&c, &s]);
    bus.assert_no_leaks();
}

#[test]
fn accounting_is_per_bus() {
    let a = Bus::new();
    let b = Bus::new();
    let (s, c) = pair(&a);
    let (s2, c2) = pair(&b);
    // A misuse on bus `a` is recorded on `a` only.
    // SAFETY: deliberate misuse (quota 0).
    unsafe { VmbChannelSetTransactionQuota(s.ch, 0) };
    assert_eq!(b.leak_report().violations.len(), 0);
    assert_eq!(a.take_violations().len(), 1);
    // Channels of one bus never pair with the other's.
    assert_eq!(s.ctx.log().len(), 3);
    assert_eq!(s2.ctx.log().len(), 3);
    teardown(&[&c, &s, &c2, &s2]);
    a.assert_no_leaks();
    b.assert_no_leaks();
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

/// The void exports that take a `VMBCHANNEL`.
const CHANNEL_VOIDS: [&str; 10] = [
    "VmbChannelCleanup",
    "VmbChannelDisable",
    "VmbChannelPause",
    "VmbChannelStart",
    "VmbChannelSetPointer",
    "VmbChannelSetIncomingProcessingAtPassive",
    "VmbChannelSetTransactionQuota",
    "VmbChannelDeleteGpadl",
    "VmbChannelUnmapGpadl",
    "VmbChannelSaveEnd",
];

fn call_channel_void(name: &str, c: VMBCHANNEL) {
    // SAFETY: these exports only decode the channel handle (never dereference it) and take no
    // other pointer the sim reads; NULL and forged values are what they must reject.
    unsafe {
        match name {
            "VmbChannelCleanup" => VmbChannelCleanup(c),
            "VmbChannelDisable" => VmbChannelDisable(c),
            "VmbChannelPause" => VmbChannelPause(c),
            "VmbChannelStart" => VmbChannelStart(c),
            "VmbChannelSetPointer" => VmbChannelSetPointer(c, std::ptr::null_mut()),
            "VmbChannelSetIncomingProcessingAtPassive" => {
                VmbChannelSetIncomingProcessingAtPassive(c, 1);
            }
            "VmbChannelSetTransactionQuota" => VmbChannelSetTransactionQuota(c, 4),
            "VmbChannelDeleteGpadl" => VmbChannelDeleteGpadl(c, 1),
            "VmbChannelUnmapGpadl" => VmbChannelUnmapGpadl(c, 1),
            "VmbChannelSaveEnd" => VmbChannelSaveEnd(c),
            _ => unreachable!("{name}"),
        }
    }
}

fn not_a_live_bus(name: &str, value: usize) -> String {
    format!("{name}: {value:#x} is not a handle of a live sim bus (forged, or its bus was dropped)")
}

#[test]
fn void_channel_exports_record_null_and_forged_handles() {
    // A handle whose bus is gone.
    let dropped = {
        let gone = Bus::new();
        let s = server(&gone);
        teardown(&[&s]);
        gone.assert_no_leaks();
        s.ch
    };
    let bus = Bus::new();
    let s = server(&bus);
    let live = s.ch.addr();
    // Garbage, and a well-formed handle naming a bus id no bus has.
    let garbage = 0x1234_5670_usize;
    let foreign = live | (0xF_FFFF << 36);
    // The live handle with another generation; the bus's own device object as a channel.
    let forged = live ^ 0x8000;
    let wrong_kind = bus.guest_device().addr();
    for name in CHANNEL_VOIDS {
        let orphans = orphans_of(|| call_channel_void(name, std::ptr::null_mut()));
        assert_eq!(orphans, [format!("{name}: NULL handle")]);
        let orphans = orphans_of(|| {
            call_channel_void(name, std::ptr::without_provenance_mut(garbage));
        });
        assert_eq!(orphans, [not_a_live_bus(name, garbage)]);
        let orphans = orphans_of(|| {
            call_channel_void(name, std::ptr::without_provenance_mut(foreign));
        });
        assert_eq!(orphans, [not_a_live_bus(name, foreign)]);
        let orphans = orphans_of(|| call_channel_void(name, dropped));
        assert_eq!(orphans, [not_a_live_bus(name, dropped.addr())]);
        assert!(bus.take_violations().is_empty());

        // Handles naming this live bus are charged to it, not to the orphan list.
        let orphans = orphans_of(|| {
            call_channel_void(name, std::ptr::without_provenance_mut(forged));
        });
        assert!(orphans.is_empty(), "{orphans:?}");
        let v = bus.take_violations();
        assert!(
            v.len() == 1 && v[0].starts_with(name) && v[0].contains("stale VMBCHANNEL"),
            "{name}: {v:?}"
        );
        let orphans = orphans_of(|| {
            call_channel_void(name, std::ptr::without_provenance_mut(wrong_kind));
        });
        assert!(orphans.is_empty(), "{orphans:?}");
        let v = bus.take_violations();
        assert_eq!(
            v,
            [format!(
                "{name}: {wrong_kind:#x} is not a VMBCHANNEL (a handle of another kind, or forged)"
            )]
        );
    }
    // The real channel was never touched.
    assert_eq!(
        bus.channel_info(s.ch).unwrap().state,
        ChannelState::Disabled
    );
    teardown(&[&s]);
    bus.assert_no_leaks();
}
