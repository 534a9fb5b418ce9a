//! The counters of a volume: per request kind, since start and for the last completed
//! one-second window.

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::histogram::Histogram;
use super::{MetricsSnapshot, OpKind, OpSnapshot};

/// Length of the rotating window that "last second" figures describe.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

/// Counters and latencies of one kind over some interval.
#[derive(Clone)]
pub(super) struct Stats {
    /// Latencies of successful requests; its count is the number of ops.
    pub(super) latency: Histogram,
    pub(super) bytes: u64,
    pub(super) errors: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            latency: Histogram::new(),
            bytes: 0,
            errors: 0,
        }
    }

    fn record(&mut self, bytes: u64, latency_ns: u64, succeeded: bool) {
        if succeeded {
            self.latency.record(latency_ns);
            self.bytes = self.bytes.saturating_add(bytes);
        } else {
            self.errors += 1;
        }
    }

    fn add(&mut self, other: &Stats) {
        self.latency.add(&other.latency);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.errors += other.errors;
    }

    fn clear(&mut self) {
        self.latency.clear();
        self.bytes = 0;
        self.errors = 0;
    }
}

/// One kind's totals and windows.
struct KindState {
    total: Stats,
    /// The window being filled, number `current_index` since start.
    current: Stats,
    current_index: u64,
    /// The window before `current` (empty when no request completed in it).
    last: Stats,
}

impl KindState {
    fn new() -> Self {
        KindState {
            total: Stats::new(),
            current: Stats::new(),
            current_index: 0,
            last: Stats::new(),
        }
    }

    /// Moves the window forward to `index` (never backward).
    fn rotate(&mut self, index: u64) {
        if index <= self.current_index {
            return;
        }
        if self.current_index.checked_add(1) == Some(index) {
            std::mem::swap(&mut self.last, &mut self.current);
        } else {
            self.last.clear();
        }
        self.current.clear();
        self.current_index = index;
    }
}

/// Live I/O metrics of one volume. Shared (`Arc`) between the [`MeteredDevice`] that
/// records and whoever reads snapshots; every request takes one short per-kind lock.
///
/// Time is read from [`Instant::now`] by [`record`](Self::record) and
/// [`snapshot`](Self::snapshot); the `_at` variants take it as an argument so tests (and
/// callers that already hold a timestamp) can drive it. Windows are rotated lazily, when a
/// request is recorded or a snapshot taken, so no ticker task is needed.
pub struct Metrics {
    start: Instant,
    kinds: [Mutex<KindState>; 5],
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics starting now.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// Metrics whose uptime and one-second windows count from `start`.
    pub fn starting_at(start: Instant) -> Self {
        Metrics {
            start,
            kinds: std::array::from_fn(|_| Mutex::new(KindState::new())),
        }
    }

    /// When these metrics started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records one request of `kind` that completed now after `latency`. `bytes` is the
    /// request's length (0 for flush); a failed request (`succeeded == false`) counts
    /// only as an error.
    pub fn record(&self, kind: OpKind, bytes: u64, latency: Duration, succeeded: bool) {
        self.record_at(Instant::now(), kind, bytes, latency, succeeded);
    }

    /// [`record`](Self::record) for a request that completed at `now`. A `now` earlier
    /// than an already-seen window counts in the current window.
    pub fn record_at(
        &self,
        now: Instant,
        kind: OpKind,
        bytes: u64,
        latency: Duration,
        succeeded: bool,
    ) {
        let index = self.window_index(now);
        let latency_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let mut state = self.kinds[kind.index()].lock();
        state.rotate(index);
        state.total.record(bytes, latency_ns, succeeded);
        state.current.record(bytes, latency_ns, succeeded);
    }

    /// The figures as of now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.snapshot_at(Instant::now())
    }

    /// The figures as of `now`: "last second" is the last one-second window completed
    /// before `now` (windows start at [`start`](Self::start) + k seconds).
    pub fn snapshot_at(&self, now: Instant) -> MetricsSnapshot {
        let index = self.window_index(now);
        let uptime = now.saturating_duration_since(self.start);
        let copies: Vec<(Stats, Stats)> = self
            .kinds
            .iter()
            .map(|kind| {
                let mut state = kind.lock();
                state.rotate(index);
                // A `now` older than the newest window seen reports the newest
                // completed window.
                (state.total.clone(), state.last.clone())
            })
            .collect();

        let direction = |kinds: &[OpKind]| {
            let mut total = Stats::new();
            let mut last = Stats::new();
            for kind in kinds {
                let (t, l) = &copies[kind.index()];
                total.add(t);
                last.add(l);
            }
            OpSnapshot::new(&total, &last, uptime)
        };
        MetricsSnapshot {
            uptime,
            read: direction(&[OpKind::Read]),
            write: direction(&[OpKind::Write, OpKind::WriteZeroes, OpKind::Trim]),
            by_op: OpKind::ALL.map(|kind| {
                let (total, last) = &copies[kind.index()];
                OpSnapshot::new(total, last, uptime)
            }),
        }
    }

    fn window_index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        u64::try_from(elapsed.as_nanos() / WINDOW.as_nanos()).unwrap_or(u64::MAX)
    }
}
