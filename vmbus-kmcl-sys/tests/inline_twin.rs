//! The header's inline `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT`, compiled from C by `cc` through
//! bindgen's static-function wrappers (`c_inline`), and its Rust twins (the crate-root function
//! and `VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new()`) must leave exactly the same bytes behind.
//!
//! Every buffer starts out filled with a non-zero pattern, so a byte that one side zeroes and the
//! other leaves alone shows up as a difference.
#![cfg(feature = "bindgen")]

use core::mem::{size_of, MaybeUninit};

use vmbus_kmcl_sys::{c_inline, VMB_CHANNEL_STATE_CHANGE_CALLBACKS};

/// Size of the callback table on 64-bit targets: two `ULONG`s and five function pointers.
const SIZE: usize = 48;

/// A byte pattern that is neither zero nor any field's expected value, different in every byte.
fn garbage() -> [u8; SIZE] {
    // CAST: `i < SIZE` (48), so `i * 37 + 0x5b` stays far below 256 * 256; only the low byte
    // is kept on purpose.
    core::array::from_fn(|i| (i * 37 + 0x5b) as u8 | 0x01)
}

/// Runs `init` on a table whose every byte holds [`garbage`], and returns the bytes it leaves.
fn bytes_after(init: impl FnOnce(*mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS)) -> [u8; SIZE] {
    let mut table = MaybeUninit::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>::uninit();
    let raw = table.as_mut_ptr();
    // SAFETY:
    // - `raw` points to a live local of `SIZE` bytes (asserted in `table_is_48_bytes`), so it
    //   is valid for writes of `SIZE` bytes;
    // - a `u8` pointer has alignment 1, and the source is a separate local array.
    unsafe {
        raw.cast::<u8>()
            .copy_from_nonoverlapping(garbage().as_ptr(), SIZE)
    };
    init(raw);
    let mut out = [0u8; SIZE];
    // SAFETY:
    // - every byte of `table` was written above (the garbage pattern) and then possibly
    //   overwritten by `init`, so all `SIZE` bytes are initialised and readable as `u8`;
    // - `out` is a separate local of `SIZE` bytes, so the regions do not overlap.
    unsafe {
        out.as_mut_ptr()
            .copy_from_nonoverlapping(raw.cast::<u8>(), SIZE)
    };
    out
}

/// The bytes the C helper writes, as its documentation describes them.
fn expected() -> [u8; SIZE] {
    let mut bytes = [0u8; SIZE];
    bytes[0..4].copy_from_slice(&1u32.to_ne_bytes());
    // CAST: SIZE is 48.
    bytes[4..8].copy_from_slice(&(SIZE as u32).to_ne_bytes());
    bytes
}

#[test]
fn table_is_48_bytes() {
    assert_eq!(size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>(), SIZE);
}

#[test]
fn garbage_pattern_has_no_zero_byte() {
    assert!(garbage().iter().all(|&b| b != 0));
}

#[test]
fn c_helper_and_rust_twin_write_identical_bytes() {
    let from_c = bytes_after(|table| {
        // SAFETY: `table` points to a live, aligned `VMB_CHANNEL_STATE_CHANGE_CALLBACKS` that
        // the helper may overwrite completely (see `bytes_after`).
        unsafe { c_inline::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(table) }
    });
    let from_twin = bytes_after(|table| {
        // SAFETY: as above: valid for writes of one table and aligned.
        unsafe { vmbus_kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(table) }
    });
    assert_eq!(
        from_c, from_twin,
        "C helper (left) and Rust twin (right) differ"
    );
    assert_eq!(
        from_c,
        expected(),
        "C helper (left) and the documented result (right) differ"
    );
}

#[test]
fn c_helper_and_const_new_write_identical_bytes() {
    let from_c = bytes_after(|table| {
        // SAFETY: `table` points to a live, aligned `VMB_CHANNEL_STATE_CHANGE_CALLBACKS` that
        // the helper may overwrite completely (see `bytes_after`).
        unsafe { c_inline::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(table) }
    });
    let from_new = bytes_after(|table| {
        // SAFETY: `table` is valid for writes of one aligned table; the structure has no padding
        // (asserted by comparing all 48 bytes with the C result), so the write sets every byte.
        unsafe { table.write(VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new()) }
    });
    assert_eq!(
        from_c, from_new,
        "C helper (left) and `new()` (right) differ"
    );
}

#[test]
fn const_new_is_usable_in_const_context() {
    const TABLE: VMB_CHANNEL_STATE_CHANGE_CALLBACKS = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::new();
    assert_eq!(TABLE.Version, 1);
    // CAST: SIZE is 48.
    assert_eq!(TABLE.Size, SIZE as u32);
    assert!(TABLE.EvtChannelOpened.is_none() && TABLE.EvtChannelPostStarted.is_none());
}
