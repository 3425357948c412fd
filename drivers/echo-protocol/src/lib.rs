//! The wire protocol of the echo VSP and VSC: every message is a `zerocopy` struct of
//! little-endian fields, and every byte that arrives from the other partition is parsed checked
//! ([`Request::parse`], [`Response::parse`]): a truncated, oversized or unknown message is a
//! [`ProtocolError`], never a panic and never an unaligned read.
//!
//! The exchange:
//!
//! 1. The client sends [`VersionRequest`] with the newest version it speaks; the server answers
//!    [`VersionResponse`] with the version both use (the same major, the smaller minor) or a
//!    refusal.
//! 2. The client sends echo requests, each answered by an [`EchoResponse`] header followed by
//!    the payload, or by an [`ErrorResponse`] when the server cannot serve it (no version
//!    agreed, the GPADL range unreadable); a malformed message is failed instead:
//!    - [`EchoInline`]: the payload follows the header in the same packet;
//!    - [`EchoGpadl`]: the payload lies in a GPADL the client shares; the server reads it there.
//!
//! ```
//! use echo_protocol::{Request, ProtocolError, Version};
//!
//! let mut buffer = [0u8; 64];
//! let n = echo_protocol::encode_inline(&mut buffer, 7, b"ping").unwrap();
//! assert!(matches!(
//!     Request::parse(&buffer[..n]),
//!     Ok(Request::Inline { sequence: 7, payload: b"ping" })
//! ));
//! assert_eq!(Request::parse(&buffer[..3]), Err(ProtocolError::Truncated));
//! assert_eq!(Version::CURRENT.to_string(), "1.2");
//! ```
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The interface type of the echo channel (its VMBus class id), as a 128-bit GUID value.
pub const INTERFACE_TYPE: u128 = 0x6563686f_766d_4b6d_8c6c_000000000001;

/// The interface instance the echo VSP offers, as a 128-bit GUID value.
pub const INTERFACE_INSTANCE: u128 = 0x6563686f_766d_4b6d_8c6c_0000000000ff;

/// The IOCTL a VM worker process sends the VSP's control device (`\\.\\EchoVsp`):
/// `CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS)`, its input buffer a
/// [`SetVm`].
pub const IOCTL_ECHO_SET_VM: u32 = (0x22 << 16) | (0x800 << 2);

/// The input buffer of [`IOCTL_ECHO_SET_VM`]: the worker's VMBus handle value, as the worker
/// process sees it.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SetVm {
    /// The handle value (a `HANDLE` widened to 64 bits).
    pub vmbus_handle: zerocopy::little_endian::U64,
}

impl SetVm {
    /// Parses the IOCTL's input buffer.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Truncated`] or [`ProtocolError::TrailingBytes`] for any other length.
    pub fn parse(bytes: &[u8]) -> Result<u64, ProtocolError> {
        exact::<Self>(bytes).map(|m| m.vmbus_handle.get())
    }
}

/// The most payload bytes one echo request carries (inline or through the GPADL).
pub const MAX_PAYLOAD: usize = 256;

/// The largest message of the protocol: a header and [`MAX_PAYLOAD`] bytes, rounded up to a
/// multiple of 8 (the completion buffer rule of synchronous requests).
pub const MAX_MESSAGE: usize = (size_of::<EchoResponse>() + MAX_PAYLOAD + 7) & !7;

/// A protocol version: major (incompatible changes) and minor (additions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Incompatible when different.
    pub major: u16,
    /// The newer side falls back to the older minor.
    pub minor: u16,
}

impl Version {
    /// The version this crate speaks.
    pub const CURRENT: Self = Self { major: 1, minor: 2 };

    /// The wire form: major in the high half.
    pub const fn to_wire(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }

    /// From the wire form.
    pub const fn from_wire(raw: u32) -> Self {
        // CAST: the two halves of a u32.
        Self {
            major: (raw >> 16) as u16,
            minor: raw as u16,
        }
    }

    /// What a server speaking `self` agrees to when the client offers `offered`: the same
    /// major, the smaller minor; `None` for another major.
    pub fn negotiate(self, offered: Self) -> Option<Self> {
        (self.major == offered.major).then(|| Self {
            major: self.major,
            minor: self.minor.min(offered.minor),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The kind of a message, the first field of every header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// [`VersionRequest`] / [`VersionResponse`].
    Version = 1,
    /// [`EchoInline`] / [`EchoResponse`].
    EchoInline = 2,
    /// [`EchoGpadl`] / [`EchoResponse`].
    EchoGpadl = 3,
    /// [`ErrorResponse`]: a well-formed request the server cannot serve.
    Error = 4,
}

impl Kind {
    fn from_wire(raw: u32) -> Result<Self, ProtocolError> {
        match raw {
            1 => Ok(Self::Version),
            2 => Ok(Self::EchoInline),
            3 => Ok(Self::EchoGpadl),
            4 => Ok(Self::Error),
            other => Err(ProtocolError::UnknownKind(other)),
        }
    }
}

/// The header every message starts with.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Header {
    /// A [`Kind`].
    pub kind: U32,
    /// The request's sequence number (echoed in the response).
    pub sequence: U32,
}

/// Client → server: the newest version the client speaks.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct VersionRequest {
    /// Kind [`Kind::Version`].
    pub header: Header,
    /// [`Version::to_wire`].
    pub version: U32,
    /// Zero.
    pub reserved: U32,
}

/// Server → client: the version both use, or a refusal.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct VersionResponse {
    /// Kind [`Kind::Version`].
    pub header: Header,
    /// 1 when accepted, 0 when refused.
    pub accepted: U32,
    /// [`Version::to_wire`] of the version in use (the server's own when refused).
    pub version: U32,
}

/// Client → server: echo the payload that follows this header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct EchoInline {
    /// Kind [`Kind::EchoInline`].
    pub header: Header,
    /// The payload length (the bytes after this header).
    pub length: U32,
    /// Zero.
    pub reserved: U32,
}

/// Client → server: echo `length` bytes at `offset` of GPADL `gpadl`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct EchoGpadl {
    /// Kind [`Kind::EchoGpadl`].
    pub header: Header,
    /// The GPADL handle the client created.
    pub gpadl: U32,
    /// The byte offset of the payload in the GPADL.
    pub offset: U32,
    /// The payload length.
    pub length: U32,
    /// Zero.
    pub reserved: U32,
}

/// Server → client: the echoed payload follows this header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct EchoResponse {
    /// The request's kind and sequence number.
    pub header: Header,
    /// The payload length (the bytes after this header).
    pub length: U32,
    /// Zero.
    pub reserved: U32,
}

/// Server → client: a well-formed request the server refuses (a malformed one is failed
/// instead, which stops the channel's incoming queue).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ErrorResponse {
    /// Kind [`Kind::Error`] and the request's sequence number.
    pub header: Header,
    /// A [`Refusal`].
    pub code: U32,
    /// Zero.
    pub reserved: U32,
}

/// Why the server refused a well-formed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Refusal {
    /// An echo before a version was agreed.
    NotNegotiated = 1,
    /// The GPADL is unknown, cannot be mapped, or the range is outside it.
    GpadlUnavailable = 2,
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Fewer bytes than the message's header or its stated length.
    Truncated,
    /// A kind this version does not know.
    UnknownKind(u32),
    /// A payload longer than [`MAX_PAYLOAD`].
    PayloadTooLarge(u32),
    /// More bytes than the message declares.
    TrailingBytes,
    /// A reserved field that is not zero, or a flag outside its values.
    Reserved,
    /// An output buffer too small for the message.
    BufferTooSmall,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated message"),
            Self::UnknownKind(kind) => write!(f, "unknown message kind {kind}"),
            Self::PayloadTooLarge(n) => write!(f, "payload of {n} bytes exceeds {MAX_PAYLOAD}"),
            Self::TrailingBytes => f.write_str("bytes after the end of the message"),
            Self::Reserved => f.write_str("a reserved field is not zero"),
            Self::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl core::error::Error for ProtocolError {}

/// A request the server received, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// The client's newest version.
    Version {
        /// The request's sequence number.
        sequence: u32,
        /// The version offered.
        offered: Version,
    },
    /// Echo `payload`.
    Inline {
        /// The request's sequence number.
        sequence: u32,
        /// The bytes to echo.
        payload: &'a [u8],
    },
    /// Echo the bytes in the client's GPADL.
    Gpadl {
        /// The request's sequence number.
        sequence: u32,
        /// The GPADL handle.
        gpadl: u32,
        /// Where the payload starts in the GPADL.
        offset: u32,
        /// The payload length, at most [`MAX_PAYLOAD`] (checked).
        length: u32,
    },
}

fn kind_of(bytes: &[u8]) -> Result<Kind, ProtocolError> {
    let (header, _) = Header::read_from_prefix(bytes).map_err(|_| ProtocolError::Truncated)?;
    Kind::from_wire(header.kind.get())
}

fn exact<T: FromBytes + KnownLayout + Immutable>(bytes: &[u8]) -> Result<T, ProtocolError> {
    match T::read_from_prefix(bytes) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(ProtocolError::TrailingBytes),
        Err(_) => Err(ProtocolError::Truncated),
    }
}

fn check_length(length: u32) -> Result<usize, ProtocolError> {
    // CAST: u32 to usize, lossless on every target this crate builds for.
    let n = length as usize;
    if n > MAX_PAYLOAD {
        return Err(ProtocolError::PayloadTooLarge(length));
    }
    Ok(n)
}

/// Splits a header-plus-payload message whose header has a `length` field.
fn with_payload<T: FromBytes + KnownLayout + Immutable>(
    bytes: &[u8],
    length: impl Fn(&T) -> (u32, u32),
) -> Result<(T, &[u8]), ProtocolError> {
    let (value, rest) = T::read_from_prefix(bytes).map_err(|_| ProtocolError::Truncated)?;
    let (declared, reserved) = length(&value);
    if reserved != 0 {
        return Err(ProtocolError::Reserved);
    }
    let n = check_length(declared)?;
    match rest.len() {
        len if len < n => Err(ProtocolError::Truncated),
        len if len > n => Err(ProtocolError::TrailingBytes),
        _ => Ok((value, rest)),
    }
}

impl<'a> Request<'a> {
    /// Parses a request from untrusted bytes.
    ///
    /// # Errors
    ///
    /// [`ProtocolError`] for anything but exactly one well-formed request.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProtocolError> {
        match kind_of(bytes)? {
            Kind::Version => {
                let m: VersionRequest = exact(bytes)?;
                if m.reserved.get() != 0 {
                    return Err(ProtocolError::Reserved);
                }
                Ok(Self::Version {
                    sequence: m.header.sequence.get(),
                    offered: Version::from_wire(m.version.get()),
                })
            }
            Kind::EchoInline => {
                let (m, payload) =
                    with_payload(bytes, |m: &EchoInline| (m.length.get(), m.reserved.get()))?;
                Ok(Self::Inline {
                    sequence: m.header.sequence.get(),
                    payload,
                })
            }
            Kind::EchoGpadl => {
                let m: EchoGpadl = exact(bytes)?;
                if m.reserved.get() != 0 {
                    return Err(ProtocolError::Reserved);
                }
                check_length(m.length.get())?;
                Ok(Self::Gpadl {
                    sequence: m.header.sequence.get(),
                    gpadl: m.gpadl.get(),
                    offset: m.offset.get(),
                    length: m.length.get(),
                })
            }
            Kind::Error => Err(ProtocolError::UnknownKind(Kind::Error as u32)),
        }
    }
}

/// A response the client received, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// The server's answer to a version request.
    Version {
        /// The request's sequence number.
        sequence: u32,
        /// Whether the server accepted.
        accepted: bool,
        /// The version in use (the server's own when refused).
        version: Version,
    },
    /// The server refused the request.
    Refused {
        /// The request's sequence number.
        sequence: u32,
        /// Why.
        refusal: Refusal,
    },
    /// An echo.
    Echo {
        /// The kind of the request answered ([`Kind::EchoInline`] or [`Kind::EchoGpadl`]).
        kind: Kind,
        /// The request's sequence number.
        sequence: u32,
        /// The bytes echoed.
        payload: &'a [u8],
    },
}

impl<'a> Response<'a> {
    /// Parses a response from untrusted bytes.
    ///
    /// # Errors
    ///
    /// [`ProtocolError`] for anything but exactly one well-formed response.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProtocolError> {
        match kind_of(bytes)? {
            Kind::Version => {
                let m: VersionResponse = exact(bytes)?;
                let accepted = match m.accepted.get() {
                    0 => false,
                    1 => true,
                    _ => return Err(ProtocolError::Reserved),
                };
                Ok(Self::Version {
                    sequence: m.header.sequence.get(),
                    accepted,
                    version: Version::from_wire(m.version.get()),
                })
            }
            Kind::Error => {
                let m: ErrorResponse = exact(bytes)?;
                let refusal = match (m.code.get(), m.reserved.get()) {
                    (1, 0) => Refusal::NotNegotiated,
                    (2, 0) => Refusal::GpadlUnavailable,
                    _ => return Err(ProtocolError::Reserved),
                };
                Ok(Self::Refused {
                    sequence: m.header.sequence.get(),
                    refusal,
                })
            }
            kind => {
                let (m, payload) =
                    with_payload(bytes, |m: &EchoResponse| (m.length.get(), m.reserved.get()))?;
                Ok(Self::Echo {
                    kind,
                    sequence: m.header.sequence.get(),
                    payload,
                })
            }
        }
    }
}

fn header(kind: Kind, sequence: u32) -> Header {
    Header {
        kind: U32::new(kind as u32),
        sequence: U32::new(sequence),
    }
}

/// Writes `message` and then `payload` into `out`; returns the length written.
fn put(out: &mut [u8], message: &[u8], payload: &[u8]) -> Result<usize, ProtocolError> {
    let total = message.len() + payload.len();
    let out = out.get_mut(..total).ok_or(ProtocolError::BufferTooSmall)?;
    let (head, tail) = out.split_at_mut(message.len());
    head.copy_from_slice(message);
    tail.copy_from_slice(payload);
    Ok(total)
}

fn payload_length(payload: &[u8]) -> Result<U32, ProtocolError> {
    if payload.len() > MAX_PAYLOAD {
        // CAST: at most a slice length; saturated for the error value only.
        return Err(ProtocolError::PayloadTooLarge(
            u32::try_from(payload.len()).unwrap_or(u32::MAX),
        ));
    }
    // CAST: at most MAX_PAYLOAD (checked above).
    Ok(U32::new(payload.len() as u32))
}

/// The version request offering `version`.
pub fn version_request(sequence: u32, version: Version) -> VersionRequest {
    VersionRequest {
        header: header(Kind::Version, sequence),
        version: U32::new(version.to_wire()),
        reserved: U32::ZERO,
    }
}

/// The server's answer: `Some(version)` accepted, `None` refused (naming `own`).
pub fn version_response(sequence: u32, agreed: Option<Version>, own: Version) -> VersionResponse {
    VersionResponse {
        header: header(Kind::Version, sequence),
        accepted: U32::new(u32::from(agreed.is_some())),
        version: U32::new(agreed.unwrap_or(own).to_wire()),
    }
}

/// The server's refusal of request `sequence`.
pub fn error_response(sequence: u32, refusal: Refusal) -> ErrorResponse {
    ErrorResponse {
        header: header(Kind::Error, sequence),
        code: U32::new(refusal as u32),
        reserved: U32::ZERO,
    }
}

/// The GPADL echo request for `length` bytes at `offset` of `gpadl`.
///
/// # Errors
///
/// [`ProtocolError::PayloadTooLarge`] past [`MAX_PAYLOAD`].
pub fn gpadl_request(
    sequence: u32,
    gpadl: u32,
    offset: u32,
    length: u32,
) -> Result<EchoGpadl, ProtocolError> {
    check_length(length)?;
    Ok(EchoGpadl {
        header: header(Kind::EchoGpadl, sequence),
        gpadl: U32::new(gpadl),
        offset: U32::new(offset),
        length: U32::new(length),
        reserved: U32::ZERO,
    })
}

/// Encodes an inline echo request of `payload` into `out`; returns its length.
///
/// # Errors
///
/// [`ProtocolError::PayloadTooLarge`] past [`MAX_PAYLOAD`], [`ProtocolError::BufferTooSmall`].
pub fn encode_inline(
    out: &mut [u8],
    sequence: u32,
    payload: &[u8],
) -> Result<usize, ProtocolError> {
    let message = EchoInline {
        header: header(Kind::EchoInline, sequence),
        length: payload_length(payload)?,
        reserved: U32::ZERO,
    };
    put(out, message.as_bytes(), payload)
}

/// Encodes the echo response of a `kind` request into `out`; returns its length.
///
/// # Errors
///
/// [`ProtocolError::PayloadTooLarge`] past [`MAX_PAYLOAD`], [`ProtocolError::BufferTooSmall`].
pub fn encode_echo_response(
    out: &mut [u8],
    kind: Kind,
    sequence: u32,
    payload: &[u8],
) -> Result<usize, ProtocolError> {
    let message = EchoResponse {
        header: header(kind, sequence),
        length: payload_length(payload)?,
        reserved: U32::ZERO,
    };
    put(out, message.as_bytes(), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_round_trips() {
        let mut buffer = [0u8; MAX_MESSAGE];
        let n = encode_inline(&mut buffer, 3, b"abc").unwrap();
        assert_eq!(
            Request::parse(&buffer[..n]),
            Ok(Request::Inline {
                sequence: 3,
                payload: b"abc"
            })
        );
        let v = version_request(1, Version::CURRENT);
        assert_eq!(
            Request::parse(v.as_bytes()),
            Ok(Request::Version {
                sequence: 1,
                offered: Version::CURRENT
            })
        );
        let g = gpadl_request(9, 0x55, 16, 200).unwrap();
        assert_eq!(
            Request::parse(g.as_bytes()),
            Ok(Request::Gpadl {
                sequence: 9,
                gpadl: 0x55,
                offset: 16,
                length: 200
            })
        );
    }

    #[test]
    fn every_response_round_trips() {
        let mut buffer = [0u8; MAX_MESSAGE];
        let n = encode_echo_response(&mut buffer, Kind::EchoGpadl, 4, &[7; MAX_PAYLOAD]).unwrap();
        assert_eq!(n, 16 + MAX_PAYLOAD);
        assert!(matches!(
            Response::parse(&buffer[..n]),
            Ok(Response::Echo { kind: Kind::EchoGpadl, sequence: 4, payload }) if payload == [7; MAX_PAYLOAD]
        ));
        let e = error_response(5, Refusal::GpadlUnavailable);
        assert_eq!(
            Response::parse(e.as_bytes()),
            Ok(Response::Refused {
                sequence: 5,
                refusal: Refusal::GpadlUnavailable
            })
        );
        assert_eq!(
            Request::parse(e.as_bytes()),
            Err(ProtocolError::UnknownKind(4))
        );
        let r = version_response(2, None, Version::CURRENT);
        assert_eq!(
            Response::parse(r.as_bytes()),
            Ok(Response::Version {
                sequence: 2,
                accepted: false,
                version: Version::CURRENT
            })
        );
    }

    #[test]
    fn every_truncation_of_every_message_is_an_error() {
        let mut buffer = [0u8; MAX_MESSAGE];
        let n = encode_inline(&mut buffer, 3, b"abcdef").unwrap();
        let v = version_request(1, Version::CURRENT);
        let g = gpadl_request(9, 1, 0, 8).unwrap();
        for message in [&buffer[..n], v.as_bytes(), g.as_bytes()] {
            for cut in 0..message.len() {
                assert_eq!(
                    Request::parse(&message[..cut]),
                    Err(ProtocolError::Truncated),
                    "{cut}"
                );
            }
        }
    }

    #[test]
    fn malformed_requests_are_typed_errors() {
        let mut buffer = [0u8; MAX_MESSAGE + 8];
        let n = encode_inline(&mut buffer, 1, b"xy").unwrap();
        assert_eq!(
            Request::parse(&buffer[..n + 1]),
            Err(ProtocolError::TrailingBytes)
        );
        // A declared length past the maximum.
        buffer[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert_eq!(
            Request::parse(&buffer[..n]),
            Err(ProtocolError::PayloadTooLarge(MAX_PAYLOAD as u32 + 1))
        );
        buffer[..4].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(
            Request::parse(&buffer[..n]),
            Err(ProtocolError::UnknownKind(99))
        );
        let mut v = version_request(1, Version::CURRENT);
        v.reserved = U32::new(1);
        assert_eq!(Request::parse(v.as_bytes()), Err(ProtocolError::Reserved));
        assert_eq!(
            gpadl_request(1, 1, 0, MAX_PAYLOAD as u32 + 1),
            Err(ProtocolError::PayloadTooLarge(MAX_PAYLOAD as u32 + 1))
        );
        assert_eq!(
            encode_inline(&mut [0u8; 8], 1, b""),
            Err(ProtocolError::BufferTooSmall)
        );
        let mut r = version_response(1, Some(Version::CURRENT), Version::CURRENT);
        r.accepted = U32::new(2);
        assert_eq!(Response::parse(r.as_bytes()), Err(ProtocolError::Reserved));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every 3-byte prefix pattern over headers of every kind and length field.
        let mut bytes = [0u8; 40];
        for kind in 0..6u32 {
            for length in [0u32, 1, 8, 24, 256, 257, u32::MAX] {
                bytes[..4].copy_from_slice(&kind.to_le_bytes());
                bytes[8..12].copy_from_slice(&length.to_le_bytes());
                for len in 0..bytes.len() {
                    let _ = Request::parse(&bytes[..len]);
                    let _ = Response::parse(&bytes[..len]);
                }
            }
        }
    }

    #[test]
    fn negotiation_takes_the_smaller_minor_of_one_major() {
        let server = Version { major: 1, minor: 2 };
        assert_eq!(
            server.negotiate(Version { major: 1, minor: 5 }),
            Some(Version { major: 1, minor: 2 })
        );
        assert_eq!(
            server.negotiate(Version { major: 1, minor: 0 }),
            Some(Version { major: 1, minor: 0 })
        );
        assert_eq!(server.negotiate(Version { major: 2, minor: 0 }), None);
        assert_eq!(
            Version::from_wire(Version::CURRENT.to_wire()),
            Version::CURRENT
        );
    }
}
