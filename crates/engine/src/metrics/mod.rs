//! Live I/O metrics of a volume: counters and latency histograms per request kind, kept
//! since start and for the last completed one-second window; a [`BlockDevice`](shorthorn_block::BlockDevice) wrapper
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
//!
//! One file per part: [`counters`] (what is counted), [`histogram`] (latencies),
//! [`snapshot`] (a copy for `info` and gRPC), [`metered`] (the recording device),
//! [`exposition`] (Prometheus text) and [`endpoint`] (`/metrics` over HTTP).

mod counters;
mod endpoint;
mod exposition;
mod histogram;
mod metered;
mod snapshot;
#[cfg(test)]
mod tests;

pub use counters::Metrics;
pub use endpoint::{PROMETHEUS_CONTENT_TYPE, serve_metrics};
pub use exposition::{Gauge, render_prometheus};
pub use metered::MeteredDevice;
pub use snapshot::{MetricsSnapshot, OpSnapshot};

use std::fmt;

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
