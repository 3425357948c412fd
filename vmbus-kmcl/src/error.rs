//! The error type of the wrapper: a failing KMCL status, or an input the wrapper rejected
//! before calling KMCL.

use crate::status::NtStatus;

/// What went wrong.
///
/// [`Error::Status`] carries a status KMCL (or the kernel) returned; the other variants are
/// raised by the wrapper itself, before any call, so nothing has changed when they occur.
///
/// # Invariants
///
/// The status of [`Error::Status`] fails `NT_SUCCESS`: a success status never becomes an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A kernel or KMCL call failed with this status.
    #[error("the call failed with {0}")]
    Status(NtStatus),
    /// A buffer length that KMCL requires to be a multiple of 8 is not.
    #[error("buffer length {length} is not a multiple of 8")]
    LengthNotMultipleOf8 {
        /// The rejected length in bytes.
        length: usize,
    },
    /// A length does not fit the 32-bit field KMCL takes.
    #[error("length {length} does not fit in 32 bits")]
    LengthTooLarge {
        /// The rejected length in bytes.
        length: usize,
    },
    /// A value is outside the range KMCL accepts.
    #[error("{what} must be at least {minimum}")]
    BelowMinimum {
        /// The parameter.
        what: &'static str,
        /// The smallest value accepted.
        minimum: u32,
    },
}

impl Error {
    /// The status a driver would report for this error: the KMCL status, or
    /// `STATUS_INVALID_PARAMETER` for inputs the wrapper rejected.
    pub const fn status(self) -> NtStatus {
        match self {
            Self::Status(status) => status,
            Self::LengthNotMultipleOf8 { .. }
            | Self::LengthTooLarge { .. }
            | Self::BelowMinimum { .. } => NtStatus::INVALID_PARAMETER,
        }
    }
}

impl From<Error> for NtStatus {
    fn from(error: Error) -> Self {
        error.status()
    }
}

/// The result of a wrapper call.
pub type Result<T = (), E = Error> = core::result::Result<T, E>;

// The error path stays cheap: a `Result<()>` is no larger than three words.
const _: () = assert!(core::mem::size_of::<Result<()>>() <= 24);
