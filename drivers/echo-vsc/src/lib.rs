//! The echo VSC (guest, client side): everything the driver does, as a library with no
//! `unsafe` (`#![forbid(unsafe_code)]`), run unchanged on the sim and in the kernel image
//! (`drivers/images/echo-vsc-sys`). It reaches KMCL through whatever backend its channel slot
//! holds; the kernel image uses the queried client interface table, so it imports no KMCL
//! driver.
//!
//! * [`EchoVsc`], the channel handler: when the channel opens it shares one page with the
//!   server (a GPADL, deleted at the latest when the channel closes); in post-started it
//!   negotiates the protocol version with a synchronous request.
//! * [`open`]: the client channel, targeted at the echo interface.
//! * [`echo_inline`] and [`echo_gpadl`]: one request each, the reply checked byte for byte.
//! * [`run`]: a run of requests with deterministic payloads ([`payload`]), alternating
//!   between the two, stopping at the first failure (the demo's traffic and the kernel
//!   image's self-test).
//! * [`config`]: the kernel image's one registry setting, checked.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;
use core::ops::{ControlFlow, Range};
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use echo_protocol::{Kind, ProtocolError, Refusal, Response, Version, MAX_MESSAGE, MAX_PAYLOAD};
use vmbus_kmcl::channel::gpadl::{GpadlCell, GpadlFlags, GpadlHandle, SharedBuffer};
use vmbus_kmcl::channel::{
    Channel, ChannelSlot, Client, ClientBuilder, Handler, OpenView, PostStartedView,
};
use vmbus_kmcl::dispatch::ChannelBackend;
use vmbus_kmcl::packet::IncomingPacket;
use vmbus_kmcl::send::{InlineFlags, Outcome, Timeout};
use vmbus_kmcl::{Error, Guid};
use zerocopy::IntoBytes;

pub mod config;

/// The channel's interface type.
pub const INTERFACE_TYPE: Guid = Guid::from_u128(echo_protocol::INTERFACE_TYPE);

/// The size of the page the VSC shares with the server.
pub const SHARED_BYTES: usize = 4096;

/// The memory the VSC shares: one page.
pub type SharedPage = SharedBuffer<SHARED_BYTES>;

/// How long one request may take before it is cancelled.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an echo (or the negotiation) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoError {
    /// KMCL's error, or the wrapper's check before the call.
    Kmcl(Error),
    /// The request was not answered: not queued, timed out or the device went away.
    NotCompleted(Outcome),
    /// The reply is not a valid message.
    Protocol(ProtocolError),
    /// A valid reply that does not answer the request (kind, sequence or bytes differ).
    Mismatch {
        /// The request's sequence number.
        sequence: u32,
    },
    /// No version is agreed (yet, or the server refused ours).
    NotNegotiated,
    /// The server refused the request.
    Refused {
        /// The request's sequence number.
        sequence: u32,
        /// Why.
        refusal: Refusal,
    },
    /// The channel's GPADL does not exist (the open failed to share the page).
    NoGpadl,
}

impl fmt::Display for EchoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kmcl(error) => write!(f, "{error}"),
            Self::NotCompleted(outcome) => write!(f, "request not completed: {outcome:?}"),
            Self::Protocol(error) => write!(f, "malformed reply: {error}"),
            Self::Mismatch { sequence } => write!(f, "reply {sequence} does not match its request"),
            Self::NotNegotiated => f.write_str("no protocol version agreed"),
            Self::Refused { sequence, refusal } => {
                write!(f, "the server refused request {sequence}: {refusal:?}")
            }
            Self::NoGpadl => f.write_str("no shared page"),
        }
    }
}

impl From<Error> for EchoError {
    fn from(error: Error) -> Self {
        Self::Kmcl(error)
    }
}

impl From<ProtocolError> for EchoError {
    fn from(error: ProtocolError) -> Self {
        Self::Protocol(error)
    }
}

/// What the negotiation in post-started found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// Not run yet.
    Pending,
    /// The server agreed this version.
    Agreed(Version),
    /// The server refused, naming its own version.
    Refused(Version),
    /// The request was not answered, or its reply was malformed or not a version reply.
    Failed,
}

const PENDING: u32 = 0;
const AGREED: u32 = 1;
const REFUSED: u32 = 2;
const FAILED: u32 = 3;

/// The echo VSC's channel handler: the shared page and its GPADL, and the agreed version.
pub struct EchoVsc<'b> {
    page: &'b SharedPage,
    gpadl: GpadlCell<'b>,
    offered: Version,
    /// One of PENDING, AGREED, REFUSED, FAILED.
    state: AtomicU32,
    /// The version of AGREED or REFUSED.
    version: AtomicU32,
}

impl<'b> EchoVsc<'b> {
    /// A VSC sharing `page`, offering [`Version::CURRENT`].
    pub const fn new(page: &'b SharedPage) -> Self {
        Self::offering(page, Version::CURRENT)
    }

    /// A VSC sharing `page`, offering `version`.
    pub const fn offering(page: &'b SharedPage, version: Version) -> Self {
        Self {
            page,
            gpadl: GpadlCell::new(),
            offered: version,
            state: AtomicU32::new(PENDING),
            version: AtomicU32::new(0),
        }
    }

    /// What the negotiation of the current open found.
    pub fn negotiation(&self) -> Negotiation {
        let version = Version::from_wire(self.version.load(Ordering::Acquire));
        match self.state.load(Ordering::Acquire) {
            AGREED => Negotiation::Agreed(version),
            REFUSED => Negotiation::Refused(version),
            FAILED => Negotiation::Failed,
            _ => Negotiation::Pending,
        }
    }

    /// The GPADL of the shared page, while the channel is open.
    pub fn gpadl(&self) -> Option<GpadlHandle> {
        self.gpadl.handle()
    }

    fn settle(&self, state: u32, version: Version) {
        self.version.store(version.to_wire(), Ordering::Release);
        self.state.store(state, Ordering::Release);
    }

    /// The version request and the check of its reply.
    fn negotiate<K: ChannelBackend>(
        &self,
        channel: &PostStartedView<'_, Client, K>,
    ) -> Result<(bool, Version), EchoError> {
        let request = echo_protocol::version_request(0, self.offered);
        let mut reply = [0u8; 16];
        let n = completed(channel.send_request(
            request.as_bytes(),
            InlineFlags::empty(),
            &mut reply,
            Timeout::Relative(REQUEST_TIMEOUT),
        )?)?;
        match Response::parse(&reply[..n])? {
            Response::Version {
                sequence: 0,
                accepted,
                version,
            } if !accepted || version.major == self.offered.major && version <= self.offered => {
                Ok((accepted, version))
            }
            _ => Err(EchoError::Mismatch { sequence: 0 }),
        }
    }
}

fn completed(outcome: Outcome) -> Result<usize, EchoError> {
    match outcome {
        Outcome::Completed(n) => Ok(n),
        other => Err(EchoError::NotCompleted(other)),
    }
}

impl<K: ChannelBackend> Handler<Client, K> for EchoVsc<'_> {
    /// Shares the page read-only as soon as the channel is open: the server only reads it
    /// (the flag is a hint to the host, not a protection; the VSC keeps writing its page).
    fn opened(&self, channel: &OpenView<'_, Client, K>) -> vmbus_kmcl::Result<()> {
        self.state.store(PENDING, Ordering::Release);
        self.gpadl
            .create(channel, self.page, GpadlFlags::READ_ONLY)
            .map(|_| ())
    }

    /// Negotiates the version: PASSIVE_LEVEL with the incoming queue running, so the
    /// synchronous request may wait for its reply here.
    fn post_started(&self, channel: &PostStartedView<'_, Client, K>) {
        match self.negotiate(channel) {
            Ok((true, version)) => self.settle(AGREED, version),
            Ok((false, version)) => self.settle(REFUSED, version),
            Err(_) => self.settle(FAILED, Version::from_wire(0)),
        }
    }

    /// The echo server sends nothing unasked: anything that arrives is failed.
    fn process_packet(&self, _: &OpenView<'_, Client, K>, packet: IncomingPacket<'_, K>) {
        packet.fail();
    }
}

/// Opens the echo channel in `slot` (allocate, target, enable); the handler shares its page in
/// `opened` and negotiates in post-started.
///
/// # Errors
///
/// The first failing step.
pub fn open<'s, 'b, K: ChannelBackend>(
    slot: Pin<&'s mut ChannelSlot<'_, EchoVsc<'b>, K>>,
) -> vmbus_kmcl::Result<Channel<'s, Client, EchoVsc<'b>, K>> {
    let mut builder = ClientBuilder::allocate(slot)?;
    builder
        .set_target(INTERFACE_TYPE, None)?
        // CAST: MAX_MESSAGE is a few hundred bytes.
        .set_maximum_packet_size(MAX_MESSAGE as u32)?;
    builder.enable().map_err(|e| e.error())
}

fn agreed<K: ChannelBackend>(
    channel: &Channel<'_, Client, EchoVsc<'_>, K>,
) -> Result<(), EchoError> {
    match channel.handler().negotiation() {
        Negotiation::Agreed(_) => Ok(()),
        _ => Err(EchoError::NotNegotiated),
    }
}

/// Sends `request` and checks that the reply echoes `payload` for `kind` and `sequence`.
fn exchange<K: ChannelBackend>(
    channel: &Channel<'_, Client, EchoVsc<'_>, K>,
    request: &[u8],
    kind: Kind,
    sequence: u32,
    payload: &[u8],
) -> Result<(), EchoError> {
    let mut reply = [0u8; MAX_MESSAGE];
    let n = completed(channel.send_request(
        request,
        InlineFlags::empty(),
        &mut reply,
        Timeout::Relative(REQUEST_TIMEOUT),
    )?)?;
    match Response::parse(&reply[..n])? {
        Response::Echo {
            kind: k,
            sequence: s,
            payload: echoed,
        } if k == kind && s == sequence && echoed == payload => Ok(()),
        Response::Refused {
            sequence: s,
            refusal,
        } if s == sequence => Err(EchoError::Refused { sequence, refusal }),
        _ => Err(EchoError::Mismatch { sequence }),
    }
}

/// Echoes `payload` inline: it travels in the request packet and back in the completion.
///
/// # Errors
///
/// [`EchoError::NotNegotiated`] before a version is agreed; a failed request or a reply that
/// does not match.
pub fn echo_inline<K: ChannelBackend>(
    channel: &Channel<'_, Client, EchoVsc<'_>, K>,
    sequence: u32,
    payload: &[u8],
) -> Result<(), EchoError> {
    agreed(channel)?;
    let mut request = [0u8; MAX_MESSAGE];
    let n = echo_protocol::encode_inline(&mut request, sequence, payload)?;
    exchange(channel, &request[..n], Kind::EchoInline, sequence, payload)
}

/// Echoes `payload` through the shared page: written there, read by the server through the
/// GPADL, and returned in the completion.
///
/// # Errors
///
/// As for [`echo_inline`], and [`EchoError::NoGpadl`] without a shared page.
pub fn echo_gpadl<K: ChannelBackend>(
    channel: &Channel<'_, Client, EchoVsc<'_>, K>,
    sequence: u32,
    payload: &[u8],
) -> Result<(), EchoError> {
    agreed(channel)?;
    let vsc = channel.handler();
    let gpadl = vsc.gpadl().ok_or(EchoError::NoGpadl)?;
    if payload.len() > MAX_PAYLOAD {
        return Err(EchoError::Protocol(ProtocolError::PayloadTooLarge(
            u32::try_from(payload.len()).unwrap_or(u32::MAX),
        )));
    }
    // A different place in the page each time, so the server cannot echo stale bytes.
    // CAST: the modulus keeps it below SHARED_BYTES.
    let offset = (sequence as usize * 64) % (SHARED_BYTES - MAX_PAYLOAD);
    vsc.page.memory().write(offset, payload)?;
    // CAST: both below SHARED_BYTES.
    let request = echo_protocol::gpadl_request(
        sequence,
        gpadl.to_raw(),
        offset as u32,
        payload.len() as u32,
    )?;
    exchange(
        channel,
        request.as_bytes(),
        Kind::EchoGpadl,
        sequence,
        payload,
    )
}

/// How a request of [`run`] travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// In the request packet ([`echo_inline`]).
    Inline,
    /// Through the shared page ([`echo_gpadl`]).
    Gpadl,
}

impl Path {
    /// The path of request `sequence` in a [`run`]: odd numbers go through the GPADL, even
    /// ones inline.
    pub const fn of(sequence: u32) -> Self {
        if sequence % 2 == 1 {
            Self::Gpadl
        } else {
            Self::Inline
        }
    }
}

/// The payload of request `sequence` in a [`run`], written to `out`: 1 to [`MAX_PAYLOAD`]
/// bytes, a different length and content for neighbouring sequence numbers.
pub fn payload(sequence: u32, out: &mut [u8; MAX_PAYLOAD]) -> &[u8] {
    // CAST: the remainder is below MAX_PAYLOAD.
    let len = 1 + (u64::from(sequence) * 37 % MAX_PAYLOAD as u64) as usize;
    let out = out.split_at_mut(len).0;
    // CAST: the low byte of the sequence number and of the index, on purpose.
    let (start, mut step) = (sequence as u8, 0u8);
    for byte in out.iter_mut() {
        *byte = start.wrapping_add(step);
        step = step.wrapping_add(7);
    }
    out
}

/// One checked exchange of a [`run`], as its callback sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange<'p> {
    /// The request's sequence number.
    pub sequence: u32,
    /// How it travelled.
    pub path: Path,
    /// The payload, echoed back and checked.
    pub payload: &'p [u8],
}

/// What a [`run`] sent (every request counted was answered and checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Requests echoed.
    pub requests: u32,
    /// Of which through the GPADL.
    pub gpadl_requests: u32,
    /// Payload bytes sent (each came back).
    pub bytes: u64,
}

/// Why a [`run`] stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunError {
    /// The request that failed.
    pub sequence: u32,
    /// How.
    pub error: EchoError,
    /// What was echoed before it.
    pub done: RunSummary,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request {}: {} (after {} checked)",
            self.sequence, self.error, self.done.requests
        )
    }
}

/// Echoes the requests `sequences`, each with [`payload`] along [`Path::of`] its number,
/// calling `each` after every checked reply; stops when `each` breaks (returning what was done)
/// or at the first failure, so a server that does not answer costs one [`REQUEST_TIMEOUT`],
/// not one per request.
///
/// # Errors
///
/// [`RunError`]: the first request that failed, how, and what was done before it.
pub fn run<K: ChannelBackend>(
    channel: &Channel<'_, Client, EchoVsc<'_>, K>,
    sequences: Range<u32>,
    mut each: impl FnMut(&Exchange<'_>) -> ControlFlow<()>,
) -> Result<RunSummary, RunError> {
    let mut done = RunSummary::default();
    let mut buffer = [0u8; MAX_PAYLOAD];
    for sequence in sequences {
        let data = payload(sequence, &mut buffer);
        let path = Path::of(sequence);
        let result = match path {
            Path::Inline => echo_inline(channel, sequence, data),
            Path::Gpadl => echo_gpadl(channel, sequence, data),
        };
        if let Err(error) = result {
            return Err(RunError {
                sequence,
                error,
                done,
            });
        }
        done.requests += 1;
        done.gpadl_requests += u32::from(path == Path::Gpadl);
        // CAST: at most MAX_PAYLOAD.
        done.bytes += data.len() as u64;
        let flow = each(&Exchange {
            sequence,
            path,
            payload: data,
        });
        if flow.is_break() {
            break;
        }
    }
    Ok(done)
}
