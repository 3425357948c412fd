//! The VSC's one setting: the GUID of `KMCL_CLIENT_INTERFACE_TYPE`, the interface type its
//! kernel image asks the VMBus bus driver for (`IRP_MN_QUERY_INTERFACE`).
//!
//! Its value is defined by the WDK (`VmbusKernelModeClientLibApi.h`) and not published
//! anywhere else, so this project does not carry it: the image reads it at run time from the
//! string value [`INTERFACE_TYPE_VALUE`] under its service key's `Parameters` subkey, which its
//! INF writes from a token the installer fills in. [`interface_type_from_registry`] checks
//! what the registry returned.

use core::fmt;

use vmbus_kmcl::{Guid, GuidParseError};

/// The name of the registry value (`REG_SZ`, under `<service key>\Parameters`) that holds
/// `KMCL_CLIENT_INTERFACE_TYPE` in its text form, `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`.
pub const INTERFACE_TYPE_VALUE: &str = "KmclClientInterfaceType";

/// `REG_SZ`, the registry type of a string value.
pub const REG_SZ: u32 = 1;

/// Why the registry value did not name an interface type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The value is not a string (`REG_SZ`); this is its registry type.
    NotAString {
        /// The value's registry type.
        reg_type: u32,
    },
    /// The data is not UTF-16 text (an odd number of bytes).
    OddLength {
        /// The number of bytes.
        len: usize,
    },
    /// The text is not a GUID (the installer's placeholder, say).
    NotAGuid(GuidParseError),
    /// The text is the all-zero GUID, which names no interface.
    Nil,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAString { reg_type } => {
                write!(f, "registry type {reg_type}, not REG_SZ ({REG_SZ})")
            }
            Self::OddLength { len } => write!(f, "{len} bytes: not UTF-16 text"),
            Self::NotAGuid(error) => write!(f, "{error}"),
            Self::Nil => f.write_str("the nil GUID names no interface"),
        }
    }
}

/// The longest text accepted: a GUID in braces.
const GUID_TEXT: usize = 38;

/// The interface type in a registry value of type `reg_type` whose data is `data`
/// (little-endian UTF-16, with or without terminating NULs): a GUID in its text form, with or
/// without braces, hex digits in either case.
///
/// # Errors
///
/// [`ConfigError`]: not a string, not UTF-16, not exactly a GUID (the offset in the error
/// counts UTF-16 units), or the nil GUID.
///
/// # Examples
///
/// ```
/// use echo_vsc::config::{interface_type_from_registry, ConfigError, REG_SZ};
///
/// let text: Vec<u8> = "{8F1A2B3C-4D5E-4F60-8A7B-9C0D1E2F3A4B}\0"
///     .encode_utf16()
///     .flat_map(u16::to_le_bytes)
///     .collect();
/// assert_eq!(
///     interface_type_from_registry(REG_SZ, &text),
///     Ok(vmbus_kmcl::guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"))
/// );
/// assert!(matches!(
///     interface_type_from_registry(REG_SZ, b"{\0?\0}\0"),
///     Err(ConfigError::NotAGuid(_))
/// ));
/// ```
pub fn interface_type_from_registry(reg_type: u32, data: &[u8]) -> Result<Guid, ConfigError> {
    if reg_type != REG_SZ {
        return Err(ConfigError::NotAString { reg_type });
    }
    if data.len() % 2 != 0 {
        return Err(ConfigError::OddLength { len: data.len() });
    }
    let units = data
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]));
    // The text ends at the first NUL (REG_SZ data usually includes one).
    let text_len = units.clone().take_while(|&u| u != 0).count();
    let mut ascii = [0u8; GUID_TEXT];
    for (i, unit) in units.take(text_len).enumerate() {
        let Some(byte) = ascii.get_mut(i) else {
            return Err(ConfigError::NotAGuid(GuidParseError { offset: text_len }));
        };
        *byte = match u8::try_from(unit) {
            Ok(b) if b.is_ascii() => b,
            _ => return Err(ConfigError::NotAGuid(GuidParseError { offset: i })),
        };
    }
    let text = core::str::from_utf8(&ascii[..text_len.min(GUID_TEXT)]).map_err(|e| {
        ConfigError::NotAGuid(GuidParseError {
            offset: e.valid_up_to(),
        })
    })?;
    match Guid::parse(text) {
        Ok(guid) if guid == Guid::NIL => Err(ConfigError::Nil),
        Ok(guid) => Ok(guid),
        Err(error) => Err(ConfigError::NotAGuid(error)),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn reg_sz(text: &str) -> std::vec::Vec<u8> {
        text.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    const ECHO: Guid = vmbus_kmcl::guid!("8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b");

    #[test]
    fn a_guid_with_or_without_braces_and_nuls_is_read() {
        for text in [
            "{8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b}",
            "{8F1A2B3C-4D5E-4F60-8A7B-9C0D1E2F3A4B}\0",
            "8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b\0\0",
        ] {
            assert_eq!(
                interface_type_from_registry(REG_SZ, &reg_sz(text)),
                Ok(ECHO)
            );
        }
    }

    /// The string the INF writes until the installer fills in the GUID.
    fn inf_placeholder() -> &'static str {
        let inf = include_str!("../../images/echo-vsc-sys/echo_vsc.inf");
        let line = inf
            .lines()
            .find(|l| l.starts_with("KMCL_CLIENT_INTERFACE_TYPE"))
            .expect("the INF's token");
        let value = line.split_once('=').expect("a token line").1.trim();
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .expect("quoted")
    }

    #[test]
    fn the_installers_placeholder_is_refused() {
        let placeholder = inf_placeholder();
        assert!(placeholder.contains("UNFILLED"), "{placeholder}");
        assert_eq!(
            interface_type_from_registry(REG_SZ, &reg_sz(placeholder)),
            Err(ConfigError::NotAGuid(GuidParseError {
                offset: placeholder.len()
            }))
        );
        assert!(matches!(
            interface_type_from_registry(REG_SZ, &reg_sz("%KMCL_CLIENT_INTERFACE_TYPE%")),
            Err(ConfigError::NotAGuid(_))
        ));
        // The INF's value name is the one the driver reads.
        let inf = include_str!("../../images/echo-vsc-sys/echo_vsc.inf");
        assert!(inf.contains(&std::format!(
            "HKR, Parameters, {INTERFACE_TYPE_VALUE}, 0x00000000,"
        )));
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        assert_eq!(
            interface_type_from_registry(4, &[1, 0, 0, 0]),
            Err(ConfigError::NotAString { reg_type: 4 })
        );
        assert_eq!(
            interface_type_from_registry(REG_SZ, &[b'{', 0, b'8']),
            Err(ConfigError::OddLength { len: 3 })
        );
        assert_eq!(
            interface_type_from_registry(REG_SZ, &[]),
            Err(ConfigError::NotAGuid(GuidParseError { offset: 0 }))
        );
        assert_eq!(
            interface_type_from_registry(
                REG_SZ,
                &reg_sz("\0{8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b}")
            ),
            Err(ConfigError::NotAGuid(GuidParseError { offset: 0 }))
        );
        // One character too many, in braces and without.
        assert_eq!(
            interface_type_from_registry(
                REG_SZ,
                &reg_sz("{8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b}x")
            ),
            Err(ConfigError::NotAGuid(GuidParseError { offset: 39 }))
        );
        // A non-ASCII character where a digit belongs.
        assert_eq!(
            interface_type_from_registry(
                REG_SZ,
                &reg_sz("{8f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4\u{e9}}")
            ),
            Err(ConfigError::NotAGuid(GuidParseError { offset: 36 }))
        );
        assert_eq!(
            interface_type_from_registry(REG_SZ, &reg_sz("{8f1a2b3c-4d5e-4f60-8a7b_9c0d1e2f3a4b}")),
            Err(ConfigError::NotAGuid(GuidParseError { offset: 24 }))
        );
        assert_eq!(
            interface_type_from_registry(REG_SZ, &reg_sz("00000000-0000-0000-0000-000000000000")),
            Err(ConfigError::Nil)
        );
    }
}
