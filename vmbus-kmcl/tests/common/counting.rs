//! A global allocator that counts the allocations made on this thread while `COUNTING` is
//! set, for the tests that show a path allocates nothing. A test binary includes it with
//! `#[path = "common/counting.rs"] mod counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts, then forwards to the system allocator.
pub struct CountingAllocator;

thread_local! {
    pub static COUNTING: Cell<bool> = const { Cell::new(false) };
    pub static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counters are
// const-initialised thread locals without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
        // SAFETY: the caller's layout contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Shows that the counter counts (one allocation made while counting is seen), then sets the
/// count back to 0 for the measure that follows.
pub fn check_the_counter_and_reset() {
    COUNTING.with(|c| c.set(true));
    let seen = vec![1u8];
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.with(Cell::get), 1);
    drop(seen);
    ALLOCATIONS.with(|n| n.set(0));
}

/// Pauses counting while the sim (KMCL) itself runs.
pub struct NotCounted(bool);

impl NotCounted {
    pub fn new() -> Self {
        Self(COUNTING.with(|c| c.replace(false)))
    }
}

impl Drop for NotCounted {
    fn drop(&mut self) {
        COUNTING.with(|c| c.set(self.0));
    }
}
