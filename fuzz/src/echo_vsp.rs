//! The real echo VSP (`drivers/echo-vsp`, written on the safe `vmbus-kmcl` API) under the
//! sim's hostile guest.
//!
//! The guest's well-formed requests are the echo protocol's own messages, encoded with
//! `echo-protocol`: version requests offering any version (so negotiation is both agreed and
//! refused), inline echoes of up to `MAX_PAYLOAD` bytes, and GPADL echoes naming a GPADL the
//! guest shares, one it deleted or any number ([`GpadlRef`]), at any offset and length. The
//! guest shares GPADLs of any size and contents, read-only or not, and deletes them, as the
//! harness's actions say. Raw and hostile frames come from the harness. Save and restore runs
//! KMCL's save protocol on the VSP's channel in place, which calls the driver's
//! `SaveRestoreHandler` for every packet in flight.
//!
//! The reply to every synchronous GPADL echo is checked against what the guest shares
//! ([`EchoUnderTest::check_reply`]): an echo must be the shared bytes of the range, and a
//! refusal of a range inside a GPADL the guest shares writable, after a version was agreed, is
//! a finding too.
//!
//! The echo VSP fails every malformed packet, and KMCL then stops the channel's incoming
//! queue until the guest reconnects: that is the driver's policy, so after a raw malformed
//! frame only a reconnect or a crashed guest brings the parser more input.

use std::cell::RefCell;
use std::pin::pin;
use std::sync::atomic::Ordering;

use arbitrary::Arbitrary;
use echo_protocol::{Kind, Refusal, Request, Response, Version, MAX_MESSAGE, MAX_PAYLOAD};
use echo_vsp::sim::SimMapper;
use echo_vsp::EchoVsp;
use vmbus_kmcl::channel::{Channel, ChannelSlot, Server};
use vmbus_kmcl::dispatch::Linked;
use vmbus_kmcl_sim::fuzz::{save_restore_in_place, GpadlRef, GuestGpadls, HostileGuest, Vsp};
use vmbus_kmcl_sim::Bus;
use vmbus_kmcl_sys::VMBCHANNEL;
use zerocopy::IntoBytes;

/// A well-formed request of the echo protocol, as the fuzzer builds it.
#[derive(Arbitrary, Debug, Clone)]
pub enum EchoRequest {
    /// A version request offering `major.minor`.
    Version {
        /// Sequence number.
        sequence: u32,
        /// Offered major (the VSP agrees only to its own).
        major: u16,
        /// Offered minor.
        minor: u16,
    },
    /// The version request a conforming client sends (the VSP's own version).
    CurrentVersion {
        /// Sequence number.
        sequence: u32,
    },
    /// An inline echo of `payload` (cut to `MAX_PAYLOAD` bytes).
    Inline {
        /// Sequence number.
        sequence: u32,
        /// The bytes to echo.
        payload: Vec<u8>,
    },
    /// A GPADL echo of `length` bytes (reduced modulo `MAX_PAYLOAD + 1`) at `offset`.
    Gpadl {
        /// Sequence number.
        sequence: u32,
        /// The GPADL named.
        gpadl: GpadlRef,
        /// The byte offset in the GPADL.
        offset: u32,
        /// The payload length.
        length: u32,
    },
}

/// Encodes `request` onto `out` with the protocol crate's encoders, naming the GPADL handle
/// `gpadls` gives for its [`GpadlRef`].
pub fn encode(request: &EchoRequest, gpadls: &GuestGpadls<'_>, out: &mut Vec<u8>) {
    match request {
        EchoRequest::Version {
            sequence,
            major,
            minor,
        } => {
            let version = Version {
                major: *major,
                minor: *minor,
            };
            out.extend_from_slice(echo_protocol::version_request(*sequence, version).as_bytes());
        }
        EchoRequest::CurrentVersion { sequence } => out.extend_from_slice(
            echo_protocol::version_request(*sequence, Version::CURRENT).as_bytes(),
        ),
        EchoRequest::Inline { sequence, payload } => {
            let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
            let mut buffer = [0u8; MAX_MESSAGE];
            let n = echo_protocol::encode_inline(&mut buffer, *sequence, payload)
                .expect("a payload of at most MAX_PAYLOAD fits MAX_MESSAGE");
            out.extend_from_slice(&buffer[..n]);
        }
        EchoRequest::Gpadl {
            sequence,
            gpadl,
            offset,
            length,
        } => {
            // CAST: MAX_PAYLOAD is a few hundred.
            let length = length % (MAX_PAYLOAD as u32 + 1);
            let gpadl = gpadls.handle(*gpadl);
            let message = echo_protocol::gpadl_request(*sequence, gpadl, *offset, length)
                .expect("a length of at most MAX_PAYLOAD is accepted");
            out.extend_from_slice(message.as_bytes());
        }
    }
}

/// What the echo VSP did during one input (its counters, read when the harness drops it), and
/// the GPADL echoes the guest checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Version requests answered.
    pub versions: u64,
    /// Echo requests answered.
    pub echoes: u64,
    /// Payload bytes echoed from a GPADL.
    pub gpadl_bytes: u64,
    /// Well-formed requests refused.
    pub refused: u64,
    /// Malformed packets failed.
    pub failed: u64,
    /// The payload of every GPADL echo the guest received as the reply to a synchronous
    /// request, each found equal to the bytes it shared ([`EchoUnderTest::check_reply`]).
    pub gpadl_echoes: Vec<Vec<u8>>,
}

/// The echo VSP's channel as the hostile guest sees it; when dropped it writes the VSP's
/// counters to `tally`, then tears the channel down.
pub struct EchoUnderTest<'s, 't> {
    /// The VSP's channel.
    pub channel: Channel<'s, Server, EchoVsp<SimMapper>, Linked>,
    /// Where the counters and the checked echoes go.
    pub tally: &'t RefCell<Tally>,
}

impl Drop for EchoUnderTest<'_, '_> {
    fn drop(&mut self) {
        let c = self.channel.handler().counters();
        let mut tally = self.tally.borrow_mut();
        tally.versions = c.versions.load(Ordering::Relaxed);
        tally.echoes = c.echoes.load(Ordering::Relaxed);
        tally.gpadl_bytes = c.gpadl_bytes.load(Ordering::Relaxed);
        tally.refused = c.refused.load(Ordering::Relaxed);
        tally.failed = c.failed.load(Ordering::Relaxed);
    }
}

impl Vsp for EchoUnderTest<'_, '_> {
    type Request = EchoRequest;

    fn channel(&self) -> VMBCHANNEL {
        self.channel.as_raw()
    }

    fn encode(&self, request: &EchoRequest, gpadls: &GuestGpadls<'_>, out: &mut Vec<u8>) {
        encode(request, gpadls, out);
    }

    /// A GPADL echo's reply, checked against what the guest shares: an echo must carry the
    /// request's sequence and the shared bytes of the range; a refusal must have a reason (no
    /// version agreed, or a GPADL that is not shared, is read-only, or does not hold the
    /// range). Replies cut short by a small reply buffer are not judged.
    fn check_reply(
        &mut self,
        _request: &EchoRequest,
        sent: &[u8],
        gpadls: &GuestGpadls<'_>,
        reply: &[u8],
    ) {
        let Ok(Request::Gpadl {
            sequence,
            gpadl,
            offset,
            length,
        }) = Request::parse(sent)
        else {
            return;
        };
        let Ok(response) = Response::parse(reply) else {
            return;
        };
        let shared = gpadls.contents(gpadl);
        // CAST: u32 to usize, lossless on the fuzzing hosts.
        let range = offset as usize..offset as usize + length as usize;
        let expected = shared.as_ref().and_then(|bytes| bytes.get(range));
        match response {
            Response::Echo {
                kind: Kind::EchoGpadl,
                sequence: s,
                payload,
            } => {
                assert_eq!(s, sequence, "a GPADL echo with another request's sequence");
                assert_eq!(
                    Some(payload),
                    expected,
                    "the GPADL echo of {gpadl}@{offset}+{length} is not the guest's bytes"
                );
                self.tally.borrow_mut().gpadl_echoes.push(payload.to_vec());
            }
            Response::Refused { refusal, .. } => {
                let negotiated = self.channel.handler().version().is_some();
                // The VSP maps read-only, so a read-only share is as servable as a writable one.
                let servable = negotiated && expected.is_some();
                assert!(
                    !servable,
                    "the VSP refused ({refusal:?}) a GPADL echo of {gpadl}@{offset}+{length} \
                     inside a GPADL the guest shares"
                );
                if refusal == Refusal::NotNegotiated {
                    assert!(
                        !negotiated,
                        "refused as not negotiated after an agreed version"
                    );
                }
            }
            other => panic!("a GPADL echo answered with {other:?}"),
        }
    }

    fn pause(&mut self) {
        // The harness runs at PASSIVE_LEVEL outside callbacks; a refused pause is not a
        // finding of the VSP (the bus records a real violation by itself).
        let _ = self.channel.pause();
    }

    fn resume(&mut self) {
        self.channel.start();
    }

    fn save_restore(&mut self) -> bool {
        // SAFETY: the VSP's live, enabled server channel, used by this thread only, at
        // PASSIVE_LEVEL outside its callbacks (the harness calls this between actions).
        let restored = unsafe { save_restore_in_place(self.channel.as_raw()) };
        assert_eq!(restored, Ok(()), "the echo VSP's save and restore failed");
        true
    }
}

/// One input: a fresh bus, the echo VSP offered on it as the driver offers it, the hostile
/// guest's actions, then the bus checked for leaks. Returns what the VSP did.
pub fn run(data: &[u8]) -> Tally {
    let bus = Bus::new();
    let mut slot = pin!(ChannelSlot::new(
        crate::root(&bus),
        Linked,
        EchoVsp::new(SimMapper)
    ));
    let channel = echo_vsp::offer(slot.as_mut(), None).expect("the echo VSP is offered");
    let tally = RefCell::new(Tally::default());
    HostileGuest::new(echo_vsp::INTERFACE_TYPE.into()).run(
        &bus,
        EchoUnderTest {
            channel,
            tally: &tally,
        },
        data,
    );
    bus.assert_no_leaks();
    tally.into_inner()
}
