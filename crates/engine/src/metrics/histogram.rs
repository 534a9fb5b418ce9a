//! Latency histograms: log-linear buckets (16 per power of two from 1 µs to about
//! 137 s) with percentiles by nearest rank.

use std::time::Duration;

/// log2 of the number of linear sub-buckets per power of two.
const SUB_BITS: u32 = 4;
/// Linear sub-buckets per power of two: a bucket spans at most 1/16 of its lower bound,
/// so its midpoint is within 1/32 (3.1 %) of any value in it.
const SUB: usize = 1 << SUB_BITS;
/// Values below 2^MIN_EXP ns (1.024 µs) share the underflow bucket.
const MIN_EXP: u32 = 10;
/// Values from 2^MAX_EXP ns (≈137 s) up share the overflow bucket.
const MAX_EXP: u32 = 37;
/// Underflow bucket, the log-linear buckets, overflow bucket.
pub(super) const BUCKETS: usize = 1 + (MAX_EXP - MIN_EXP) as usize * SUB + 1;

/// Index of the bucket holding `ns` nanoseconds.
pub(super) fn bucket_index(ns: u64) -> usize {
    if ns < 1 << MIN_EXP {
        return 0;
    }
    let exp = 63 - ns.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    #[allow(clippy::cast_possible_truncation, reason = "masked to less than SUB")]
    let sub = ((ns >> (exp - SUB_BITS)) & (SUB as u64 - 1)) as usize;
    1 + (exp - MIN_EXP) as usize * SUB + sub
}

/// The values bucket `index` holds: `lo..hi` nanoseconds (`hi` is `u64::MAX` for the
/// overflow bucket).
pub(super) fn bucket_bounds(index: usize) -> (u64, u64) {
    if index == 0 {
        return (0, 1 << MIN_EXP);
    }
    if index >= BUCKETS - 1 {
        return (1 << MAX_EXP, u64::MAX);
    }
    let exp = MIN_EXP + u32::try_from((index - 1) / SUB).unwrap_or(MAX_EXP);
    let sub = ((index - 1) % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    let lo = (1u64 << exp) + sub * width;
    (lo, lo + width)
}

/// A log-linear latency histogram (nanoseconds) with exact count, sum, min and max.
#[derive(Clone)]
pub(super) struct Histogram {
    counts: Box<[u64]>,
    pub(super) count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Histogram {
    pub(super) fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    pub(super) fn record(&mut self, ns: u64) {
        self.counts[bucket_index(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub(super) fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub(super) fn clear(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.sum_ns = 0;
        self.min_ns = u64::MAX;
        self.max_ns = 0;
    }

    pub(super) fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let mean = self.sum_ns / u128::from(self.count);
        Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
    }

    pub(super) fn sum(&self) -> Duration {
        let secs = self.sum_ns / 1_000_000_000;
        let nanos = self.sum_ns % 1_000_000_000;
        Duration::new(
            u64::try_from(secs).unwrap_or(u64::MAX),
            u32::try_from(nanos).unwrap_or(0),
        )
    }

    /// The nearest-rank `q`-quantile (0 < q ≤ 1): the bucket midpoint of the sample of
    /// rank ⌈q·n⌉, clamped to the observed min and max. Zero when empty.
    pub(super) fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = nearest_rank(q, self.count);
        let mut seen = 0u64;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(index);
                let estimate = if index == BUCKETS - 1 {
                    self.max_ns
                } else {
                    lo + (hi - lo) / 2
                };
                return Duration::from_nanos(estimate.clamp(self.min_ns, self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }
}

/// ⌈q·n⌉ clamped to 1..=n.
pub(super) fn nearest_rank(q: f64, n: u64) -> u64 {
    let rank = (q * n as f64).ceil();
    if rank.is_nan() || rank < 1.0 {
        1
    } else if rank >= n as f64 {
        n
    } else {
        // In 1..n, so the conversion is exact enough and cannot truncate.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "rank is in 1..n"
        )]
        let rank = rank as u64;
        rank
    }
}
