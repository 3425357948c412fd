// The memory of a read-only mapping has no `write`.
use core::ptr::NonNull;
use vmbus_kmcl::channel::gpadl::{GpadlHandle, ReadOnly, GpadlMapping};
use vmbus_kmcl::dispatch::Linked;

fn run(mapping: &GpadlMapping<'_, ReadOnly, Linked>, address: NonNull<u8>) {
    // SAFETY: (compile-only)
    let memory = unsafe { mapping.memory(address, 4096) };
    let _ = memory.write(0, b"no");
    let _ = GpadlHandle::from_raw(0);
}

fn main() {}
