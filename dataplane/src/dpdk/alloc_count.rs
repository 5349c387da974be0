//! Test-only global allocator that counts heap allocations per thread, so
//! tests can assert that the packet path never allocates.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations (and reallocations) this thread made in it.
pub fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = COUNT.with(|c| c.get());
    let r = f();
    (COUNT.with(|c| c.get()) - before, r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_this_threads_allocations() {
        let (n, v) = super::allocations(|| vec![1u8; 10]);
        assert_eq!(n, 1);
        assert_eq!(v.len(), 10);
        let (n, _) = super::allocations(|| 1 + 1);
        assert_eq!(n, 0);
    }
}
