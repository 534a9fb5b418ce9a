//! A global allocator that can count heap bytes, so the open benchmark can report what an
//! opened store retains (its location map above all) and the peak while it opens.
//!
//! Counting is off by default and switched on only around the measured code by
//! [`track`]: the I/O benchmarks then pay one relaxed load per allocation instead of two
//! contended atomic read-modify-writes, which would tax the store (it allocates per
//! request) more than the plain-file baseline (which does not).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// The system allocator, counting the net bytes allocated while [`track`] runs.
pub struct CountingAlloc;

/// Whether allocations are being counted.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Net bytes allocated since counting was switched on (frees of older memory subtract).
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Highest value `LIVE` reached since counting was switched on.
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// What [`track`] saw.
#[derive(Debug, Clone, Copy)]
pub struct HeapUse {
    /// Live bytes after the closure minus live bytes before it: what its result (and
    /// anything it leaked) holds.
    pub retained: isize,
    /// Highest live bytes during the closure, above the level before it.
    pub peak: isize,
}

/// Runs `f` with counting on and reports its heap use. Other threads' allocations are
/// counted too, so run it while nothing else allocates.
pub fn track<R>(f: impl FnOnce() -> R) -> (R, HeapUse) {
    LIVE.store(0, Ordering::SeqCst);
    PEAK.store(0, Ordering::SeqCst);
    ENABLED.store(true, Ordering::SeqCst);
    let result = f();
    ENABLED.store(false, Ordering::SeqCst);
    let usage = HeapUse {
        retained: LIVE.load(Ordering::SeqCst),
        peak: PEAK.load(Ordering::SeqCst),
    };
    (result, usage)
}

fn counted_alloc(size: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        let delta = isize::try_from(size).unwrap_or(isize::MAX);
        let live = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

fn counted_free(size: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        LIVE.fetch_sub(
            isize::try_from(size).unwrap_or(isize::MAX),
            Ordering::Relaxed,
        );
    }
}

#[allow(
    unsafe_code,
    reason = "a global allocator must implement the unsafe GlobalAlloc trait"
)]
// SAFETY: every method forwards its arguments unchanged to `System`, which implements
// `GlobalAlloc` correctly, and returns what `System` returned; the bookkeeping only
// touches atomics, never the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size),
        // which is exactly `System.alloc`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            counted_alloc(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`: the caller's contract is `System.alloc_zeroed`'s.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            counted_alloc(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`, as
        // the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        counted_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout` and `new_size` is valid for it,
        // as the caller guarantees.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Count the new block before freeing the old: a moving realloc holds both.
            counted_alloc(new_size);
            counted_free(layout.size());
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_counts_retained_and_peak_bytes() {
        // Other tests may allocate meanwhile, hence the loose bounds.
        let (kept, usage) = track(|| {
            let scratch = vec![1u8; 4 << 20];
            drop(scratch);
            vec![2u8; 256 << 10]
        });
        assert_eq!(kept.len(), 256 << 10);
        assert!(usage.retained >= 128 << 10, "{usage:?}");
        assert!(usage.retained < 2 << 20, "{usage:?}");
        assert!(usage.peak >= 4 << 20, "{usage:?}");
    }
}
