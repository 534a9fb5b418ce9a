//! A Shorthorn volume's controller (the engine): replicates every write to the volume's
//! replicas and serves reads from a healthy one. One engine per volume, so a crash or a
//! bug touches exactly one volume.

mod control;
mod engine;
mod metrics;
mod operations;
mod range_lock;
mod remote;
mod replica;
mod replicator;
mod server;
mod status;

pub use control::EngineControlService;
pub use engine::{Engine, PurgeState, VolumeReplicator};
pub use metrics::{
    Direction, Gauge, MeteredDevice, Metrics, MetricsSnapshot, OpKind, OpSnapshot,
    PROMETHEUS_CONTENT_TYPE, render_prometheus, serve_metrics,
};
pub use operations::{OperationError, SnapshotLimits};
pub use remote::RemoteReplica;
pub use replica::{PurgeOutcome, Replica, ReplicaOpError, SnapshotInfo};
pub use replicator::{Replicator, ReplicatorError};
pub use server::{EngineConfig, EngineEndpoints, run};
pub use status::{ReplicaMode, ReplicaStatus, VolumeState};
