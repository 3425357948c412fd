//! The echo VSP target's checked-in seeds: each runs clean under the hostile guest, and
//! together they reach the version negotiation, the echo paths (a GPADL the guest shares
//! included), the refusals and the failure of a malformed packet. The GPADL seeds are written
//! from the actions below (`FUZZ_WRITE_SEEDS=1` rewrites them). Also: every well-formed
//! request the target encodes parses as the request it was built from.

use std::fs;

use arbitrary::{Arbitrary, Unstructured};
use echo_protocol::{Request, Version, MAX_PAYLOAD};
use vmbus_kmcl_fuzz::echo_vsp::{encode, run, EchoRequest, Tally};
use vmbus_kmcl_sim::fuzz::{Action, GpadlRef, GuestGpadls, SendKind};

#[test]
fn the_seeds_run_clean_and_reach_every_answer_of_the_vsp() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/echo_vsp");
    let mut total = Tally::default();
    let mut seeds = 0;
    for entry in fs::read_dir(dir).expect("the seed directory") {
        let data = fs::read(entry.expect("a seed").path()).expect("a readable seed");
        let t = run(&data);
        total.versions += t.versions;
        total.echoes += t.echoes;
        total.gpadl_bytes += t.gpadl_bytes;
        total.refused += t.refused;
        total.failed += t.failed;
        total.gpadl_echoes.extend(t.gpadl_echoes);
        seeds += 1;
    }
    assert!(seeds >= 4, "only {seeds} seeds");
    assert!(total.gpadl_bytes > 0, "{total:?}");
    assert!(!total.gpadl_echoes.is_empty(), "{total:?}");
    assert!(total.versions > 0, "{total:?}");
    assert!(total.echoes > 0, "{total:?}");
    assert!(total.refused > 0, "{total:?}");
    assert!(total.failed > 0, "{total:?}");
}

#[test]
fn every_encoded_request_parses_back() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut seen = [0usize; 4];
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..600)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let Ok(request) = EchoRequest::arbitrary(&mut Unstructured::new(&bytes)) else {
            continue;
        };
        let mut wire = Vec::new();
        let gpadls = GuestGpadls::none();
        encode(&request, &gpadls, &mut wire);
        let parsed = Request::parse(&wire);
        seen[match request {
            EchoRequest::Version { .. } => 0,
            EchoRequest::CurrentVersion { .. } => 1,
            EchoRequest::Inline { .. } => 2,
            EchoRequest::Gpadl { .. } => 3,
        }] += 1;
        match (&request, parsed) {
            (
                EchoRequest::Version {
                    sequence,
                    major,
                    minor,
                },
                Ok(Request::Version {
                    sequence: s,
                    offered,
                }),
            ) => {
                assert_eq!(
                    (s, offered.major, offered.minor),
                    (*sequence, *major, *minor)
                )
            }
            (
                EchoRequest::CurrentVersion { sequence },
                Ok(Request::Version {
                    sequence: s,
                    offered,
                }),
            ) => assert_eq!((s, offered), (*sequence, Version::CURRENT)),
            (
                EchoRequest::Inline { sequence, payload },
                Ok(Request::Inline {
                    sequence: s,
                    payload: p,
                }),
            ) => {
                assert_eq!(s, *sequence);
                assert_eq!(p, &payload[..payload.len().min(MAX_PAYLOAD)]);
            }
            (
                EchoRequest::Gpadl {
                    sequence,
                    gpadl,
                    offset,
                    length,
                },
                Ok(Request::Gpadl {
                    sequence: s,
                    gpadl: g,
                    offset: o,
                    length: l,
                }),
            ) => assert_eq!(
                (s, g, o, l),
                (
                    *sequence,
                    gpadls.handle(*gpadl),
                    *offset,
                    length % (MAX_PAYLOAD as u32 + 1)
                )
            ),
            (request, parsed) => panic!("{request:?} encoded as {wire:?} parsed as {parsed:?}"),
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "variants seen: {seen:?}");
}

// ----- The GPADL seeds -----

/// The bytes `arbitrary` decodes into `actions` (arbitrary 1.x's layout: an enum is a `u32`
/// tag scaled to the variant count, integers little endian, a bool one byte, a `Vec` each
/// element after a byte 1 and a byte 0 at its end). Only the variants the seeds use.
fn encode_actions(actions: &[Action<EchoRequest>]) -> Vec<u8> {
    let mut out = Vec::new();
    for action in actions {
        match action {
            Action::Request { request, kind } => {
                tag(&mut out, 0, ACTIONS);
                encode_request(&mut out, request);
                match kind {
                    SendKind::NoWait => tag(&mut out, 0, SEND_KINDS),
                    SendKind::Wait => tag(&mut out, 1, SEND_KINDS),
                    SendKind::Synchronous { reply_units } => {
                        tag(&mut out, 2, SEND_KINDS);
                        out.push(*reply_units);
                    }
                    other => panic!("no seed sends {other:?}"),
                }
            }
            Action::RawBytes(bytes) => {
                tag(&mut out, 4, ACTIONS);
                bytes_vec(&mut out, bytes);
            }
            Action::Deliver(n) => {
                tag(&mut out, 5, ACTIONS);
                out.push(*n);
            }
            Action::CrashGuest => tag(&mut out, 9, ACTIONS),
            Action::Reconnect => tag(&mut out, 10, ACTIONS),
            Action::SaveRestore => tag(&mut out, 13, ACTIONS),
            Action::ShareGpadl {
                contents,
                size,
                read_only,
            } => {
                tag(&mut out, 14, ACTIONS);
                bytes_vec(&mut out, contents);
                out.extend_from_slice(&size.to_le_bytes());
                out.push(u8::from(*read_only));
            }
            Action::DeleteGpadl(index) => {
                tag(&mut out, 15, ACTIONS);
                out.push(*index);
            }
            other => panic!("no seed uses {other:?}"),
        }
    }
    out
}

const ACTIONS: u64 = 16;
const SEND_KINDS: u64 = 5;
const REQUESTS: u64 = 4;
const GPADL_REFS: u64 = 3;

/// The smallest `u32` tag that selects variant `index` of `count`.
fn tag(out: &mut Vec<u8>, index: u64, count: u64) {
    let t = u32::try_from((index << 32).div_ceil(count)).expect("a variant index");
    assert_eq!((u64::from(t) * count) >> 32, index);
    out.extend_from_slice(&t.to_le_bytes());
}

fn bytes_vec(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.extend_from_slice(&[1, *b]);
    }
    out.push(0);
}

fn encode_request(out: &mut Vec<u8>, request: &EchoRequest) {
    match request {
        EchoRequest::CurrentVersion { sequence } => {
            tag(out, 1, REQUESTS);
            out.extend_from_slice(&sequence.to_le_bytes());
        }
        EchoRequest::Gpadl {
            sequence,
            gpadl,
            offset,
            length,
        } => {
            tag(out, 3, REQUESTS);
            out.extend_from_slice(&sequence.to_le_bytes());
            match gpadl {
                GpadlRef::Shared(n) => {
                    tag(out, 0, GPADL_REFS);
                    out.push(*n);
                }
                GpadlRef::Deleted(n) => {
                    tag(out, 1, GPADL_REFS);
                    out.push(*n);
                }
                GpadlRef::Raw(raw) => {
                    tag(out, 2, GPADL_REFS);
                    out.extend_from_slice(&raw.to_le_bytes());
                }
            }
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&length.to_le_bytes());
        }
        other => panic!("no seed sends {other:?}"),
    }
}

fn send(request: EchoRequest, kind: SendKind) -> Action<EchoRequest> {
    Action::Request { request, kind }
}

fn sync(request: EchoRequest) -> Action<EchoRequest> {
    send(request, SendKind::Synchronous { reply_units: 64 })
}

fn gpadl_echo(sequence: u32, gpadl: GpadlRef, offset: u32, length: u32) -> EchoRequest {
    EchoRequest::Gpadl {
        sequence,
        gpadl,
        offset,
        length,
    }
}

fn share(contents: &[u8], size: u16, read_only: bool) -> Action<EchoRequest> {
    Action::ShareGpadl {
        contents: contents.to_vec(),
        size,
        read_only,
    }
}

/// The GPADL seeds: their file names and actions.
fn gpadl_seeds() -> Vec<(&'static str, Vec<Action<EchoRequest>>)> {
    vec![
        (
            // A GPADL echoed (synchronously and waited for), then deleted and named again.
            "gpadl-echo",
            vec![
                sync(EchoRequest::CurrentVersion { sequence: 1 }),
                share(b"shared through a GPADL", 0, false),
                sync(gpadl_echo(2, GpadlRef::Shared(0), 7, 7)),
                send(gpadl_echo(3, GpadlRef::Shared(0), 0, 22), SendKind::Wait),
                Action::Deliver(8),
                Action::DeleteGpadl(0),
                sync(gpadl_echo(4, GpadlRef::Deleted(0), 7, 7)),
                sync(gpadl_echo(5, GpadlRef::Raw(0x0bad_0bad), 0, 1)),
            ],
        ),
        (
            // Hostile orders (after a read-only GPADL, which the VSP serves: it maps read-only):
            // a range past the end, a delete while a
            // request names the GPADL, an empty share, and GPADLs left shared across a
            // reconnect, a save and restore of the VSP, a crash and a malformed frame.
            "gpadl-hostile",
            vec![
                sync(EchoRequest::CurrentVersion { sequence: 1 }),
                share(b"read only", 0, true),
                sync(gpadl_echo(2, GpadlRef::Shared(0), 0, 4)),
                share(b"a page", 4096, false),
                sync(gpadl_echo(3, GpadlRef::Shared(1), 4000, 200)),
                sync(gpadl_echo(4, GpadlRef::Shared(1), 4000, 96)),
                send(gpadl_echo(5, GpadlRef::Shared(1), 0, 6), SendKind::NoWait),
                Action::DeleteGpadl(1),
                Action::Deliver(8),
                share(b"", 0, false),
                Action::Reconnect,
                sync(EchoRequest::CurrentVersion { sequence: 6 }),
                sync(gpadl_echo(7, GpadlRef::Deleted(1), 0, 4)),
                share(b"kept over a save", 0, false),
                Action::SaveRestore,
                sync(EchoRequest::CurrentVersion { sequence: 8 }),
                share(b"kept over a crash", 0, false),
                sync(gpadl_echo(9, GpadlRef::Shared(0), 8, 9)),
                Action::CrashGuest,
                sync(EchoRequest::CurrentVersion { sequence: 10 }),
                share(b"before a malformed frame", 0, false),
                // An in-band frame (type 6, data at 16 bytes, 24 in all, no completion asked)
                // whose payload is no message of the protocol.
                Action::RawBytes([[6, 0, 2, 0, 3, 0, 0, 0], [0; 8], [0xff; 8]].concat()),
                Action::Deliver(8),
            ],
        ),
    ]
}

#[test]
fn the_gpadl_seeds_are_what_their_actions_encode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/echo_vsp");
    for (name, actions) in gpadl_seeds() {
        let bytes = encode_actions(&actions);
        // The bytes decode back into exactly these actions.
        let mut u = Unstructured::new(&bytes);
        let mut decoded = Vec::new();
        while !u.is_empty() {
            decoded.push(Action::<EchoRequest>::arbitrary(&mut u).expect("an action"));
        }
        assert_eq!(format!("{decoded:?}"), format!("{actions:?}"), "{name}");
        let path = format!("{dir}/{name}");
        if std::env::var_os("FUZZ_WRITE_SEEDS").is_some() {
            fs::write(&path, &bytes).expect("a writable seed directory");
        }
        assert_eq!(fs::read(&path).ok(), Some(bytes), "{path} is stale");
    }
}

#[test]
fn a_shared_gpadl_is_echoed_with_its_bytes() {
    let (_, actions) = &gpadl_seeds()[0];
    let t = run(&encode_actions(actions));
    // The synchronous echo of "through" (bytes 7..14) came back as the shared bytes; the
    // waited-for echo of all 22 bytes went through the same path (its reply is not seen).
    assert_eq!(t.gpadl_echoes, vec![b"through".to_vec()], "{t:?}");
    assert_eq!(t.gpadl_bytes, 7 + 22, "{t:?}");
    // The deleted GPADL and the number that never was one are refused.
    assert_eq!(t.refused, 2, "{t:?}");
}

#[test]
fn hostile_gpadl_orders_are_refused_not_served() {
    let (_, actions) = &gpadl_seeds()[1];
    let t = run(&encode_actions(actions));
    // Echoed: the first 4 bytes of the read-only GPADL, the last 96 bytes of the page
    // (zeros), and bytes 8..17 of the GPADL shared
    // after the save and restore (whose closed callback deleted the one shared before it, so
    // this one is the guest's first).
    assert_eq!(
        t.gpadl_echoes,
        vec![b"read".to_vec(), vec![0; 96], b"r a crash".to_vec()],
        "{t:?}"
    );
    assert!(t.refused >= 3, "{t:?}");
    assert_eq!(t.failed, 1, "{t:?}");
}
