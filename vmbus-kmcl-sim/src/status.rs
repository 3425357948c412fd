//! The NTSTATUS values the emulator returns, with the numbers of the Windows headers.
//!
//! KMCL reports success, progress and failure through `NTSTATUS` codes. The sim only needs a
//! handful of them; each carries a note on where the sim returns it. Statuses marked *sim
//! choice* are returned where the KMCL documentation says only "an error NTSTATUS"; the
//! emulator picks the code a Windows developer would expect so that tests can assert it.
#![forbid(unsafe_code)]

use vmbus_kmcl_sys::NTSTATUS;

/// Reinterprets the 32 bits of a status as the signed `NTSTATUS`.
const fn status(bits: u32) -> NTSTATUS {
    // CAST: NTSTATUS values are written as unsigned hex; the bit pattern is what counts.
    bits as NTSTATUS
}

/// The operation succeeded.
pub const STATUS_SUCCESS: NTSTATUS = status(0x0000_0000);
/// External data is not ready yet; the packet is delivered again later (not a failure).
pub const STATUS_PENDING: NTSTATUS = status(0x0000_0103);
/// Save: a chunk was written and more remains. Synchronous request: the ring was full and the
/// packet was not queued (zero timeout).
pub const STATUS_BUFFER_OVERFLOW: NTSTATUS = status(0x8000_0005);
/// Generic failure; the sim completes a packet rejected with `VmbChannelPacketFail` with it
/// (sim choice).
pub const STATUS_UNSUCCESSFUL: NTSTATUS = status(0xC000_0001);
/// An invalid parameter that no numbered variant describes.
pub const STATUS_INVALID_PARAMETER: NTSTATUS = status(0xC000_000D);
/// Restore: the chunk was consumed and the next one is expected (progress, not a failure).
pub const STATUS_MORE_PROCESSING_REQUIRED: NTSTATUS = status(0xC000_0016);
/// Access denied: mapping a read-only GPADL for writing (sim choice).
pub const STATUS_ACCESS_DENIED: NTSTATUS = status(0xC000_0022);
/// Save: the buffer is too small for any progress; see `*BytesRequired`.
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = status(0xC000_0023);
/// Out of resources: injected allocation failures (sim choice).
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = status(0xC000_009A);
/// The first parameter (usually the channel) is bad or in the wrong state.
pub const STATUS_INVALID_PARAMETER_1: NTSTATUS = status(0xC000_00EF);
/// The second parameter is invalid.
pub const STATUS_INVALID_PARAMETER_2: NTSTATUS = status(0xC000_00F0);
/// The third parameter is invalid.
pub const STATUS_INVALID_PARAMETER_3: NTSTATUS = status(0xC000_00F1);
/// The fourth parameter is invalid (e.g. an external-data MDL that is not a live sim MDL).
pub const STATUS_INVALID_PARAMETER_4: NTSTATUS = status(0xC000_00F2);
/// The fifth parameter is invalid.
pub const STATUS_INVALID_PARAMETER_5: NTSTATUS = status(0xC000_00F3);
/// The timeout of a synchronous request expired; or an in-flight packet was cancelled because
/// its channel closed (sim choice for the latter).
pub const STATUS_CANCELLED: NTSTATUS = status(0xC000_0120);
/// The object is not in a state that allows the call (sim choice), e.g. a GPADL that is
/// already mapped, a packet already in flight, a channel that is not open.
pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = status(0xC000_0184);
/// The channel is shutting down (synchronous request) or its peer is gone.
pub const STATUS_DEVICE_REMOVED: NTSTATUS = status(0xC000_02B6);
/// The call is not available to this endpoint (sim choice), e.g. a root-side synchronous
/// request that would wait.
pub const STATUS_NOT_SUPPORTED: NTSTATUS = status(0xC000_00BB);

/// `NT_SUCCESS`: success and informational statuses (the sign bit clear).
pub const fn nt_success(s: NTSTATUS) -> bool {
    s >= 0
}
