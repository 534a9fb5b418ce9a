//! An async lock over byte ranges: overlapping holders wait for each other, disjoint
//! ones do not.

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Byte ranges currently held. Few are held at once (one per in-flight write), so a list
/// scanned under a mutex is enough.
#[derive(Default)]
pub struct AsyncRangeLock {
    held: Mutex<Vec<(u64, u64, u64)>>,
    next_id: Mutex<u64>,
    released: Notify,
}

/// Holds a range until dropped.
pub struct RangeGuard<'a> {
    lock: &'a AsyncRangeLock,
    id: u64,
}

impl AsyncRangeLock {
    /// Waits until no held range overlaps `start..end`, then holds it. An empty range
    /// overlaps nothing.
    pub async fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let id = {
            let mut next = self.next_id.lock();
            *next += 1;
            *next
        };
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Register interest before checking, so a release in between is not missed.
            released.as_mut().enable();
            {
                let mut held = self.held.lock();
                if !held.iter().any(|&(s, e, _)| s < end && start < e) {
                    held.push((start, end, id));
                    return RangeGuard { lock: self, id };
                }
            }
            released.await;
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        self.lock.held.lock().retain(|&(_, _, id)| id != self.id);
        self.lock.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_holders_run_one_at_a_time() {
        let lock = Arc::new(AsyncRangeLock::default());
        let inside = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let (lock, inside) = (lock.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _guard = lock.lock(i * 10, i * 10 + 15).await;
                let before = inside.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                before
            }));
        }
        for task in tasks {
            // Ranges overlap only with neighbours, so at most every other one runs at once.
            assert!(task.await.unwrap() <= 8);
        }
        let _a = lock.lock(0, 10).await;
        let _b = lock.lock(10, 20).await;
    }
}
