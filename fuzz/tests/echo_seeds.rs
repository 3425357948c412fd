//! The echo VSP target's checked-in seeds: each runs clean under the hostile guest, and
//! together they reach the version negotiation, the echo paths, the refusals and the failure
//! of a malformed packet. Also: every well-formed request the target encodes parses as the
//! request it was built from.

use std::fs;

use arbitrary::{Arbitrary, Unstructured};
use echo_protocol::{Request, Version, MAX_PAYLOAD};
use vmbus_kmcl_fuzz::echo_vsp::{encode, run, EchoRequest, Tally};

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
        seeds += 1;
    }
    assert!(seeds >= 4, "only {seeds} seeds");
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
        encode(&request, &mut wire);
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
                    *gpadl,
                    *offset,
                    length % (MAX_PAYLOAD as u32 + 1)
                )
            ),
            (request, parsed) => panic!("{request:?} encoded as {wire:?} parsed as {parsed:?}"),
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "variants seen: {seen:?}");
}
