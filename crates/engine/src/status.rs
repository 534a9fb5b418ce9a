//! Replica modes, volume states and rebuild progress, as shown by `ls` and `info`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a replica takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(
    clippy::upper_case_acronyms,
    reason = "the names users know from Longhorn"
)]
pub enum ReplicaMode {
    /// Serves reads and receives writes.
    RW,
    /// Receives writes only, while it is rebuilt.
    WO,
    /// Failed: receives nothing until it is rebuilt.
    ERR,
}

impl fmt::Display for ReplicaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaMode::RW => "RW",
            ReplicaMode::WO => "WO",
            ReplicaMode::ERR => "ERR",
        })
    }
}

/// One replica as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The replica's address (as given to the engine).
    pub address: String,
    /// Its mode.
    pub mode: ReplicaMode,
    /// Why it failed, when in ERR.
    pub error: Option<String>,
    /// Progress of its rebuild, while one runs.
    pub rebuild: Option<RebuildFigures>,
    /// Its recent average write latency in microseconds (the slow-replica rule's
    /// figure); 0 before its first write.
    pub write_latency_us: u64,
}

/// The volume's health, derived from its replicas' modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeState {
    /// Every replica is RW.
    Healthy,
    /// At least one replica is RW, not all.
    Degraded,
    /// No replica is RW: I/O fails.
    Faulted,
}

impl VolumeState {
    /// The state of a volume whose replicas have `modes`.
    pub fn from_modes(modes: impl Iterator<Item = ReplicaMode>) -> Self {
        let (mut rw, mut total) = (0, 0);
        for mode in modes {
            total += 1;
            rw += usize::from(mode == ReplicaMode::RW);
        }
        match rw {
            0 => VolumeState::Faulted,
            n if n == total => VolumeState::Healthy,
            _ => VolumeState::Degraded,
        }
    }
}

impl fmt::Display for VolumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VolumeState::Healthy => "healthy",
            VolumeState::Degraded => "degraded",
            VolumeState::Faulted => "faulted",
        })
    }
}

/// Progress figures of a rebuild, as `ls` and `info` show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildFigures {
    /// What it is doing.
    pub phase: String,
    /// Bytes to examine.
    pub total_bytes: u64,
    /// Bytes examined so far.
    pub done_bytes: u64,
    /// Bytes sent to the target so far.
    pub copied_bytes: u64,
}

/// Live progress of one rebuild or reconciliation.
#[derive(Debug, Default)]
pub struct RebuildProgress {
    phase: parking_lot::Mutex<String>,
    total: AtomicU64,
    done: AtomicU64,
    copied: AtomicU64,
}

impl RebuildProgress {
    /// The figures now.
    pub fn snapshot(&self) -> RebuildFigures {
        RebuildFigures {
            phase: self.phase.lock().clone(),
            total_bytes: self.total.load(Ordering::Relaxed),
            done_bytes: self.done.load(Ordering::Relaxed),
            copied_bytes: self.copied.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn start_phase(&self, phase: String, total: u64) {
        *self.phase.lock() = phase;
        self.total.fetch_add(total, Ordering::Relaxed);
    }

    /// `len` more bytes examined, `copied` of them sent to the target.
    pub(crate) fn examined(&self, len: u64, copied: u64) {
        self.copied.fetch_add(copied, Ordering::Relaxed);
        self.done.fetch_add(len, Ordering::Relaxed);
    }
}
