//! Rust twins of the header's static-inline helpers, which have no exported symbol.

use crate::{ULONG, VMB_CHANNEL_STATE_CHANGE_CALLBACKS};

/// The `Version` that [`VMB_CHANNEL_STATE_CHANGE_CALLBACKS`] must carry.
pub const VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION: ULONG = 1;

impl VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    /// A callback table as `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT` leaves it: every callback
    /// NULL, `Version` 1 and `Size` the size of the structure.
    pub const fn new() -> Self {
        // CAST: the structure is 48 bytes, far below `ULONG::MAX`.
        const SIZE: ULONG = core::mem::size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>() as ULONG;
        Self {
            Version: VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION,
            Size: SIZE,
            EvtChannelOpened: None,
            EvtChannelClosed: None,
            EvtChannelSuspend: None,
            EvtChannelStarted: None,
            EvtChannelPostStarted: None,
        }
    }
}

/// Rust twin of the header's inline `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT`: zeroes the table,
/// then sets `Version` to 1 and `Size` to the size of the structure.
///
/// # Safety
///
/// `callbacks` must be valid for writes of one [`VMB_CHANNEL_STATE_CHANGE_CALLBACKS`] and
/// suitably aligned.
#[allow(non_snake_case, reason = "the C name of the helper it mirrors")]
pub unsafe fn VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(
    callbacks: *mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) {
    // SAFETY: the caller guarantees `callbacks` is valid for writes and aligned. The structure
    // has no padding (two `u32`s, then five pointers), so writing the value sets all its bytes,
    // as the C helper's zeroing does.
    unsafe { callbacks.write(VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new()) }
}
