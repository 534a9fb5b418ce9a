//! Replica modes and volume states, as shown by `ls` and `info`.

use std::fmt;

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
    pub rebuild: Option<crate::rebuild::RebuildFigures>,
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
