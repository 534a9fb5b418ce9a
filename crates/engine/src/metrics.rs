//! Live I/O metrics of a volume: counters and latency histograms per request kind, kept
//! since start and for the last completed one-second window; a [`BlockDevice`] wrapper
//! that records every request; Prometheus text rendering and an HTTP `/metrics` endpoint.
//!
//! Request kinds are counted separately (`read`, `write`, `flush`, `trim`,
//! `write_zeroes`). The *directions* shown by `info` and exported as
//! `shorthorn_volume_{read,write}_*` aggregate them: **read** is `read`; **write** is
//! `write` + `write_zeroes` + `trim` (their ops, bytes — the request length — and
//! latencies). `flush` belongs to neither direction and carries no bytes.
//!
//! Only successful requests count as ops, bytes and latency samples; a failed request
//! counts as an error of its kind and nothing else. `block_status` and `size` are not
//! recorded. See `docs/metrics.md`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use shorthorn_block::size::format_size;
use shorthorn_block::{BlockDevice, BlockResult, Extent, WriteFlags, ZeroMode};
use shorthorn_prometheus::{MetricKind, family_header, float, sample, sanitize_name};

/// Length of the rotating window that "last second" figures describe.
const WINDOW: Duration = Duration::from_secs(1);

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
const BUCKETS: usize = 1 + (MAX_EXP - MIN_EXP) as usize * SUB + 1;

/// The kind of a block request, as counted by [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `read`.
    Read,
    /// `write` (data carried in the request).
    Write,
    /// `flush`.
    Flush,
    /// `trim` (discard).
    Trim,
    /// `write_zeroes`.
    WriteZeroes,
}

impl OpKind {
    /// Every kind, in the order [`MetricsSnapshot::by_op`] uses.
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Write,
        OpKind::Flush,
        OpKind::Trim,
        OpKind::WriteZeroes,
    ];

    /// The name used in the `op` label and by `info`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Flush => "flush",
            OpKind::Trim => "trim",
            OpKind::WriteZeroes => "write_zeroes",
        }
    }

    /// The direction whose IOPS and bandwidth include this kind (`None` for flush).
    pub fn direction(self) -> Option<Direction> {
        match self {
            OpKind::Read => Some(Direction::Read),
            OpKind::Write | OpKind::Trim | OpKind::WriteZeroes => Some(Direction::Write),
            OpKind::Flush => None,
        }
    }

    fn index(self) -> usize {
        match self {
            OpKind::Read => 0,
            OpKind::Write => 1,
            OpKind::Flush => 2,
            OpKind::Trim => 3,
            OpKind::WriteZeroes => 4,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An I/O direction: what IOPS and bandwidth figures are given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Reads.
    Read,
    /// Writes, write-zeroes and trims.
    Write,
}

// ---------------------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------------------

/// Index of the bucket holding `ns` nanoseconds.
fn bucket_index(ns: u64) -> usize {
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
fn bucket_bounds(index: usize) -> (u64, u64) {
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
struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    fn record(&mut self, ns: u64) {
        self.counts[bucket_index(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    fn clear(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.sum_ns = 0;
        self.min_ns = u64::MAX;
        self.max_ns = 0;
    }

    fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let mean = self.sum_ns / u128::from(self.count);
        Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
    }

    fn sum(&self) -> Duration {
        let secs = self.sum_ns / 1_000_000_000;
        let nanos = self.sum_ns % 1_000_000_000;
        Duration::new(
            u64::try_from(secs).unwrap_or(u64::MAX),
            u32::try_from(nanos).unwrap_or(0),
        )
    }

    /// The nearest-rank `q`-quantile (0 < q ≤ 1): the bucket midpoint of the sample of
    /// rank ⌈q·n⌉, clamped to the observed min and max. Zero when empty.
    fn quantile(&self, q: f64) -> Duration {
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
fn nearest_rank(q: f64, n: u64) -> u64 {
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

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// Counters and latencies of one kind over some interval.
#[derive(Clone)]
struct Stats {
    /// Latencies of successful requests; its count is the number of ops.
    latency: Histogram,
    bytes: u64,
    errors: u64,
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

// ---------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------

/// Figures of one request kind or one direction. Latencies are zero when no request
/// completed in the interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpSnapshot {
    /// Successful requests in the last completed one-second window (per second).
    pub iops_last_second: f64,
    /// Bytes of successful requests in the last completed window (per second).
    pub bytes_per_second_last_second: f64,
    /// Failed requests in the last completed window.
    pub errors_last_second: u64,
    /// Mean latency of the last completed window.
    pub latency_avg_last_second: Duration,
    /// 99th-percentile latency of the last completed window (within ~3 %).
    pub latency_p99_last_second: Duration,
    /// Successful requests since start.
    pub ops_total: u64,
    /// Bytes of successful requests since start.
    pub bytes_total: u64,
    /// Failed requests since start.
    pub errors_total: u64,
    /// Sum of the latencies of successful requests since start.
    pub latency_total: Duration,
    /// Mean latency since start.
    pub latency_avg_since_start: Duration,
    /// 99th-percentile latency since start (within ~3 %).
    pub latency_p99_since_start: Duration,
    /// Mean request rate since start (ops / uptime).
    pub iops_since_start: f64,
    /// Mean bandwidth since start (bytes / uptime).
    pub bytes_per_second_since_start: f64,
}

impl OpSnapshot {
    fn new(total: &Stats, last: &Stats, uptime: Duration) -> Self {
        let window = WINDOW.as_secs_f64();
        let uptime_secs = uptime.as_secs_f64();
        let per_uptime = |n: u64| {
            if uptime_secs > 0.0 {
                n as f64 / uptime_secs
            } else {
                0.0
            }
        };
        OpSnapshot {
            iops_last_second: last.latency.count as f64 / window,
            bytes_per_second_last_second: last.bytes as f64 / window,
            errors_last_second: last.errors,
            latency_avg_last_second: last.latency.mean(),
            latency_p99_last_second: last.latency.quantile(0.99),
            ops_total: total.latency.count,
            bytes_total: total.bytes,
            errors_total: total.errors,
            latency_total: total.latency.sum(),
            latency_avg_since_start: total.latency.mean(),
            latency_p99_since_start: total.latency.quantile(0.99),
            iops_since_start: per_uptime(total.latency.count),
            bytes_per_second_since_start: per_uptime(total.bytes),
        }
    }
}

/// `info`'s figures of one direction, field for field (durations as seconds).
impl From<&OpSnapshot> for shorthorn_proto::v1::IoFigures {
    fn from(s: &OpSnapshot) -> Self {
        shorthorn_proto::v1::IoFigures {
            iops_last_second: s.iops_last_second,
            bytes_per_second_last_second: s.bytes_per_second_last_second,
            latency_avg_seconds_last_second: s.latency_avg_last_second.as_secs_f64(),
            latency_p99_seconds_last_second: s.latency_p99_last_second.as_secs_f64(),
            latency_avg_seconds_since_start: s.latency_avg_since_start.as_secs_f64(),
            latency_p99_seconds_since_start: s.latency_p99_since_start.as_secs_f64(),
            ops_total: s.ops_total,
            bytes_total: s.bytes_total,
            errors_total: s.errors_total,
        }
    }
}

/// A point-in-time copy of a volume's [`Metrics`], plain data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Time since the metrics started.
    pub uptime: Duration,
    /// Reads.
    pub read: OpSnapshot,
    /// Writes, write-zeroes and trims together.
    pub write: OpSnapshot,
    /// Each request kind on its own, in [`OpKind::ALL`] order (see [`op`](Self::op)).
    pub by_op: [OpSnapshot; 5],
}

impl MetricsSnapshot {
    /// The figures of one request kind.
    pub fn op(&self, kind: OpKind) -> &OpSnapshot {
        &self.by_op[kind.index()]
    }
}

/// The text `info` shows: per direction the last second and since start, then every
/// request kind since start.
impl fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "uptime       {}", HumanDuration(self.uptime))?;
        for (name, s) in [("read", &self.read), ("write", &self.write)] {
            writeln!(
                f,
                "{name:<12} last second: {:.0} IOPS, {}/s, latency avg {}, p99 {}, errors {}",
                s.iops_last_second,
                format_rate(s.bytes_per_second_last_second),
                HumanLatency(s.latency_avg_last_second),
                HumanLatency(s.latency_p99_last_second),
                s.errors_last_second,
            )?;
            writeln!(
                f,
                "{:<12} since start: {} ops, {}, latency avg {}, p99 {}, errors {}",
                "",
                s.ops_total,
                format_size(s.bytes_total),
                HumanLatency(s.latency_avg_since_start),
                HumanLatency(s.latency_p99_since_start),
                s.errors_total,
            )?;
        }
        writeln!(f, "by request kind, since start:")?;
        for kind in OpKind::ALL {
            let s = self.op(kind);
            write!(f, "  {:<12} {} ops", kind.name(), s.ops_total)?;
            if kind != OpKind::Flush {
                write!(f, ", {}", format_size(s.bytes_total))?;
            }
            writeln!(
                f,
                ", latency avg {}, p99 {}, errors {}",
                HumanLatency(s.latency_avg_since_start),
                HumanLatency(s.latency_p99_since_start),
                s.errors_total,
            )?;
        }
        Ok(())
    }
}

/// A rate in bytes per second for people, as sizes are shown (`1.5 MiB`).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a non-negative rate, shown to one decimal"
)]
fn format_rate(bytes_per_second: f64) -> String {
    format_size(bytes_per_second.max(0.0) as u64)
}

struct HumanLatency(Duration);

impl fmt::Display for HumanLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs_f64();
        if self.0.is_zero() {
            f.write_str("-")
        } else if secs < 1e-3 {
            write!(f, "{:.0} µs", secs * 1e6)
        } else if secs < 1.0 {
            write!(f, "{:.2} ms", secs * 1e3)
        } else {
            write!(f, "{secs:.2} s")
        }
    }
}

struct HumanDuration(Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.as_secs();
        let (days, hours, minutes, seconds) = (
            total / 86_400,
            total / 3600 % 24,
            total / 60 % 60,
            total % 60,
        );
        if days > 0 {
            write!(f, "{days}d {hours}h {minutes}m {seconds}s")
        } else if hours > 0 {
            write!(f, "{hours}h {minutes}m {seconds}s")
        } else if minutes > 0 {
            write!(f, "{minutes}m {seconds}s")
        } else {
            write!(f, "{seconds}s")
        }
    }
}

// ---------------------------------------------------------------------------------------
// MeteredDevice
// ---------------------------------------------------------------------------------------

/// A [`BlockDevice`] that times every request on `inner` and records it in `metrics`.
/// `size` and `block_status` pass through unrecorded. A request whose future is dropped
/// before it completes is not recorded.
pub struct MeteredDevice<D> {
    inner: Arc<D>,
    metrics: Arc<Metrics>,
}

impl<D> MeteredDevice<D> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: Arc<D>, metrics: Arc<Metrics>) -> Self {
        MeteredDevice { inner, metrics }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &Arc<D> {
        &self.inner
    }

    /// Where requests are recorded.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    async fn timed<T>(
        &self,
        kind: OpKind,
        bytes: u64,
        request: impl Future<Output = BlockResult<T>>,
    ) -> BlockResult<T> {
        let start = Instant::now();
        let result = request.await;
        let end = Instant::now();
        self.metrics.record_at(
            end,
            kind,
            bytes,
            end.saturating_duration_since(start),
            result.is_ok(),
        );
        result
    }
}

impl<D> Clone for MeteredDevice<D> {
    fn clone(&self) -> Self {
        MeteredDevice {
            inner: self.inner.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<D> fmt::Debug for MeteredDevice<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredDevice")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl<D: BlockDevice> BlockDevice for MeteredDevice<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        self.timed(OpKind::Read, len, self.inner.read(offset, len))
            .await
    }

    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        let len = data.len() as u64;
        self.timed(OpKind::Write, len, self.inner.write(offset, data, flags))
            .await
    }

    async fn flush(&self) -> BlockResult<()> {
        self.timed(OpKind::Flush, 0, self.inner.flush()).await
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        self.timed(
            OpKind::WriteZeroes,
            len,
            self.inner.write_zeroes(offset, len, mode, flags),
        )
        .await
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.timed(OpKind::Trim, len, self.inner.trim(offset, len))
            .await
    }

    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        self.inner.block_status(offset, len).await
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------

/// An extra gauge sample for [`render_prometheus`], such as a replica's mode or a
/// rebuild's progress. Samples with the same `name` form one metric family (one HELP and
/// TYPE line, taken from the first).
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    /// Metric name, e.g. `shorthorn_replica_mode`. Characters outside
    /// `[a-zA-Z0-9_:]` are replaced with `_`.
    pub name: String,
    /// One-line description for the HELP line.
    pub help: String,
    /// Labels besides `volume`, which is added unless given here.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Gauge {
    /// A gauge with the given labels.
    pub fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        labels: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
        value: f64,
    ) -> Self {
        Gauge {
            name: name.into(),
            help: help.into(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            value,
        }
    }
}

/// The prefix of every family [`render_prometheus`] always writes.
const BUILTIN_PREFIX: &str = "shorthorn_volume_";

/// Renders `snapshot` and `extra` in the Prometheus text exposition format (0.0.4).
/// Every sample carries `volume="<volume>"`; label values and HELP texts are escaped.
pub fn render_prometheus(volume: &str, snapshot: &MetricsSnapshot, extra: &[Gauge]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Built-in family names, so extra gauges cannot reopen one.
    let mut builtin: Vec<String> = Vec::new();
    let volume_label = [("volume", volume)];
    let dirs = [("read", &snapshot.read), ("write", &snapshot.write)];

    type Field = fn(&OpSnapshot) -> String;
    let direction_families: [(&str, MetricKind, &str, Field); 10] = [
        (
            "iops",
            MetricKind::Gauge,
            "Successful {dir} requests per second, over the last completed second",
            |s| float(s.iops_last_second),
        ),
        (
            "bandwidth_bytes",
            MetricKind::Gauge,
            "Bytes per second of successful {dir} requests, over the last completed second",
            |s| float(s.bytes_per_second_last_second),
        ),
        (
            "latency_seconds_avg",
            MetricKind::Gauge,
            "Mean latency of successful {dir} requests over the last completed second (0 when idle)",
            |s| float(s.latency_avg_last_second.as_secs_f64()),
        ),
        (
            "latency_seconds_p99",
            MetricKind::Gauge,
            "99th-percentile latency of successful {dir} requests over the last completed second (0 when idle)",
            |s| float(s.latency_p99_last_second.as_secs_f64()),
        ),
        (
            "latency_seconds_avg_since_start",
            MetricKind::Gauge,
            "Mean latency of successful {dir} requests since the engine started",
            |s| float(s.latency_avg_since_start.as_secs_f64()),
        ),
        (
            "latency_seconds_p99_since_start",
            MetricKind::Gauge,
            "99th-percentile latency of successful {dir} requests since the engine started",
            |s| float(s.latency_p99_since_start.as_secs_f64()),
        ),
        (
            "ops_total",
            MetricKind::Counter,
            "Successful {dir} requests since the engine started",
            |s| s.ops_total.to_string(),
        ),
        (
            "bytes_total",
            MetricKind::Counter,
            "Bytes of successful {dir} requests since the engine started",
            |s| s.bytes_total.to_string(),
        ),
        (
            "errors_total",
            MetricKind::Counter,
            "Failed {dir} requests since the engine started",
            |s| s.errors_total.to_string(),
        ),
        (
            "latency_seconds_total",
            MetricKind::Counter,
            "Sum of the latencies of successful {dir} requests since the engine started",
            |s| float(s.latency_total.as_secs_f64()),
        ),
    ];
    for (dir, snap) in dirs {
        let what = match dir {
            "read" => "read",
            _ => "write (write, write_zeroes and trim)",
        };
        for (suffix, kind, help, field) in &direction_families {
            let name = format!("{BUILTIN_PREFIX}{dir}_{suffix}");
            family_header(&mut out, &name, &help.replace("{dir}", what), *kind);
            sample(&mut out, &name, &volume_label, &field(snap));
            builtin.push(name);
        }
    }

    let op_families: [(&str, &str, Field); 4] = [
        (
            "requests_total",
            "Successful requests since the engine started, by kind",
            |s| s.ops_total.to_string(),
        ),
        (
            "request_bytes_total",
            "Bytes of successful requests since the engine started, by kind",
            |s| s.bytes_total.to_string(),
        ),
        (
            "request_errors_total",
            "Failed requests since the engine started, by kind",
            |s| s.errors_total.to_string(),
        ),
        (
            "request_latency_seconds_total",
            "Sum of the latencies of successful requests since the engine started, by kind",
            |s| float(s.latency_total.as_secs_f64()),
        ),
    ];
    for (suffix, help, field) in &op_families {
        let name = format!("{BUILTIN_PREFIX}{suffix}");
        family_header(&mut out, &name, help, MetricKind::Counter);
        for kind in OpKind::ALL {
            sample(
                &mut out,
                &name,
                &[("volume", volume), ("op", kind.name())],
                &field(snapshot.op(kind)),
            );
        }
        builtin.push(name);
    }

    let name = format!("{BUILTIN_PREFIX}uptime_seconds");
    family_header(
        &mut out,
        &name,
        "Seconds since the engine started",
        MetricKind::Gauge,
    );
    sample(
        &mut out,
        &name,
        &volume_label,
        &float(snapshot.uptime.as_secs_f64()),
    );
    builtin.push(name);

    render_extra(&mut out, volume, extra, &builtin);
    out
}

fn render_extra(out: &mut String, volume: &str, extra: &[Gauge], builtin: &[String]) {
    let mut order: Vec<(String, Vec<&Gauge>)> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for gauge in extra {
        let name = sanitize_name(&gauge.name, true);
        if builtin.contains(&name) {
            tracing::warn!(name, "extra gauge has a built-in metric's name; skipped");
            continue;
        }
        let slot = *by_name.entry(name.clone()).or_insert_with(|| {
            order.push((name, Vec::new()));
            order.len() - 1
        });
        order[slot].1.push(gauge);
    }
    for (name, gauges) in order {
        let help = gauges
            .iter()
            .map(|g| g.help.as_str())
            .find(|h| !h.is_empty())
            .unwrap_or("");
        family_header(out, &name, help, MetricKind::Gauge);
        for gauge in gauges {
            let mut labels: Vec<(String, &str)> = Vec::with_capacity(gauge.labels.len() + 1);
            if !gauge.labels.iter().any(|(k, _)| k == "volume") {
                labels.push(("volume".to_owned(), volume));
            }
            for (key, value) in &gauge.labels {
                let key = sanitize_name(key, false);
                if labels.iter().all(|(k, _)| *k != key) {
                    labels.push((key, value));
                }
            }
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            sample(out, &name, &labels, &float(gauge.value));
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP endpoint
// ---------------------------------------------------------------------------------------

/// The content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = shorthorn_prometheus::CONTENT_TYPE;

/// How long in-flight scrapes may take to finish once `shutdown` completes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` (and `HEAD`) on `listener` with the text `render` returns, as
/// [`PROMETHEUS_CONTENT_TYPE`]; other paths get 404. Runs until `shutdown` completes,
/// then lets requests in flight finish (at most 5 s) and returns.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;

    let render = Arc::new(render);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], render()) }
        }),
    );
    // axum wants a 'static shutdown signal; ours may borrow, so relay it.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut server => return result,
        () = &mut shutdown => {}
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::cast_possible_truncation,
        reason = "test code"
    )]

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn buckets_cover_values_with_bounded_width() {
        let mut values: Vec<u64> = vec![0, 1, 999, 1023, 1024, 1025, 1 << 36, (1 << 37) - 1];
        values.extend((10..37).flat_map(|e| [(1u64 << e) - 1, 1 << e, (1 << e) + 1]));
        let mut rng = StdRng::seed_from_u64(7);
        values.extend((0..10_000).map(|_| rng.random_range(1024..1u64 << 37)));
        for v in values {
            let index = bucket_index(v);
            let (lo, hi) = bucket_bounds(index);
            assert!(lo <= v && v < hi, "{v} not in bucket {index} = {lo}..{hi}");
            if index != 0 {
                assert!((hi - lo) * 16 <= lo, "bucket {index} too wide: {lo}..{hi}");
            }
        }
        assert_eq!(bucket_index(1 << 37), BUCKETS - 1);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
        // Indices are dense and increasing.
        for i in 1..BUCKETS - 1 {
            assert_eq!(bucket_bounds(i).1, bucket_bounds(i + 1).0);
        }
    }

    /// Nearest-rank quantile of sorted values.
    fn reference(sorted: &[u64], q: f64) -> u64 {
        sorted[usize::try_from(nearest_rank(q, sorted.len() as u64)).unwrap() - 1]
    }

    #[test]
    fn quantiles_match_sorted_reference_within_bound() {
        let mut rng = StdRng::seed_from_u64(42);
        for round in 0..20 {
            let n = rng.random_range(1..20_000);
            let mut values: Vec<u64> = (0..n)
                .map(|_| match round % 3 {
                    // Log-uniform from 1 µs to 100 s.
                    0 => 10f64.powf(rng.random_range(3.0..11.0)) as u64,
                    // Narrow: 100–300 µs, the typical NBD case.
                    1 => rng.random_range(100_000..300_000),
                    // Bimodal: fast hits and slow misses.
                    _ => {
                        if rng.random_bool(0.97) {
                            rng.random_range(20_000..40_000)
                        } else {
                            rng.random_range(5_000_000..50_000_000)
                        }
                    }
                })
                .collect();
            let mut histogram = Histogram::new();
            for &v in &values {
                histogram.record(v);
            }
            values.sort_unstable();
            for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
                let want = reference(&values, q) as f64;
                let got = histogram.quantile(q).as_nanos() as f64;
                let error = (got - want).abs() / want;
                assert!(
                    error <= 1.0 / 32.0 + 1e-9,
                    "round {round} n {n} q {q}: got {got} want {want} error {error}"
                );
            }
            let mean = values.iter().map(|&v| u128::from(v)).sum::<u128>() / n as u128;
            assert_eq!(histogram.mean().as_nanos(), mean);
        }
    }

    #[test]
    fn empty_and_extreme_histograms() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
        let mut h = Histogram::new();
        h.record(300); // below 1 µs: clamped to the observed value
        assert_eq!(h.quantile(0.99), Duration::from_nanos(300));
        let mut h = Histogram::new();
        h.record(500_000_000_000); // 500 s: overflow bucket reports the max
        assert_eq!(h.quantile(0.99), Duration::from_secs(500));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn last_second_window_rotates_with_time() {
        let t0 = Instant::now();
        let m = Metrics::starting_at(t0);
        m.record_at(t0 + ms(100), OpKind::Read, 4096, ms(1), true);
        m.record_at(t0 + ms(500), OpKind::Read, 4096, ms(3), true);
        m.record_at(t0 + ms(600), OpKind::Write, 512, ms(2), true);

        // Window 0 is not complete yet.
        let s = m.snapshot_at(t0 + ms(900));
        assert_eq!(s.read.iops_last_second, 0.0);
        assert_eq!(s.read.ops_total, 2);
        assert_eq!(s.uptime, ms(900));

        // Window 0 completed: it is "last second".
        let s = m.snapshot_at(t0 + ms(1200));
        assert_eq!(s.read.iops_last_second, 2.0);
        assert_eq!(s.read.bytes_per_second_last_second, 8192.0);
        assert_eq!(s.read.latency_avg_last_second, ms(2));
        assert_eq!(s.write.iops_last_second, 1.0);
        assert_eq!(s.write.bytes_per_second_last_second, 512.0);

        m.record_at(t0 + ms(1500), OpKind::Read, 1024, ms(5), true);
        m.record_at(t0 + ms(1600), OpKind::Read, 1024, ms(5), false);
        let s = m.snapshot_at(t0 + ms(2100));
        assert_eq!(s.read.iops_last_second, 1.0);
        assert_eq!(s.read.bytes_per_second_last_second, 1024.0);
        assert_eq!(s.read.errors_last_second, 1);
        assert_eq!(s.write.iops_last_second, 0.0);
        assert_eq!(s.write.latency_p99_last_second, Duration::ZERO);
        assert_eq!(s.read.ops_total, 3);
        assert_eq!(s.read.bytes_total, 9216);
        assert_eq!(s.read.errors_total, 1);
        assert_eq!(s.read.latency_total, ms(9));
        assert_eq!(s.read.latency_avg_since_start, ms(3));
        assert!((s.read.iops_since_start - 3.0 / 2.1).abs() < 1e-9);

        // An idle gap: the window before 3.5 s (2..3 s) saw nothing.
        let s = m.snapshot_at(t0 + ms(3500));
        assert_eq!(s.read.iops_last_second, 0.0);
        assert_eq!(s.read.errors_last_second, 0);
        assert_eq!(s.read.ops_total, 3);

        // Recording after a gap of several windows starts afresh.
        m.record_at(t0 + ms(7300), OpKind::Read, 1, ms(1), true);
        assert_eq!(m.snapshot_at(t0 + ms(7900)).read.iops_last_second, 0.0);
        assert_eq!(m.snapshot_at(t0 + ms(8000)).read.iops_last_second, 1.0);
        assert_eq!(m.snapshot_at(t0 + ms(9000)).read.iops_last_second, 0.0);
    }

    #[test]
    fn late_records_count_in_the_current_window() {
        let t0 = Instant::now();
        let m = Metrics::starting_at(t0);
        m.record_at(t0 + ms(1100), OpKind::Read, 1, ms(1), true);
        // Completed "before" the window seen already (another thread's clock read).
        m.record_at(t0 + ms(990), OpKind::Read, 1, ms(1), true);
        let s = m.snapshot_at(t0 + ms(2000));
        assert_eq!(s.read.iops_last_second, 2.0);
        assert_eq!(s.read.ops_total, 2);
    }

    #[test]
    fn directions_aggregate_kinds() {
        let t0 = Instant::now();
        let m = Metrics::starting_at(t0);
        m.record_at(t0, OpKind::Write, 4096, ms(1), true);
        m.record_at(t0, OpKind::WriteZeroes, 65536, ms(2), true);
        m.record_at(t0, OpKind::Trim, 1 << 20, ms(3), true);
        m.record_at(t0, OpKind::Trim, 1 << 20, ms(3), false);
        m.record_at(t0, OpKind::Flush, 0, ms(10), true);
        m.record_at(t0, OpKind::Read, 512, ms(1), true);
        let s = m.snapshot_at(t0 + ms(1000));
        assert_eq!(s.write.ops_total, 3);
        assert_eq!(s.write.bytes_total, 4096 + 65536 + (1 << 20));
        assert_eq!(s.write.errors_total, 1);
        assert_eq!(s.write.iops_last_second, 3.0);
        assert_eq!(s.write.latency_avg_last_second, ms(2));
        assert_eq!(s.read.ops_total, 1);
        assert_eq!(s.op(OpKind::Flush).ops_total, 1);
        assert_eq!(s.op(OpKind::Flush).latency_avg_since_start, ms(10));
        assert_eq!(s.op(OpKind::Trim).errors_total, 1);
        assert_eq!(s.op(OpKind::WriteZeroes).bytes_total, 65536);
        // The p99 of merged kinds is the slowest of these few.
        let p99 = s.write.latency_p99_since_start.as_secs_f64();
        assert!((p99 - 0.003).abs() / 0.003 < 1.0 / 32.0, "{p99}");
        // info shows it.
        let info = s.to_string();
        assert!(info.contains("write        last second: 3 IOPS"), "{info}");
        assert!(
            info.contains("  flush        1 ops, latency avg 10.00 ms"),
            "{info}"
        );
    }

    #[test]
    fn io_figures_for_info() {
        let t0 = Instant::now();
        let m = Metrics::starting_at(t0);
        m.record_at(t0, OpKind::Read, 4096, ms(2), true);
        let s = m.snapshot_at(t0 + ms(1000));
        let figures = shorthorn_proto::v1::IoFigures::from(&s.read);
        assert_eq!(figures.iops_last_second, 1.0);
        assert_eq!(figures.bytes_per_second_last_second, 4096.0);
        assert_eq!(figures.latency_avg_seconds_last_second, 0.002);
        assert_eq!(figures.latency_avg_seconds_since_start, 0.002);
        assert_eq!((figures.ops_total, figures.bytes_total), (1, 4096));
        assert_eq!(figures.errors_total, 0);
    }
}
