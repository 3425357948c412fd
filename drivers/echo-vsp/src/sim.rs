//! The emulator's stand-in for the kernel glue's [`MapSystem`] (feature `sim`): the system
//! address of a mapped GPADL is the address `vmbus-kmcl-sim` keeps behind the mapping's MDL.
//! Shared by the demo, the drivers' sim tests and the fuzz target, and absent from the kernel
//! image, which builds this crate without the feature.
#![allow(
    unsafe_code,
    reason = "the one `unsafe` block of the stand-in: wrapping the emulator's address"
)]

use vmbus_kmcl::channel::gpadl::{Access, GpadlMapping, SharedMemory};
use vmbus_kmcl::dispatch::KmclServer;

use crate::MapSystem;

/// The sim's `MmGetSystemAddressForMdlSafe`: the bytes behind a mapped GPADL's MDL
/// ([`vmbus_kmcl_sim::mdl_address`]), for read-only and write mappings alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimMapper;

impl MapSystem for SimMapper {
    fn memory<'m, A: Access, K: KmclServer + Copy>(
        &self,
        mapping: &'m GpadlMapping<'_, A, K>,
    ) -> Option<SharedMemory<'m, A>> {
        let bytes = vmbus_kmcl_sim::mdl_address(mapping.as_raw())?;
        // A write view needs a writable MDL; the sim makes an MDL read-only exactly when the
        // mapping is, so this refuses nothing on a consistent bus.
        if bytes.read_only && !A::READ_ONLY {
            return None;
        }
        // SAFETY:
        // - `bytes` addresses the first `len` bytes the mapping's MDL describes: the guest's
        //   GPADL memory, which stays valid while the GPADL exists, and the client cannot
        //   delete it while this mapping lives (the delete waits for the unmap, which only
        //   dropping the mapping does; `memory` borrows the mapping for 'm);
        // - for a write view the MDL is writable (checked above);
        // - `SharedMemory` only makes volatile accesses, so the guest writing meanwhile
        //   breaks no aliasing rule.
        Some(unsafe { mapping.memory(bytes.address, bytes.len) })
    }
}
