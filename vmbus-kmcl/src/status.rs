//! NT status codes, as KMCL returns them.
//!
//! An `NTSTATUS` is a signed 32-bit value whose top two bits give its severity: success,
//! informational, warning or error. `NT_SUCCESS` holds for the first two. KMCL bends that rule
//! three times: `STATUS_PENDING` passes `NT_SUCCESS` although the work is not done,
//! `STATUS_BUFFER_OVERFLOW` (a warning) and `STATUS_MORE_PROCESSING_REQUIRED` (an error) fail it
//! although they mean "progress, call again". The wrappers of those functions therefore match
//! these codes before applying the generic rule, and hand them back as values, never as errors.

use core::fmt;
use vmbus_kmcl_sys::NTSTATUS;

use crate::error::{Error, Result};

/// An NT status code.
///
/// A transparent newtype over the raw `NTSTATUS` (`i32`), convertible both ways with `From`,
/// so a driver can return `status.into()` from `DriverEntry`.
///
/// # Examples
///
/// ```
/// use vmbus_kmcl::{NtStatus, Severity};
///
/// let status = NtStatus::INVALID_PARAMETER_2;
/// assert!(!status.is_success());
/// assert_eq!(status.severity(), Severity::Error);
/// assert_eq!(status.to_string(), "STATUS_INVALID_PARAMETER_2 (0xC00000F0)");
/// assert_eq!(i32::from(status), 0xC00000F0_u32 as i32);
/// ```
#[repr(transparent)]
#[must_use]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtStatus(NTSTATUS);

/// The severity class of a status: its top two bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// `00`: the operation succeeded.
    Success,
    /// `01`: success, with information.
    Informational,
    /// `10`: a warning; `NT_SUCCESS` is false.
    Warning,
    /// `11`: an error.
    Error,
}

/// Defines the named statuses and the table `name()` reads.
macro_rules! statuses {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, )*) => {
        impl NtStatus {
            $(
                $(#[$doc])*
                // CAST: NTSTATUS values are written as their unsigned bit patterns.
                pub const $name: Self = Self($value as u32 as i32);
            )*
        }

        /// Every named status with its symbolic name.
        const NAMES: &[(NtStatus, &str)] = &[
            $( (NtStatus::$name, concat!("STATUS_", stringify!($name))), )*
        ];
    };
}

statuses! {
    /// `STATUS_SUCCESS`: the operation completed.
    SUCCESS = 0x0000_0000,
    /// `STATUS_PENDING`: not finished yet; for external data, return and wait for redelivery.
    PENDING = 0x0000_0103,
    /// `STATUS_BUFFER_OVERFLOW`: from a save, a chunk was written and more follows; from a
    /// synchronous request with a zero timeout, the ring was full and nothing was queued.
    BUFFER_OVERFLOW = 0x8000_0005,
    /// `STATUS_UNSUCCESSFUL`: the operation failed, without a more precise reason.
    UNSUCCESSFUL = 0xC000_0001,
    /// `STATUS_INVALID_HANDLE`: the value names no open handle of the table it was looked up in.
    INVALID_HANDLE = 0xC000_0008,
    /// `STATUS_INVALID_CID`: no process or thread has that id.
    INVALID_CID = 0xC000_000B,
    /// `STATUS_INVALID_PARAMETER`: a parameter is invalid.
    INVALID_PARAMETER = 0xC000_000D,
    /// `STATUS_INVALID_DEVICE_REQUEST`: the request is not valid for this device (for example
    /// a request that did not come from user mode where one from user mode is required).
    INVALID_DEVICE_REQUEST = 0xC000_0010,
    /// `STATUS_MORE_PROCESSING_REQUIRED`: from a restore, the chunk was taken and more are
    /// expected. Error severity, yet not a failure there.
    MORE_PROCESSING_REQUIRED = 0xC000_0016,
    /// `STATUS_ACCESS_DENIED`: the access asked for was not granted.
    ACCESS_DENIED = 0xC000_0022,
    /// `STATUS_BUFFER_TOO_SMALL`: the buffer cannot hold the next piece; see the size reported.
    BUFFER_TOO_SMALL = 0xC000_0023,
    /// `STATUS_OBJECT_TYPE_MISMATCH`: the handle names an object of another type.
    OBJECT_TYPE_MISMATCH = 0xC000_0024,
    /// `STATUS_INSUFFICIENT_RESOURCES`: not enough memory or other resources.
    INSUFFICIENT_RESOURCES = 0xC000_009A,
    /// `STATUS_NOT_SUPPORTED`: the request is not supported (for example a root-side
    /// synchronous request that would wait).
    NOT_SUPPORTED = 0xC000_00BB,
    /// `STATUS_INVALID_PARAMETER_1`: the first parameter is invalid (for KMCL init setters: a
    /// bad channel, or one that is no longer being initialised).
    INVALID_PARAMETER_1 = 0xC000_00EF,
    /// `STATUS_INVALID_PARAMETER_2`: the second parameter is invalid.
    INVALID_PARAMETER_2 = 0xC000_00F0,
    /// `STATUS_INVALID_PARAMETER_3`: the third parameter is invalid.
    INVALID_PARAMETER_3 = 0xC000_00F1,
    /// `STATUS_CANCELLED`: the wait timed out and the request was cancelled.
    CANCELLED = 0xC000_0120,
    /// `STATUS_INVALID_DEVICE_STATE`: the device (here: the processor, at too high an IRQL) is
    /// not in a state that allows the request.
    INVALID_DEVICE_STATE = 0xC000_0184,
    /// `STATUS_HANDLE_NOT_CLOSABLE`: the handle is protected from closing.
    HANDLE_NOT_CLOSABLE = 0xC000_0235,
    /// `STATUS_DEVICE_REMOVED`: the channel is shutting down.
    DEVICE_REMOVED = 0xC000_02B6,
}

impl NtStatus {
    /// Wraps a raw status.
    pub const fn from_raw(raw: NTSTATUS) -> Self {
        Self(raw)
    }

    /// The raw status.
    pub const fn to_raw(self) -> NTSTATUS {
        self.0
    }

    /// The severity class (bits 31-30).
    pub const fn severity(self) -> Severity {
        // CAST: reinterpret the bits to shift without sign extension.
        match (self.0 as u32) >> 30 {
            0 => Severity::Success,
            1 => Severity::Informational,
            2 => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// `NT_SUCCESS`: true for success and informational statuses. Note that
    /// [`NtStatus::PENDING`] passes it.
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// `NT_INFORMATION`: the informational class.
    pub const fn is_information(self) -> bool {
        matches!(self.severity(), Severity::Informational)
    }

    /// `NT_WARNING`: the warning class.
    pub const fn is_warning(self) -> bool {
        matches!(self.severity(), Severity::Warning)
    }

    /// `NT_ERROR`: the error class.
    pub const fn is_error(self) -> bool {
        matches!(self.severity(), Severity::Error)
    }

    /// The symbolic name, for the statuses this crate names.
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(s, _)| *s == self).map(|(_, n)| *n)
    }

    /// `Ok(())` when [`is_success`](Self::is_success) holds, otherwise the status as an
    /// [`Error`].
    ///
    /// # Errors
    ///
    /// [`Error::Status`] with this status when `NT_SUCCESS` fails.
    #[inline]
    pub const fn ok(self) -> Result<()> {
        if self.is_success() {
            Ok(())
        } else {
            Err(Error::Status(self))
        }
    }
}

/// Maps a raw status returned by a C function to a [`Result`] by the `NT_SUCCESS` rule. This is
/// the one place statuses coming from KMCL become errors; callers of functions with "not
/// finished yet" statuses match those first.
///
/// # Errors
///
/// [`Error::Status`] when `NT_SUCCESS(status)` is false.
#[inline]
pub const fn to_result(status: NTSTATUS) -> Result<()> {
    NtStatus(status).ok()
}

impl From<NTSTATUS> for NtStatus {
    fn from(raw: NTSTATUS) -> Self {
        Self(raw)
    }
}

impl From<NtStatus> for NTSTATUS {
    fn from(status: NtStatus) -> Self {
        status.0
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010X})", self.0),
            None => write!(f, "NTSTATUS {:#010X}", self.0),
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_follows_the_top_two_bits() {
        assert_eq!(NtStatus::SUCCESS.severity(), Severity::Success);
        assert_eq!(NtStatus::PENDING.severity(), Severity::Success);
        assert_eq!(
            NtStatus::from_raw(0x4000_0000).severity(),
            Severity::Informational
        );
        assert_eq!(NtStatus::BUFFER_OVERFLOW.severity(), Severity::Warning);
        assert_eq!(
            NtStatus::MORE_PROCESSING_REQUIRED.severity(),
            Severity::Error
        );
        assert!(NtStatus::from_raw(0x4000_0000).is_information());
        assert!(NtStatus::BUFFER_OVERFLOW.is_warning());
        assert!(NtStatus::CANCELLED.is_error());
    }

    #[test]
    fn nt_success_holds_for_success_and_informational_only() {
        assert!(NtStatus::SUCCESS.is_success());
        assert!(NtStatus::PENDING.is_success());
        assert!(NtStatus::from_raw(0x4000_0001).is_success());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_success());
        assert!(!NtStatus::MORE_PROCESSING_REQUIRED.is_success());
        assert_eq!(to_result(0), Ok(()));
        assert_eq!(
            to_result(NtStatus::DEVICE_REMOVED.to_raw()),
            Err(Error::Status(NtStatus::DEVICE_REMOVED))
        );
    }

    #[test]
    fn every_documented_status_has_its_value_and_name() {
        let documented: [(NtStatus, u32); 14] = [
            (NtStatus::SUCCESS, 0x0000_0000),
            (NtStatus::PENDING, 0x0000_0103),
            (NtStatus::BUFFER_OVERFLOW, 0x8000_0005),
            (NtStatus::INVALID_PARAMETER, 0xC000_000D),
            (NtStatus::MORE_PROCESSING_REQUIRED, 0xC000_0016),
            (NtStatus::BUFFER_TOO_SMALL, 0xC000_0023),
            (NtStatus::INSUFFICIENT_RESOURCES, 0xC000_009A),
            (NtStatus::INVALID_PARAMETER_1, 0xC000_00EF),
            (NtStatus::INVALID_PARAMETER_2, 0xC000_00F0),
            (NtStatus::INVALID_PARAMETER_3, 0xC000_00F1),
            (NtStatus::CANCELLED, 0xC000_0120),
            (NtStatus::INVALID_DEVICE_REQUEST, 0xC000_0010),
            (NtStatus::INVALID_DEVICE_STATE, 0xC000_0184),
            (NtStatus::DEVICE_REMOVED, 0xC000_02B6),
        ];
        for (status, bits) in documented {
            // CAST: compare bit patterns.
            assert_eq!(status.to_raw() as u32, bits);
            assert!(status.name().is_some_and(|n| n.starts_with("STATUS_")));
        }
        // Names are unique, so Display cannot show one status under another's name.
        for (i, (a, name_a)) in NAMES.iter().enumerate() {
            for (b, name_b) in &NAMES[i + 1..] {
                assert!(a != b && name_a != name_b);
            }
        }
    }

    #[test]
    fn conversions_round_trip_the_raw_value() {
        let raw: NTSTATUS = -1_073_741_811;
        assert_eq!(NTSTATUS::from(NtStatus::from(raw)), raw);
        assert_eq!(NtStatus::from(raw), NtStatus::INVALID_PARAMETER);
    }
}
