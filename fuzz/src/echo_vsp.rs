//! The real echo VSP (`drivers/echo-vsp`, written on the safe `vmbus-kmcl` API) under the
//! sim's hostile guest.
//!
//! The guest's well-formed requests are the echo protocol's own messages, encoded with
//! `echo-protocol`: version requests offering any version (so negotiation is both agreed and
//! refused), inline echoes of up to `MAX_PAYLOAD` bytes, and GPADL echoes naming any handle,
//! offset and length (the harness's guest shares no GPADL, so the VSP's map-and-refuse path is
//! what these reach). Raw and hostile frames come from the harness. Save and restore runs
//! KMCL's save protocol on the VSP's channel in place, which calls the driver's
//! `SaveRestoreHandler` for every packet in flight.
//!
//! The echo VSP fails every malformed packet, and KMCL then stops the channel's incoming
//! queue until the guest reconnects: that is the driver's policy, so after a raw malformed
//! frame only a reconnect or a crashed guest brings the parser more input.

use std::cell::Cell;
use std::pin::pin;
use std::sync::atomic::Ordering;

use arbitrary::Arbitrary;
use echo_protocol::{Version, MAX_MESSAGE, MAX_PAYLOAD};
use echo_vsp::sim::SimMapper;
use echo_vsp::EchoVsp;
use vmbus_kmcl::channel::{Channel, ChannelSlot, Server};
use vmbus_kmcl::dispatch::{KmclServer, Linked};
use vmbus_kmcl_sim::fuzz::{save_restore_in_place, HostileGuest, Vsp};
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
        /// The GPADL handle named.
        gpadl: u32,
        /// The byte offset in the GPADL.
        offset: u32,
        /// The payload length.
        length: u32,
    },
}

/// Encodes `request` onto `out` with the protocol crate's encoders.
pub fn encode(request: &EchoRequest, out: &mut Vec<u8>) {
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
            let message = echo_protocol::gpadl_request(*sequence, *gpadl, *offset, length)
                .expect("a length of at most MAX_PAYLOAD is accepted");
            out.extend_from_slice(message.as_bytes());
        }
    }
}

/// What the echo VSP did during one input (its counters, read when the harness drops it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

/// The echo VSP's channel as the hostile guest sees it; when dropped it writes the VSP's
/// counters to `tally`, then tears the channel down.
pub struct EchoUnderTest<'s, 't> {
    /// The VSP's channel.
    pub channel: Channel<'s, Server, EchoVsp<SimMapper>, Linked>,
    /// Where the counters go.
    pub tally: &'t Cell<Tally>,
}

impl Drop for EchoUnderTest<'_, '_> {
    fn drop(&mut self) {
        let c = self.channel.handler().counters();
        self.tally.set(Tally {
            versions: c.versions.load(Ordering::Relaxed),
            echoes: c.echoes.load(Ordering::Relaxed),
            gpadl_bytes: c.gpadl_bytes.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        });
    }
}

impl Vsp for EchoUnderTest<'_, '_> {
    type Request = EchoRequest;

    fn channel(&self) -> VMBCHANNEL {
        self.channel.as_raw()
    }

    fn encode(&self, request: &EchoRequest, out: &mut Vec<u8>) {
        encode(request, out);
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
    let tally = Cell::new(Tally::default());
    HostileGuest::new(echo_vsp::INTERFACE_TYPE.into()).run(
        &bus,
        EchoUnderTest {
            channel,
            tally: &tally,
        },
        data,
    );
    bus.assert_no_leaks();
    tally.get()
}
