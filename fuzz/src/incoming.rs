//! The wrapper's incoming-packet path, fed what a hostile guest and a misbehaving KMCL could
//! hand it: arbitrary payload bytes, a `BufferLength` shorter than the bytes or a NULL buffer
//! with any length, arbitrary `Flags` bits, and any answer of `VmbChannelPacketGetExternalData`
//! (an MDL, success without one, `STATUS_PENDING`, any other status).
//!
//! A server channel is allocated through a copy of the sim's server table whose receive entries
//! are replaced by checking fakes, and its process-packet trampoline (the crate's own) is called
//! directly, as KMCL calls it. The handler, written with the safe API, reads the payload with
//! every reader, asks for the external data and answers as the input says: complete with data,
//! a typed response or nothing, fail, defer, detach (answered later) or drop. The fakes check
//! the KMCL rules the token types promise: exactly one answer per delivery, none after
//! `STATUS_PENDING`, defer only inline, external data asked once it is ready; the handler
//! checks that every reader returns what the bytes and the length say.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Mutex, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use vmbus_kmcl::channel::{ChannelSlot, Handler, OpenView, Server, ServerBuilder};
use vmbus_kmcl::dispatch::ServerInterface;
use vmbus_kmcl::packet::{
    read_exact, read_prefix, DeferredPacket, ExternalData, ExternalDataFlags, IncomingPacket,
    PayloadError,
};
use vmbus_kmcl::Error;
use vmbus_kmcl_sim::{Bus, SimMdl};
use vmbus_kmcl_sys::{
    NTSTATUS, PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESS_PACKET, PMDL, PVOID,
    VMBCHANNEL, VMBPACKETCOMPLETION,
};

const STATUS_PENDING: NTSTATUS = 0x103;

/// What the fake `VmbChannelPacketGetExternalData` answers.
#[derive(Arbitrary, Debug, Clone)]
enum ExternalAnswer {
    /// `STATUS_SUCCESS` with an MDL over these bytes.
    Mdl(Vec<u8>),
    /// `STATUS_SUCCESS` and no MDL.
    SuccessWithoutMdl,
    /// `STATUS_PENDING`.
    Pending,
    /// Any status.
    Status(i32),
}

/// How the handler answers.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Answer {
    CompleteData,
    CompleteWith,
    CompleteEmpty,
    Fail,
    Defer,
    Detach,
    Drop,
}

/// How a detached token is answered later.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum LaterAnswer {
    CompleteEmpty,
    CompleteWith,
    Fail,
    Drop,
}

/// How the payload is passed.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Length {
    /// `BufferLength` is the byte count.
    Exact,
    /// `BufferLength` is at most the byte count.
    Shorter(u16),
    /// A NULL buffer with this length.
    Null(u32),
}

#[derive(Arbitrary, Debug, Clone)]
struct Delivery {
    payload: Vec<u8>,
    length: Length,
    flags: u32,
    external: ExternalAnswer,
    ask_external: Option<bool>,
    ask_twice: bool,
    answer: Answer,
    /// Answers for the tokens detached so far (one per held token, oldest first).
    later: Vec<LaterAnswer>,
}

/// Where a fake delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// External data returned this MDL.
    Ready(usize),
    /// External data returned `STATUS_PENDING`: no answer may follow.
    Pending,
    Answered,
}

#[derive(Default)]
struct Fake {
    deliveries: HashMap<usize, State>,
    /// The delivery being processed (the trampoline is running).
    inline: Option<usize>,
    external: Option<ExternalAnswer>,
    /// MDLs handed out; alive until the end of the input.
    mdls: Vec<SimMdl>,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
    static PLAN: RefCell<Option<Delivery>> = const { RefCell::new(None) };
}

fn answer(packet: VMBPACKETCOMPLETION, what: &str) {
    FAKE.with_borrow_mut(|f| {
        // CAST: the fake deliveries are keyed by address.
        let key = packet as usize;
        match f.deliveries.get(&key).copied() {
            None => panic!("{what} on a packet KMCL never delivered"),
            Some(State::Answered) => panic!("{what} on a packet already answered"),
            Some(State::Pending) => panic!("{what} after STATUS_PENDING (KMCL redelivers it)"),
            Some(State::Open | State::Ready(_)) => {}
        }
        if what == "VmbChannelPacketDeferToPassive" && f.inline != Some(key) {
            panic!("VmbChannelPacketDeferToPassive outside the packet's callback");
        }
        f.deliveries.insert(key, State::Answered);
    });
}

unsafe extern "C" fn complete(p: VMBPACKETCOMPLETION, buffer: PVOID, len: u32) {
    if len > 0 {
        assert!(!buffer.is_null(), "a completion of {len} bytes from NULL");
    }
    answer(p, "VmbChannelPacketComplete");
}

unsafe extern "C" fn fail(p: VMBPACKETCOMPLETION) {
    answer(p, "VmbChannelPacketFail");
}

unsafe extern "C" fn defer(p: VMBPACKETCOMPLETION) {
    answer(p, "VmbChannelPacketDeferToPassive");
}

unsafe extern "C" fn external(p: VMBPACKETCOMPLETION, flags: u32, mdl: *mut PMDL) -> NTSTATUS {
    assert!(flags <= 1, "undefined external-data flags {flags:#x}");
    assert!(!mdl.is_null(), "no place for the MDL");
    FAKE.with_borrow_mut(|f| {
        // CAST: keyed by address.
        let key = p as usize;
        match f.deliveries.get(&key).copied() {
            Some(State::Open) => {}
            other => panic!("VmbChannelPacketGetExternalData in state {other:?}"),
        }
        match f.external.clone().expect("a delivery is running") {
            ExternalAnswer::Mdl(bytes) => {
                let m = SimMdl::from_bytes(&bytes);
                // SAFETY: `mdl` is a valid out-pointer (the wrapper passes a live local).
                unsafe { mdl.write(m.as_pmdl()) };
                f.deliveries.insert(key, State::Ready(m.as_pmdl() as usize));
                f.mdls.push(m);
                0
            }
            ExternalAnswer::SuccessWithoutMdl => 0,
            ExternalAnswer::Pending => {
                f.deliveries.insert(key, State::Pending);
                STATUS_PENDING
            }
            ExternalAnswer::Status(s) => {
                if s == STATUS_PENDING {
                    f.deliveries.insert(key, State::Pending);
                }
                s
            }
        }
    })
}

static TRAMPOLINE: Mutex<PFN_VMB_CHANNEL_PROCESS_PACKET> = Mutex::new(None);

unsafe extern "C" fn set_callbacks(
    channel: VMBCHANNEL,
    process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET,
    processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NTSTATUS {
    *TRAMPOLINE.lock().unwrap_or_else(|e| e.into_inner()) = process_packet;
    // SAFETY: forwards the caller's arguments.
    unsafe {
        vmbus_kmcl_sim::exports::VmbChannelInitSetProcessPacketCallbacks(
            channel,
            process_packet,
            processing_complete,
        )
    }
}

/// The sim's server table with the receive entries replaced by the checking fakes.
fn table() -> &'static ServerInterface {
    static TABLE: OnceLock<ServerInterface> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut raw = vmbus_kmcl_sim::server_interface();
        let client = &mut raw.ClientMethods;
        client.VmbChannelInitSetProcessPacketCallbacks = Some(set_callbacks);
        client.VmbChannelPacketComplete = Some(complete);
        client.VmbChannelPacketFail = Some(fail);
        client.VmbChannelPacketDeferToPassive = Some(defer);
        client.VmbChannelPacketGetExternalData = Some(external);
        // SAFETY: a filled server table holding one reference, handed over; every replaced
        // entry is called only for the fake deliveries of this module.
        unsafe { ServerInterface::from_raw(raw) }.expect("the sim fills every entry")
    })
}

type Backend = &'static ServerInterface;

/// The handler: checks every reader against the plan, then answers as planned.
#[derive(Default)]
struct Checker {
    detached: Mutex<Vec<DeferredPacket<Backend>>>,
}

impl Checker {
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<DeferredPacket<Backend>>> {
        self.detached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_readers(packet: &IncomingPacket<'_, Backend>, expected: &[u8]) {
    assert_eq!(packet.data(), expected);
    assert_eq!(packet.len(), expected.len());
    assert_eq!(packet.is_empty(), expected.is_empty());
    let n = expected.len();
    match packet.read::<[u8; 16]>() {
        Ok((v, rest)) => {
            assert_eq!(v[..], expected[..16]);
            assert_eq!(rest, &expected[16..]);
        }
        Err(e) => assert_eq!(
            e,
            PayloadError::TooShort {
                needed: 16,
                available: n
            }
        ),
    }
    match packet.read_exact::<u64>() {
        Ok(v) => assert_eq!(v.to_ne_bytes()[..], expected[..]),
        Err(PayloadError::TooShort {
            needed: 8,
            available,
        }) => assert!(available < 8 && available == n),
        Err(PayloadError::TrailingBytes {
            expected: 8,
            actual,
        }) => assert!(actual > 8 && actual == n),
        Err(e) => panic!("read_exact::<u64> of {n} bytes: {e:?}"),
    }
    // Walk the payload as a chain of 3-byte records, then the tail.
    let mut rest = packet.data();
    while let Ok((record, tail)) = read_prefix::<[u8; 3]>(rest) {
        assert_eq!(record[..], rest[..3]);
        rest = tail;
    }
    assert!(rest.len() < 3);
    assert_eq!(read_exact::<[u8; 0]>(&[]), Ok([]));
}

impl Handler<Server, Backend> for Checker {
    fn process_packet(
        &self,
        _: &OpenView<'_, Server, Backend>,
        packet: IncomingPacket<'_, Backend>,
    ) {
        let plan = PLAN
            .with_borrow(|p| p.clone())
            .expect("a plan for each delivery");
        let expected: &[u8] = match plan.length {
            Length::Exact => &plan.payload,
            Length::Shorter(n) => &plan.payload[..usize::from(n).min(plan.payload.len())],
            Length::Null(_) => &[],
        };
        check_readers(&packet, expected);
        assert_eq!(packet.flags().bits(), plan.flags);
        let mut pending = false;
        if let Some(read_only) = plan.ask_external {
            let flags = if read_only {
                ExternalDataFlags::READ_ONLY
            } else {
                ExternalDataFlags::empty()
            };
            let asks = if plan.ask_twice { 2 } else { 1 };
            for _ in 0..asks {
                match packet.external_data(flags) {
                    Err(Error::NoExternalData) => assert_eq!(plan.flags & 1, 0),
                    Err(_) => {}
                    Ok(ExternalData::Pending) => pending = true,
                    Ok(ExternalData::Ready(view)) => {
                        let state = FAKE
                            .with_borrow(|f| f.inline.and_then(|k| f.deliveries.get(&k).copied()));
                        // CAST: compared by address.
                        assert_eq!(state, Some(State::Ready(view.as_raw() as usize)));
                        if let ExternalAnswer::Mdl(bytes) = &plan.external {
                            // SAFETY: the MDL is alive until the end of the input.
                            let seen = unsafe { vmbus_kmcl_sim::mdl_read(view.as_raw()) };
                            assert_eq!(seen.as_deref(), Some(&bytes[..]));
                        }
                    }
                }
            }
        }
        let _ = pending;
        match plan.answer {
            Answer::CompleteData => {
                let echo = packet.data().to_vec();
                packet.complete(&echo).expect("short echo");
            }
            Answer::CompleteWith => packet.complete_with(&0x1234_5678_u64),
            Answer::CompleteEmpty => packet.complete_empty(),
            Answer::Fail => packet.fail(),
            Answer::Defer => packet.defer_to_passive(),
            Answer::Detach => self.held().push(packet.detach()),
            Answer::Drop => drop(packet),
        }
    }
}

fn answer_later(token: DeferredPacket<Backend>, how: LaterAnswer) {
    let _ = token.flags();
    let _ = token.external_data();
    match how {
        LaterAnswer::CompleteEmpty => token.complete_empty(),
        LaterAnswer::CompleteWith => token.complete_with(&[7u8; 12]),
        LaterAnswer::Fail => token.fail(),
        LaterAnswer::Drop => drop(token),
    }
}

/// One input: a sequence of deliveries to one channel, then every delivery must be answered
/// exactly once (or have had its external data pending).
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let bus = Bus::new();
    FAKE.with_borrow_mut(|f| *f = Fake::default());
    let mut slot = pin!(ChannelSlot::new(
        crate::root(&bus),
        table(),
        Checker::default()
    ));
    let builder = ServerBuilder::allocate(slot.as_mut()).expect("allocate");
    let channel = builder.as_raw();
    let trampoline = TRAMPOLINE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .expect("allocate registers the trampoline");
    let mut next = 0x5a00_0000_usize;
    for _ in 0..32 {
        let Ok(plan) = Delivery::arbitrary(&mut u) else {
            break;
        };
        // Detached tokens from earlier deliveries, answered as this delivery says.
        let held: Vec<_> = builder.handler().held().drain(..).collect();
        let mut later = plan.later.iter().copied();
        for token in held {
            match later.next() {
                Some(how) => answer_later(token, how),
                None => builder.handler().held().push(token),
            }
        }
        next += 16;
        let packet: VMBPACKETCOMPLETION = std::ptr::without_provenance_mut(next);
        let (buffer, length): (PVOID, u32) = match plan.length {
            Length::Exact => (
                plan.payload.as_ptr().cast_mut().cast(),
                plan.payload.len() as u32,
            ),
            Length::Shorter(n) => (
                plan.payload.as_ptr().cast_mut().cast(),
                u32::from(n).min(plan.payload.len() as u32),
            ),
            Length::Null(n) => (std::ptr::null_mut(), n),
        };
        FAKE.with_borrow_mut(|f| {
            f.deliveries.insert(next, State::Open);
            f.inline = Some(next);
            f.external = Some(plan.external.clone());
        });
        let flags = plan.flags;
        PLAN.with_borrow_mut(|p| *p = Some(plan));
        // SAFETY: KMCL's call: the channel the trampoline was registered for, a fresh non-NULL
        // packet handle answered only through the fakes above, a payload readable for `length`
        // bytes (or NULL), for the duration of the call.
        unsafe { trampoline(channel, packet, buffer, length, flags) };
        FAKE.with_borrow_mut(|f| f.inline = None);
        let state = FAKE.with_borrow(|f| f.deliveries.get(&next).copied());
        let detached = builder.handler().held().len();
        assert!(
            matches!(state, Some(State::Answered | State::Pending)) || detached > 0,
            "a delivery left unanswered and not detached: {state:?}"
        );
    }
    for token in builder.handler().held().drain(..) {
        token.complete_empty();
    }
    FAKE.with_borrow(|f| {
        for (k, s) in &f.deliveries {
            assert!(
                matches!(s, State::Answered | State::Pending),
                "delivery {k:#x} ended in {s:?}"
            );
        }
    });
    drop(builder);
    FAKE.with_borrow_mut(|f| *f = Fake::default());
    bus.assert_no_leaks();
}
