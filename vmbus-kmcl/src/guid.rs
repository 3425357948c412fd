//! Interface GUIDs: the type and instance identifiers of VMBus channels.

use core::fmt;

use vmbus_kmcl_sys::GUID;

/// A GUID, as VMBus uses them to name a channel's protocol (the interface type) and one
/// instance of it (the interface instance).
///
/// Layout-identical to the C `GUID` (`#[repr(transparent)]`), so it converts both ways for
/// free. Build it in `const` context from its fields ([`Guid::from_fields`]), from the 128-bit
/// number its text form spells ([`Guid::from_u128`]), or from that text ([`Guid::parse`], and
/// the [`guid!`](crate::guid!) macro, which rejects a malformed literal at compile time).
///
/// # Examples
///
/// ```
/// use vmbus_kmcl::{guid, Guid};
///
/// const ECHO: Guid = guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b");
/// assert_eq!(ECHO, Guid::from_u128(0x8f1a2b3c_4d5e_4f60_8a7b_9c0d1e2f3a4b));
/// assert_eq!(ECHO.to_raw().Data1, 0x8f1a2b3c);
/// assert_eq!(ECHO.to_raw().Data4, [0x8a, 0x7b, 0x9c, 0x0d, 0x1e, 0x2f, 0x3a, 0x4b]);
/// assert_eq!(Guid::parse("{8F1A2B3C-4D5E-4F60-8A7B-9C0D1E2F3A4B}"), Ok(ECHO));
/// assert!(Guid::parse("8f1a2b3c-4d5e-4f60-8a7b").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Guid(GUID);

/// Why a GUID text did not parse: the byte offset of the first character that does not fit the
/// form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (optionally in braces), or the text's length
/// when it ends too early or goes on too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuidParseError {
    /// Byte offset of the offending character (or the length, for a wrong length).
    pub offset: usize,
}

impl fmt::Display for GuidParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a GUID: unexpected character or end at byte {}",
            self.offset
        )
    }
}

impl Guid {
    /// The all-zero GUID.
    pub const NIL: Guid = Guid::from_u128(0);

    /// A GUID from the fields of the C structure.
    pub const fn from_fields(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self(GUID {
            Data1: data1,
            Data2: data2,
            Data3: data3,
            Data4: data4,
        })
    }

    /// The GUID whose text form spells `value` in hex, most significant digit first (so
    /// `0x01234567_89ab_cdef_0123_456789abcdef` is `01234567-89ab-cdef-0123-456789abcdef`).
    pub const fn from_u128(value: u128) -> Self {
        let b = value.to_be_bytes();
        Self::from_fields(
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
            u16::from_be_bytes([b[6], b[7]]),
            [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        )
    }

    /// The 128-bit number the GUID's text form spells (the inverse of [`Guid::from_u128`]).
    pub const fn to_u128(self) -> u128 {
        let d1 = self.0.Data1.to_be_bytes();
        let d2 = self.0.Data2.to_be_bytes();
        let d3 = self.0.Data3.to_be_bytes();
        let d4 = self.0.Data4;
        u128::from_be_bytes([
            d1[0], d1[1], d1[2], d1[3], d2[0], d2[1], d3[0], d3[1], d4[0], d4[1], d4[2], d4[3],
            d4[4], d4[5], d4[6], d4[7],
        ])
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits in either case), optionally
    /// in braces. A `const fn`: in a `const` item, the [`guid!`](crate::guid!) macro turns a
    /// malformed literal into a compile error.
    ///
    /// # Errors
    ///
    /// [`GuidParseError`] with the offset of the first character that does not fit.
    pub const fn parse(text: &str) -> Result<Self, GuidParseError> {
        let bytes = text.as_bytes();
        let (start, end) = if !bytes.is_empty() && bytes[0] == b'{' {
            if bytes.len() != 38 {
                return Err(GuidParseError {
                    offset: bytes.len(),
                });
            }
            if bytes[37] != b'}' {
                return Err(GuidParseError { offset: 37 });
            }
            (1, 37)
        } else {
            if bytes.len() != 36 {
                return Err(GuidParseError {
                    offset: bytes.len(),
                });
            }
            (0, 36)
        };
        let mut value: u128 = 0;
        let mut i = start;
        while i < end {
            let position = i - start;
            let c = bytes[i];
            if position == 8 || position == 13 || position == 18 || position == 23 {
                if c != b'-' {
                    return Err(GuidParseError { offset: i });
                }
            } else {
                let digit = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    b'A'..=b'F' => c - b'A' + 10,
                    _ => return Err(GuidParseError { offset: i }),
                };
                // 32 digits shift in exactly 128 bits: no overflow.
                value = (value << 4) | digit as u128;
            }
            i += 1;
        }
        Ok(Self::from_u128(value))
    }

    /// The C structure.
    pub const fn to_raw(self) -> GUID {
        self.0
    }

    /// A GUID from the C structure.
    pub const fn from_raw(raw: GUID) -> Self {
        Self(raw)
    }
}

impl From<GUID> for Guid {
    fn from(raw: GUID) -> Self {
        Self(raw)
    }
}

impl From<Guid> for GUID {
    fn from(guid: Guid) -> Self {
        guid.0
    }
}

impl fmt::Display for Guid {
    /// The lower-case text form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d4 = self.0.Data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.0.Data1,
            self.0.Data2,
            self.0.Data3,
            d4[0],
            d4[1],
            d4[2],
            d4[3],
            d4[4],
            d4[5],
            d4[6],
            d4[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// A [`Guid`] from a string literal, checked at compile time: a malformed literal fails the
/// build (the text is parsed by [`Guid::parse`] in a `const`).
///
/// ```
/// const TYPE: vmbus_kmcl::Guid = vmbus_kmcl::guid!("{00112233-4455-6677-8899-aabbccddeeff}");
/// assert_eq!(TYPE.to_u128(), 0x00112233_4455_6677_8899_aabbccddeeff);
/// ```
///
/// ```compile_fail
/// const BAD: vmbus_kmcl::Guid = vmbus_kmcl::guid!("00112233-4455-6677-8899");
/// ```
#[macro_export]
macro_rules! guid {
    ($text:expr) => {{
        const GUID: $crate::Guid = match $crate::Guid::parse($text) {
            ::core::result::Result::Ok(guid) => guid,
            ::core::result::Result::Err(_) => ::core::panic!("malformed GUID literal"),
        };
        GUID
    }};
}
