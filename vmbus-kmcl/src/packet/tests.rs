//! What the end-to-end tests (`tests/receive.rs`) cannot produce: KMCL never hands a NULL
//! buffer with a non-zero length, but the token must not read through one if it did.

use core::ptr::NonNull;

use super::*;
use crate::dispatch::Linked;
// The exports the token's `Drop` refers to.
use vmbus_kmcl_sim as _;

#[test]
fn a_null_buffer_has_no_bytes_whatever_the_length() {
    let fake = NonNull::<VMBPACKETCOMPLETION__>::dangling().as_ptr();
    // SAFETY: a fake delivery whose token is never answered or dropped (forgotten below), so
    // KMCL is never called with `fake`; the NULL buffer is never read.
    let packet = unsafe { IncomingPacket::from_raw(Linked, fake, core::ptr::null_mut(), 64, 1) };
    assert!(packet.is_empty());
    assert_eq!(packet.len(), 0);
    assert!(packet.data().is_empty());
    assert!(matches!(
        packet.read::<u32>(),
        Err(PayloadError::TooShort {
            needed: 4,
            available: 0
        })
    ));
    assert_eq!(packet.flags(), PacketFlags::EXTERNAL_DATA);
    core::mem::forget(packet);
}

#[test]
fn unknown_flag_bits_are_kept() {
    let fake = NonNull::<VMBPACKETCOMPLETION__>::dangling().as_ptr();
    let mut byte = 0u8;
    // SAFETY: as above; `byte` is one readable byte for the token's whole life.
    let packet = unsafe { IncomingPacket::from_raw(Linked, fake, (&raw mut byte).cast(), 1, 0x81) };
    assert_eq!(packet.flags().bits(), 0x81);
    assert!(packet.flags().contains(PacketFlags::EXTERNAL_DATA));
    assert_eq!(packet.data(), [0]);
    core::mem::forget(packet);
}
