//! A Shorthorn volume's controller (the engine): replicates every write to the volume's
//! replicas and serves reads from a healthy one. One engine per volume, so a crash or a
//! bug touches exactly one volume.

mod activity_log;
mod connect;
mod control;
mod engine;
mod metrics;
mod operations;
mod range_lock;
mod rebuild;
mod recovery;
mod remote;
mod replica;
mod replicator;
mod server;
mod status;

pub use activity_log::REGION_SIZE;
pub use control::EngineControlService;
pub use engine::{Engine, PurgeState, VolumeReplicator};
pub use metrics::{
    Direction, Gauge, MeteredDevice, Metrics, MetricsSnapshot, OpKind, OpSnapshot,
    PROMETHEUS_CONTENT_TYPE, render_prometheus, serve_metrics,
};
pub use operations::{OperationError, SnapshotLimits};
pub use rebuild::CHUNK_SIZE;
pub use recovery::{Candidate, Plan, plan};
pub use remote::RemoteReplica;
pub use replica::{PurgeOutcome, Replica, ReplicaOpError, ReplicaRecord, SnapshotInfo};
pub use replicator::{OpenSlot, Replicator, ReplicatorError, SlowReplicaPolicy};
pub use server::{EngineConfig, EngineEndpoints, run};
pub use status::{RebuildFigures, ReplicaMode, ReplicaStatus, VolumeState};
