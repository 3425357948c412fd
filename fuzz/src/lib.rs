//! The bodies of the cargo-fuzz targets (`fuzz_targets/*.rs` call them), kept in a library so
//! that a crash input can be replayed from a test.
//!
//! * [`echo_vsp`]: the real echo VSP (`drivers/echo-vsp`) under the sim's hostile guest,
//!   with the echo protocol's messages as its well-formed requests.
//! * [`echo`]: a small echo VSP written with the safe `vmbus-kmcl` API, under the sim's
//!   hostile guest (`vmbus_kmcl_sim::fuzz`).
//! * [`incoming`]: the wrapper's incoming-packet token and its payload and external-data
//!   readers, fed arbitrary bytes, lengths, flags and KMCL answers, with every answer checked.
//! * [`raw`]: the sim's raw guest-frame parser, `Bus::inject_raw_guest_packet`.

pub mod echo;
pub mod echo_vsp;
pub mod incoming;
pub mod raw;

use std::ptr::NonNull;

use vmbus_kmcl::DeviceRef;
use vmbus_kmcl_sim::Bus;

/// The bus's root (server) device object.
pub fn root(bus: &Bus) -> DeviceRef<'_> {
    let device = NonNull::new(bus.root_device()).expect("the sim's device objects are non-null");
    // SAFETY: the bus's device objects live as long as the bus, which the reference borrows.
    unsafe { DeviceRef::from_raw(device) }
}
