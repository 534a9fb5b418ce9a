//! A point-in-time copy of the counters, as `info` prints them and gRPC carries them.

use std::fmt;
use std::time::Duration;

use shorthorn_block::size::format_size;

use super::OpKind;
use super::counters::{Stats, WINDOW};

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
    pub(super) fn new(total: &Stats, last: &Stats, uptime: Duration) -> Self {
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
