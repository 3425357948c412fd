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
/// Every [`Error::Status`] this crate returns carries a status that fails `NT_SUCCESS`: a success
/// status never becomes an error (success-class statuses a function does not document come back
/// as [`Error::Unexpected`]). The variants are public so that drivers can match on them; a
/// driver that builds `Error::Status` with a success status itself breaks this for its own
/// values only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A kernel or KMCL call failed with this status.
    #[error("the call failed with {0}")]
    Status(NtStatus),
    /// A call returned a success-class status that it does not document (for instance an
    /// informational one where only `STATUS_SUCCESS` means done), so it produced no result.
    #[error("the call returned the undocumented status {0}")]
    Unexpected(NtStatus),
    /// A buffer length that KMCL requires to be a multiple of 8 is not.
    #[error("buffer length {length} is not a multiple of 8")]
    LengthNotMultipleOf8 {
        /// The rejected length in bytes.
        length: u32,
    },
    /// A length does not fit the 32-bit field KMCL takes.
    #[error("a length does not fit in 32 bits")]
    LengthTooLarge,
    /// A value is below the smallest one KMCL accepts.
    #[error("a value must be at least {minimum}")]
    BelowMinimum {
        /// The smallest value accepted.
        minimum: u32,
    },
    /// The current thread does not run in the process the context (or user handle) was made
    /// for: `IoGetCurrentProcess` returned another process. Raised by every conversion before
    /// KMCL is called, so a value of one process is never looked up in another's table.
    #[error("the thread does not run in the process of the context")]
    WrongProcess,
    /// The current IRQL (one read of `KeGetCurrentIrql`) is above the highest level the
    /// operation allows.
    #[error("IRQL {current} is above the highest allowed, {maximum}")]
    IrqlTooHigh {
        /// The IRQL the call was made at.
        current: u8,
        /// The highest IRQL the operation allows.
        maximum: u8,
    },
    /// The value can never be a user-mode handle: it is NULL, or it has the kernel-handle bit
    /// (the sign bit on 64-bit Windows, also set in the pseudo-handles) set.
    #[error("the value is not a user-mode handle")]
    NotAUserHandle,
    /// The request's thread did not enter the kernel from user mode: `ExGetPreviousMode` is not
    /// `UserMode`, so handle values in the request were not chosen by a user-mode process.
    #[error("the request did not come from user mode")]
    NotFromUserMode,
    /// The process that issued the request (`IoGetRequestorProcess`) is not the process the
    /// thread runs in (`IoGetCurrentProcess`), or the thread is attached to a process that is
    /// not its own: the request is handled on another thread (a worker thread, a work item, a
    /// DPC) or inside an attach, or has no thread.
    #[error("the request's process is not the current process")]
    RequestorMismatch,
    /// A queried KMCL interface table has no entry (a NULL pointer) for this function.
    #[error("the KMCL interface table has no entry for {0}")]
    MissingTableEntry(crate::dispatch::KmclFunction),
    /// A queried KMCL interface table's header names a size smaller than the table this crate
    /// was built for, or another version.
    #[error("the KMCL interface table has size {size} and version {version}")]
    InterfaceTableMismatch {
        /// The `Size` field of the table's `INTERFACE` header.
        size: u16,
        /// The `Version` field of the table's `INTERFACE` header.
        version: u16,
    },
    /// `VmbServerChannelInitSetMmioMegabytes` with both sizes 0.
    #[error("the required and the optional MMIO sizes are both 0")]
    MmioBothZero,
    /// A Virtual Trust Level outside 0 to 2, the levels Hyper-V defines.
    #[error("VTL {vtl} does not exist (Hyper-V defines VTL 0 to 2)")]
    InvalidVtl {
        /// The rejected level.
        vtl: u8,
    },
    /// Flag bits that KMCL does not define for this setter.
    #[error("undefined flag bits {bits:#x}")]
    UndefinedFlags {
        /// The undefined bits.
        bits: u32,
    },
    /// The incoming packet carries no external data (its flags lack
    /// `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA`), so there is none to fetch.
    #[error("the packet carries no external data")]
    NoExternalData,
    /// An offset and length reach past the end of shared memory.
    #[error("the range is outside the memory")]
    OutOfRange,
    /// A [`GpadlCell`](crate::channel::gpadl::GpadlCell) is not inside the slot of the
    /// channel it was used with (it must be part of that channel's handler).
    #[error("the GPADL cell is not part of the channel's handler")]
    GpadlCellOutsideSlot,
    /// A [`GpadlCell`](crate::channel::gpadl::GpadlCell) already holds a GPADL.
    #[error("the GPADL cell already holds a GPADL")]
    GpadlCellInUse,
    /// A write mapping was asked for a GPADL the client created read-only.
    #[error("the GPADL is read-only")]
    GpadlReadOnly,
    /// The GPADL is mapped on this channel already (KMCL allows one mapping at a time).
    #[error("the GPADL is mapped already")]
    GpadlAlreadyMapped,
    /// As many GPADL mappings exist as the driver can track
    /// ([`MAX_MAPPINGS`](crate::channel::gpadl::MAX_MAPPINGS)).
    #[error("too many GPADL mappings exist")]
    TooManyMappings,
    /// As many GPADLs exist on client channels as the driver can track
    /// ([`MAX_GPADLS`](crate::channel::gpadl::MAX_GPADLS)).
    #[error("too many GPADLs exist")]
    TooManyGpadls,
    /// KMCL had no packet object to give (`VmbPacketAllocate` returned NULL).
    #[error("KMCL could not allocate a packet object")]
    AllocationFailed,
    /// Caller storage for a packet object is smaller than `VmbChannelSizeofPacket` of the
    /// channel.
    #[error("packet storage too small: the channel needs {required} bytes")]
    StorageTooSmall {
        /// The bytes the channel's packet objects need.
        required: u32,
    },
    /// Caller storage whose packet object exists already (taken, or in flight).
    #[error("the packet storage is in use")]
    StorageInUse,
}

impl Error {
    /// The error of a call that returned `status` instead of the status it documents for
    /// success: [`Error::Status`] when `NT_SUCCESS` fails, else [`Error::Unexpected`].
    #[inline]
    pub const fn from_failed_call(status: vmbus_kmcl_sys::NTSTATUS) -> Self {
        let status = NtStatus::from_raw(status);
        if status.is_success() {
            Self::Unexpected(status)
        } else {
            Self::Status(status)
        }
    }

    /// The status a driver would report for this error (for instance to complete the IRP):
    ///
    /// | error | status |
    /// |---|---|
    /// | [`Status`](Self::Status), [`Unexpected`](Self::Unexpected) | the status the call returned |
    /// | [`LengthNotMultipleOf8`](Self::LengthNotMultipleOf8), [`LengthTooLarge`](Self::LengthTooLarge), [`BelowMinimum`](Self::BelowMinimum) | `STATUS_INVALID_PARAMETER` |
    /// | [`WrongProcess`](Self::WrongProcess), [`RequestorMismatch`](Self::RequestorMismatch) | `STATUS_ACCESS_DENIED` |
    /// | [`NotFromUserMode`](Self::NotFromUserMode) | `STATUS_INVALID_DEVICE_REQUEST` |
    /// | [`NotAUserHandle`](Self::NotAUserHandle) | `STATUS_INVALID_HANDLE` |
    /// | [`IrqlTooHigh`](Self::IrqlTooHigh) | `STATUS_INVALID_DEVICE_STATE` |
    /// | [`MissingTableEntry`](Self::MissingTableEntry), [`InterfaceTableMismatch`](Self::InterfaceTableMismatch) | `STATUS_NOT_SUPPORTED` |
    /// | [`MmioBothZero`](Self::MmioBothZero), [`InvalidVtl`](Self::InvalidVtl), [`UndefinedFlags`](Self::UndefinedFlags) | `STATUS_INVALID_PARAMETER` |
    /// | [`NoExternalData`](Self::NoExternalData), [`OutOfRange`](Self::OutOfRange), [`GpadlCellOutsideSlot`](Self::GpadlCellOutsideSlot) | `STATUS_INVALID_PARAMETER` |
    /// | [`GpadlCellInUse`](Self::GpadlCellInUse), [`GpadlAlreadyMapped`](Self::GpadlAlreadyMapped) | `STATUS_INVALID_DEVICE_STATE` |
    /// | [`GpadlReadOnly`](Self::GpadlReadOnly) | `STATUS_ACCESS_DENIED` |
    /// | [`TooManyMappings`](Self::TooManyMappings), [`TooManyGpadls`](Self::TooManyGpadls), [`AllocationFailed`](Self::AllocationFailed) | `STATUS_INSUFFICIENT_RESOURCES` |
    /// | [`StorageTooSmall`](Self::StorageTooSmall) | `STATUS_BUFFER_TOO_SMALL` |
    /// | [`StorageInUse`](Self::StorageInUse) | `STATUS_INVALID_DEVICE_STATE` |
    pub const fn status(self) -> NtStatus {
        match self {
            Self::Status(status) | Self::Unexpected(status) => status,
            Self::LengthNotMultipleOf8 { .. }
            | Self::LengthTooLarge
            | Self::BelowMinimum { .. } => NtStatus::INVALID_PARAMETER,
            Self::WrongProcess | Self::RequestorMismatch => NtStatus::ACCESS_DENIED,
            Self::NotFromUserMode => NtStatus::INVALID_DEVICE_REQUEST,
            Self::NotAUserHandle => NtStatus::INVALID_HANDLE,
            Self::IrqlTooHigh { .. } => NtStatus::INVALID_DEVICE_STATE,
            Self::MissingTableEntry(_) | Self::InterfaceTableMismatch { .. } => {
                NtStatus::NOT_SUPPORTED
            }
            Self::MmioBothZero
            | Self::InvalidVtl { .. }
            | Self::UndefinedFlags { .. }
            | Self::NoExternalData
            | Self::OutOfRange
            | Self::GpadlCellOutsideSlot => NtStatus::INVALID_PARAMETER,
            Self::StorageTooSmall { .. } => NtStatus::BUFFER_TOO_SMALL,
            Self::StorageInUse | Self::GpadlCellInUse | Self::GpadlAlreadyMapped => {
                NtStatus::INVALID_DEVICE_STATE
            }
            Self::GpadlReadOnly => NtStatus::ACCESS_DENIED,
            Self::TooManyMappings | Self::TooManyGpadls | Self::AllocationFailed => {
                NtStatus::INSUFFICIENT_RESOURCES
            }
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

// The error path stays cheap: an `Error`, and a `Result<()>`, fit in one register (8 bytes),
// which the Windows x64 ABI returns in RAX rather than through memory.
const _: () = assert!(core::mem::size_of::<Error>() == 8);
const _: () = assert!(core::mem::size_of::<Result<()>>() <= 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_calls_keep_their_status_and_never_turn_success_into_a_failure() {
        let failure = NtStatus::INVALID_PARAMETER_2.to_raw();
        assert_eq!(
            Error::from_failed_call(failure),
            Error::Status(NtStatus::INVALID_PARAMETER_2)
        );
        let pending = NtStatus::PENDING.to_raw();
        assert_eq!(
            Error::from_failed_call(pending),
            Error::Unexpected(NtStatus::PENDING)
        );
        assert_eq!(Error::from_failed_call(pending).status(), NtStatus::PENDING);
        assert_eq!(Error::LengthTooLarge.status(), NtStatus::INVALID_PARAMETER);
        assert_eq!(
            NtStatus::from(Error::BelowMinimum { minimum: 1 }),
            NtStatus::INVALID_PARAMETER
        );
    }

    #[test]
    fn every_refusal_has_its_status() {
        let refusals = [
            (Error::WrongProcess, NtStatus::ACCESS_DENIED),
            (Error::RequestorMismatch, NtStatus::ACCESS_DENIED),
            (Error::NotFromUserMode, NtStatus::INVALID_DEVICE_REQUEST),
            (Error::NotAUserHandle, NtStatus::INVALID_HANDLE),
            (Error::OutOfRange, NtStatus::INVALID_PARAMETER),
            (Error::GpadlCellOutsideSlot, NtStatus::INVALID_PARAMETER),
            (Error::GpadlCellInUse, NtStatus::INVALID_DEVICE_STATE),
            (Error::GpadlAlreadyMapped, NtStatus::INVALID_DEVICE_STATE),
            (Error::GpadlReadOnly, NtStatus::ACCESS_DENIED),
            (Error::TooManyMappings, NtStatus::INSUFFICIENT_RESOURCES),
            (Error::TooManyGpadls, NtStatus::INSUFFICIENT_RESOURCES),
            (Error::AllocationFailed, NtStatus::INSUFFICIENT_RESOURCES),
            (
                Error::IrqlTooHigh {
                    current: 2,
                    maximum: 0,
                },
                NtStatus::INVALID_DEVICE_STATE,
            ),
        ];
        for (error, status) in refusals {
            assert_eq!(error.status(), status);
            assert!(error.status().is_error());
        }
    }

    #[test]
    fn send_refusals_have_their_status() {
        assert_eq!(
            Error::AllocationFailed.status(),
            NtStatus::INSUFFICIENT_RESOURCES
        );
        assert_eq!(
            Error::StorageTooSmall { required: 80 }.status(),
            NtStatus::BUFFER_TOO_SMALL
        );
        assert_eq!(Error::StorageInUse.status(), NtStatus::INVALID_DEVICE_STATE);
    }

    #[test]
    fn errors_are_small() {
        assert_eq!(core::mem::size_of::<Error>(), 8);
        assert_eq!(core::mem::size_of::<Result<()>>(), 8);
    }
}
