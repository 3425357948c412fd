//! Null KMCL exports that the receive and send benchmarks share: channel life and teardown,
//! each returning at once (opaque to the optimiser through `black_box`, as a real import is).
//! Included by each benchmark with `#[path]`; the exports a benchmark measures stay in its own
//! file.

use std::hint::black_box;

use vmbus_kmcl_sys::{
    BOOLEAN, NTSTATUS, PDEVICE_OBJECT, PVMB_CHANNEL_STATE_CHANGE_CALLBACKS, VMBCHANNEL,
};

/// Null backend of `VmbChannelAllocate`: a fake, never dereferenced channel handle.
///
/// # Safety
///
/// `channel` must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn VmbChannelAllocate(
    parent: PDEVICE_OBJECT,
    is_server: BOOLEAN,
    channel: *mut VMBCHANNEL,
) -> NTSTATUS {
    black_box((parent, is_server));
    // SAFETY: the caller guarantees `channel` is writable.
    unsafe { channel.write(core::ptr::dangling_mut()) };
    0
}

/// Null backend of `VmbChannelInitSetStateChangeCallbacks`.
#[no_mangle]
pub extern "C" fn VmbChannelInitSetStateChangeCallbacks(
    channel: VMBCHANNEL,
    callbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    black_box((channel, callbacks));
    0
}

/// Null backend of `VmbChannelCleanup`.
#[no_mangle]
pub extern "C" fn VmbChannelCleanup(channel: VMBCHANNEL) {
    black_box(channel);
}

/// Null backend of `ZwClose` (the slot closes the VMBus handle it may own).
#[no_mangle]
pub extern "C" fn ZwClose(handle: vmbus_kmcl_sys::HANDLE) -> NTSTATUS {
    black_box(handle);
    0
}

/// Null backend of `VmbChannelDisable`.
#[no_mangle]
pub extern "C" fn VmbChannelDisable(channel: VMBCHANNEL) {
    black_box(channel);
}

/// Null `VmbChannelDeleteGpadl`: the closed trampoline references it (it deletes the GPADLs a
/// handler still holds); the bench never makes one.
#[no_mangle]
pub extern "C" fn VmbChannelDeleteGpadl(channel: VMBCHANNEL, gpadl: u32) {
    black_box((channel, gpadl));
}
