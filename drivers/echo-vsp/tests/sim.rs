//! The echo VSP and VSC together on the sim: the seed IOCTL (accepted and refused), the
//! version negotiation (agreed and refused), inline and GPADL echoes, malformed packets
//! failed, save and restore with traffic resuming, and no leaks. The VSP uses the linked
//! exports, the VSC the client interface table, as in their kernel images.

use std::ops::ControlFlow;
use std::pin::pin;

use echo_protocol::{ProtocolError, SetVm, Version};
use echo_vsc::{EchoError, EchoVsc, Negotiation, SharedPage};
use echo_vsp::{EchoVsp, IoctlError};
use vmbus_kmcl::channel::{Channel, ChannelSlot, Client, Server};
use vmbus_kmcl::dispatch::{ClientInterface, Linked};
use vmbus_kmcl::send::{InlineFlags, Outcome, Timeout};
use vmbus_kmcl::{Error, KernelHandle};
use vmbus_kmcl_sim::nt::{Irp, Process};
use vmbus_kmcl_sim::Bus;
use zerocopy::IntoBytes;

#[path = "../../echo-demo/src/sim.rs"]
mod sim;
use echo_vsp::sim::SimMapper;

fn set_vm(raw: vmbus_kmcl_sys::HANDLE) -> SetVm {
    SetVm {
        vmbus_handle: zerocopy::little_endian::U64::new(raw.addr() as u64),
    }
}

/// The worker's IOCTL, handled in the worker's thread.
fn ioctl(bus: &Bus, worker: &Process) -> KernelHandle {
    let raw = bus.open_vmbus_handle_in(worker);
    let entered = worker.enter();
    let irp = entered.issue_irp();
    let vm = echo_vsp::vm_from_ioctl(&Linked, &sim::request(&irp), set_vm(raw).as_bytes())
        .expect("converted");
    drop(entered);
    assert!(worker.close_handle(raw));
    vm
}

#[test]
fn the_ioctl_is_refused_from_another_process_and_with_a_malformed_input() {
    let bus = Bus::new();
    let worker = Process::new("vmwp.exe");
    let raw = bus.open_vmbus_handle_in(&worker);
    // A request the kernel built itself (no user-mode requestor).
    let irp = Irp::issue();
    assert!(matches!(
        echo_vsp::vm_from_ioctl(&Linked, &sim::request(&irp), set_vm(raw).as_bytes()),
        Err(IoctlError::Kmcl(Error::NotFromUserMode))
    ));
    // From the worker, but with a short input buffer.
    let entered = worker.enter();
    let irp = entered.issue_irp();
    assert!(matches!(
        echo_vsp::vm_from_ioctl(&Linked, &sim::request(&irp), &[0u8; 7]),
        Err(IoctlError::Malformed(ProtocolError::Truncated))
    ));
    assert_eq!(
        echo_vsp::vm_from_ioctl(&Linked, &sim::request(&irp), &[0u8; 7])
            .unwrap_err()
            .status(),
        vmbus_kmcl::NtStatus::INVALID_PARAMETER
    );
    drop(entered);
    assert!(worker.close_handle(raw));
    bus.assert_no_leaks();
}

#[test]
fn echoes_inline_and_through_the_gpadl_then_save_restore_and_resume() {
    let bus = Bus::new();
    let (root, guest) = sim::devices(&bus);
    let table = sim::client_table(&bus).unwrap();
    let worker = Process::with_windows_handle_numbering("vmwp.exe");
    let page = SharedPage::new();
    {
        let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, EchoVsp::new(SimMapper)));
        let mut vsp = echo_vsp::offer(vsp_slot.as_mut(), Some(ioctl(&bus, &worker))).unwrap();
        assert!(bus.server_vmbus_handle_set(vsp.as_raw()));
        let mut storage = vec![0u8; 4096];
        let saved = ChannelSlot::scope(guest, &table, EchoVsc::new(&page), |vsc_slot| {
            let vsc = echo_vsc::open(vsc_slot).unwrap();
            bus.run_until_idle();
            assert_eq!(
                vsc.handler().negotiation(),
                Negotiation::Agreed(Version::CURRENT)
            );
            assert_eq!(vsp.handler().version(), Some(Version::CURRENT));
            assert!(vsc.handler().gpadl().is_some());

            for sequence in 1..=50u32 {
                let payload = vec![sequence as u8; 1 + sequence as usize * 5];
                echo_vsc::echo_inline(&vsc, sequence, &payload).unwrap();
                echo_vsc::echo_gpadl(&vsc, sequence, &payload).unwrap();
            }
            let counters = vsp.handler().counters();
            assert_eq!(
                counters.echoes.load(std::sync::atomic::Ordering::Relaxed),
                100
            );
            let expected: u64 = (1..=50u64).map(|s| 1 + s * 5).sum();
            assert_eq!(
                counters
                    .gpadl_bytes
                    .load(std::sync::atomic::Ordering::Relaxed),
                expected
            );
            assert_eq!(
                counters
                    .inline_bytes
                    .load(std::sync::atomic::Ordering::Relaxed),
                expected
            );

            // Well-formed requests the VSP cannot serve are refused, and the channel goes on.
            let gpadl = vsc.handler().gpadl().unwrap().to_raw();
            let mut reply = [0u8; 16];
            for request in [
                echo_protocol::gpadl_request(60, gpadl, 4000, 200).unwrap(),
                echo_protocol::gpadl_request(61, 0xdead, 0, 8).unwrap(),
            ] {
                let sequence = request.header.sequence.get();
                let outcome = vsc.send_request(
                    request.as_bytes(),
                    InlineFlags::empty(),
                    &mut reply,
                    Timeout::Infinite,
                );
                let Ok(Outcome::Completed(n)) = outcome else {
                    panic!("{outcome:?}")
                };
                assert_eq!(
                    echo_protocol::Response::parse(&reply[..n]),
                    Ok(echo_protocol::Response::Refused {
                        sequence,
                        refusal: echo_protocol::Refusal::GpadlUnavailable
                    })
                );
            }
            assert_eq!(
                counters.refused.load(std::sync::atomic::Ordering::Relaxed),
                2
            );
            echo_vsc::echo_inline(&vsc, 62, b"still served").unwrap();
            let saved = echo_vsp::save(&mut vsp, &mut storage).unwrap();
            assert_eq!(saved.version, Some(Version::CURRENT));
            assert!(saved.chunks >= 1 && saved.len > 0);
            // Too little storage is a typed error.
            assert_eq!(
                echo_vsp::save(&mut vsp, &mut storage[..3]),
                Err(echo_vsp::SaveError::StorageTooSmall)
            );
            drop(vsc);
            saved
        });
        drop(vsp);

        let mut vsp_slot = pin!(ChannelSlot::new(
            root,
            Linked,
            EchoVsp::restored(SimMapper, &saved)
        ));
        // Bytes that are not a save are refused.
        assert!(matches!(
            echo_vsp::offer_restored(vsp_slot.as_mut(), None, &saved, &storage[..2]),
            Err(echo_vsp::SaveError::Corrupt)
        ));
        let vsp = echo_vsp::offer_restored(
            vsp_slot.as_mut(),
            Some(ioctl(&bus, &worker)),
            &saved,
            &storage,
        )
        .unwrap();
        assert_eq!(vsp.handler().version(), Some(Version::CURRENT));
        ChannelSlot::scope(guest, &table, EchoVsc::new(&page), |vsc_slot| {
            let vsc = echo_vsc::open(vsc_slot).unwrap();
            bus.run_until_idle();
            echo_vsc::echo_gpadl(&vsc, 7, b"after restore").unwrap();
            echo_vsc::echo_inline(&vsc, 8, b"after restore").unwrap();
            drop(vsc);
        });
        drop(vsp);
    }
    drop(table);
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}

type VspChannel<'s> = Channel<'s, Server, EchoVsp<SimMapper>, Linked>;
type VscChannel<'s, 'b, 't> = Channel<'s, Client, EchoVsc<'b>, &'t ClientInterface>;

/// The VSP offered (bound to no VM), a VSC offering `offered` opened through the client
/// table, `scenario` run on both; then both close and nothing leaks.
fn with_pair(offered: Version, scenario: impl FnOnce(&VspChannel<'_>, &VscChannel<'_, '_, '_>)) {
    let bus = Bus::new();
    let (root, guest) = sim::devices(&bus);
    let table = sim::client_table(&bus).unwrap();
    let page = SharedPage::new();
    {
        let mut vsp_slot = pin!(ChannelSlot::new(root, Linked, EchoVsp::new(SimMapper)));
        let vsp = echo_vsp::offer(vsp_slot.as_mut(), None).unwrap();
        let vsc = EchoVsc::offering(&page, offered);
        ChannelSlot::scope(guest, &table, vsc, |vsc_slot| {
            let vsc = echo_vsc::open(vsc_slot).unwrap();
            bus.run_until_idle();
            scenario(&vsp, &vsc);
            drop(vsc);
        });
        drop(vsp);
    }
    drop(table);
    assert_eq!(bus.take_violations(), Vec::<String>::new());
    bus.assert_no_leaks();
}

#[test]
fn another_major_version_is_refused_and_no_echo_is_sent() {
    with_pair(Version { major: 2, minor: 0 }, |vsp, vsc| {
        assert_eq!(
            vsc.handler().negotiation(),
            Negotiation::Refused(Version::CURRENT)
        );
        assert_eq!(vsp.handler().version(), None);
        assert_eq!(
            echo_vsc::echo_inline(vsc, 1, b"x"),
            Err(EchoError::NotNegotiated)
        );
        // A client that ignores the refusal is refused by the VSP.
        let mut request = [0u8; 32];
        let n = echo_protocol::encode_inline(&mut request, 1, b"x").unwrap();
        let mut reply = [0u8; 32];
        let outcome = vsc.send_request(
            &request[..n],
            InlineFlags::empty(),
            &mut reply,
            Timeout::Infinite,
        );
        let Ok(Outcome::Completed(n)) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            echo_protocol::Response::parse(&reply[..n]),
            Ok(echo_protocol::Response::Refused {
                sequence: 1,
                refusal: echo_protocol::Refusal::NotNegotiated
            })
        );
        assert_eq!(
            vsp.handler()
                .counters()
                .refused
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    });
}

#[test]
fn a_malformed_packet_is_failed_and_the_channel_serves_no_more() {
    with_pair(Version::CURRENT, |vsp, vsc| {
        echo_vsc::echo_inline(vsc, 1, b"fine").unwrap();
        let mut reply = [0u8; 16];
        assert_eq!(
            vsc.send_request(
                b"garbage!",
                InlineFlags::empty(),
                &mut reply,
                Timeout::Infinite
            ),
            Err(Error::Status(vmbus_kmcl::NtStatus::UNSUCCESSFUL))
        );
        assert_eq!(
            vsp.handler()
                .counters()
                .failed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // KMCL stopped the server's incoming queue: the next request is not answered.
        let mut request = [0u8; 32];
        let n = echo_protocol::encode_inline(&mut request, 2, b"x").unwrap();
        assert_eq!(
            vsc.send_request(
                &request[..n],
                InlineFlags::empty(),
                &mut reply,
                Timeout::Relative(std::time::Duration::from_millis(50)),
            ),
            Ok(Outcome::TimedOut)
        );
        assert_eq!(
            vsp.handler()
                .counters()
                .echoes
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    });
}

#[test]
fn a_run_alternates_inline_and_gpadl_and_stops_at_the_first_failure() {
    with_pair(Version::CURRENT, |vsp, vsc| {
        let mut seen = Vec::new();
        let summary = echo_vsc::run(vsc, 1..129, |e| {
            seen.push((e.sequence, e.path));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(summary.requests, 128);
        assert_eq!(summary.gpadl_requests, 64);
        let mut buffer = [0u8; echo_protocol::MAX_PAYLOAD];
        let bytes: u64 = (1..129)
            .map(|s| echo_vsc::payload(s, &mut buffer).len() as u64)
            .sum();
        assert_eq!(summary.bytes, bytes);
        assert_eq!(seen.len(), 128);
        assert_eq!(seen[0], (1, echo_vsc::Path::Gpadl));
        assert_eq!(seen[1], (2, echo_vsc::Path::Inline));
        let counters = vsp.handler().counters();
        assert_eq!(
            counters.echoes.load(std::sync::atomic::Ordering::Relaxed),
            128
        );
        // The VSP read exactly the GPADL requests' payloads through the GPADL.
        let gpadl: u64 = (1..129)
            .step_by(2)
            .map(|s| echo_vsc::payload(s, &mut buffer).len() as u64)
            .sum();
        assert_eq!(
            counters
                .gpadl_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            gpadl
        );
        // A callback that breaks stops the run after that request, which is counted.
        let summary = echo_vsc::run(vsc, 200..300, |e| {
            if e.sequence == 202 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(summary.requests, 3);
        assert_eq!(summary.gpadl_requests, 1);
        assert_eq!(
            counters.echoes.load(std::sync::atomic::Ordering::Relaxed),
            131
        );
    });
    with_pair(Version { major: 2, minor: 0 }, |_, vsc| {
        let mut calls = 0;
        let error = echo_vsc::run(vsc, 5..10, |_| {
            calls += 1;
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert_eq!(calls, 0);
        assert_eq!(
            error,
            echo_vsc::RunError {
                sequence: 5,
                error: EchoError::NotNegotiated,
                done: echo_vsc::RunSummary::default(),
            }
        );
    });
}

#[test]
fn payloads_differ_and_stay_in_bounds() {
    let mut a = [0u8; echo_protocol::MAX_PAYLOAD];
    let mut b = [0u8; echo_protocol::MAX_PAYLOAD];
    for sequence in [0, 1, 2, 255, 256, u32::MAX - 1, u32::MAX] {
        let p = echo_vsc::payload(sequence, &mut a).to_vec();
        assert!((1..=echo_protocol::MAX_PAYLOAD).contains(&p.len()));
        assert_eq!(p[0], sequence as u8);
        assert_ne!(p, echo_vsc::payload(sequence.wrapping_add(1), &mut b));
    }
}
