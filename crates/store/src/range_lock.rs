//! Mutual exclusion over block ranges, so writers of overlapping blocks (read-modify-write
//! of a partial block, zeroing, purge copies into the head) never interleave, while
//! writers of disjoint blocks run in parallel.

use parking_lot::{Condvar, Mutex};

/// A set of locked block ranges. Few ranges are held at once (one per in-flight write),
/// so a list scanned under one mutex beats anything cleverer.
#[derive(Default)]
pub struct RangeLock {
    held: Mutex<Vec<(u64, u64)>>,
    released: Condvar,
}

/// Holds blocks `start..end` until dropped.
pub struct RangeGuard<'a> {
    lock: &'a RangeLock,
    range: (u64, u64),
}

impl RangeLock {
    /// Waits until no held range overlaps `start..end`, then holds it.
    pub fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let mut held = self.held.lock();
        while held.iter().any(|&(s, e)| s < end && start < e) {
            self.released.wait(&mut held);
        }
        held.push((start, end));
        RangeGuard {
            lock: self,
            range: (start, end),
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.lock.held.lock();
        if let Some(i) = held.iter().position(|&r| r == self.range) {
            held.swap_remove(i);
        }
        drop(held);
        self.lock.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn overlapping_ranges_exclude_each_other_and_disjoint_ones_do_not() {
        let lock = Arc::new(RangeLock::default());
        let inside = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (lock, inside) = (lock.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        // Even threads share blocks 0..2; odd threads each own a range.
                        let range = if i % 2 == 0 { (0, 2) } else { (10 + i, 11 + i) };
                        let _guard = lock.lock(range.0, range.1);
                        if i % 2 == 0 {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Disjoint ranges can be held together.
        let _a = lock.lock(0, 1);
        let _b = lock.lock(1, 2);
    }
}
