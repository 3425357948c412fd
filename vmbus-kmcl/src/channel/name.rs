//! Friendly names: the UTF-16 text KMCL shows in debugger output and performance counters.

use crate::error::{Error, Result};

/// The number of UTF-16 units `text` encodes to (for sizing a [`Utf16Buf`] in `const`).
pub const fn utf16_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut units = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // A UTF-8 lead byte says how long its sequence is; four-byte sequences are outside the
        // basic plane and take a surrogate pair.
        let (len, width) = if b < 0x80 {
            (1, 1)
        } else if b < 0xE0 {
            (2, 1)
        } else if b < 0xF0 {
            (3, 1)
        } else {
            (4, 2)
        };
        units += width;
        i += len;
    }
    units
}

/// UTF-16 text in a fixed buffer of `N` units, made from a `&str` without allocating, in
/// `const` context or at run time.
///
/// # Examples
///
/// ```
/// use vmbus_kmcl::channel::Utf16Buf;
///
/// const NAME: Utf16Buf<4> = match Utf16Buf::from_str("Echo") {
///     Ok(name) => name,
///     Err(_) => panic!("does not fit"),
/// };
/// assert_eq!(NAME.as_slice(), &[0x45, 0x63, 0x68, 0x6f]);
/// let runtime: Utf16Buf<16> = Utf16Buf::from_str("Échos ⚡").unwrap();
/// assert_eq!(runtime.as_slice().len(), 7);
/// assert!(Utf16Buf::<2>::from_str("too long").is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf16Buf<const N: usize> {
    units: [u16; N],
    len: usize,
}

impl<const N: usize> Utf16Buf<N> {
    /// Encodes `text`.
    ///
    /// # Errors
    ///
    /// [`Error::LengthTooLarge`] when the text needs more than `N` units.
    pub const fn from_str(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        let mut units = [0u16; N];
        let mut len = 0;
        let mut i = 0;
        while i < bytes.len() {
            // `text` is valid UTF-8, so every lead byte is followed by its continuation bytes.
            let b = bytes[i] as u32;
            let (code, width) = if b < 0x80 {
                (b, 1)
            } else if b < 0xE0 {
                (((b & 0x1F) << 6) | (bytes[i + 1] as u32 & 0x3F), 2)
            } else if b < 0xF0 {
                (
                    ((b & 0x0F) << 12)
                        | ((bytes[i + 1] as u32 & 0x3F) << 6)
                        | (bytes[i + 2] as u32 & 0x3F),
                    3,
                )
            } else {
                (
                    ((b & 0x07) << 18)
                        | ((bytes[i + 1] as u32 & 0x3F) << 12)
                        | ((bytes[i + 2] as u32 & 0x3F) << 6)
                        | (bytes[i + 3] as u32 & 0x3F),
                    4,
                )
            };
            if code >= 0x1_0000 {
                if len + 2 > N {
                    return Err(Error::LengthTooLarge);
                }
                let offset = code - 0x1_0000;
                // CAST: both halves are 10-bit values plus a surrogate base, below 0x10000.
                units[len] = (0xD800 + (offset >> 10)) as u16;
                units[len + 1] = (0xDC00 + (offset & 0x3FF)) as u16;
                len += 2;
            } else {
                if len + 1 > N {
                    return Err(Error::LengthTooLarge);
                }
                // CAST: below 0x10000.
                units[len] = code as u16;
                len += 1;
            }
            i += width;
        }
        Ok(Self { units, len })
    }

    /// The encoded text.
    pub const fn as_slice(&self) -> &[u16] {
        self.units.split_at(self.len).0
    }
}

/// A `&'static [u16]` from a string literal, encoded at compile time: the argument of
/// [`ChannelBuilder::set_friendly_name`](crate::channel::ChannelBuilder::set_friendly_name)
/// for a fixed name.
///
/// ```
/// let name: &'static [u16] = vmbus_kmcl::utf16!("Echo");
/// assert_eq!(name, &[0x45, 0x63, 0x68, 0x6f]);
/// ```
#[macro_export]
macro_rules! utf16 {
    ($text:expr) => {{
        const TEXT: &str = $text;
        const UNITS: usize = $crate::channel::utf16_len(TEXT);
        const BUF: $crate::channel::Utf16Buf<UNITS> =
            match $crate::channel::Utf16Buf::<UNITS>::from_str(TEXT) {
                ::core::result::Result::Ok(buf) => buf,
                ::core::result::Result::Err(_) => ::core::panic!("utf16_len is exact"),
            };
        const SLICE: &[u16] = BUF.as_slice();
        SLICE
    }};
}
