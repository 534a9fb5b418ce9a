//! A Shorthorn volume's controller (the engine): replicates every write to the volume's
//! replicas and serves reads from a healthy one. One engine per volume, so a crash or a
//! bug touches exactly one volume.

mod connect;
mod control;
mod engine;
mod metrics;
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
pub use remote::RemoteReplica;
pub use replica::{Replica, ReplicaOpError};
pub use replicator::activity_log::REGION_SIZE;
pub use replicator::operations::{OperationError, SnapshotLimits};
pub use replicator::rebuild::CHUNK_SIZE;
pub use replicator::recovery::{Candidate, Plan, plan};
pub use replicator::{OpenSlot, Replicator, ReplicatorError, SlowReplicaPolicy};
pub use server::{EngineConfig, EngineEndpoints, run};
pub use shorthorn_block::{ConsistencyRecord, LayerInfo, PurgeReport, snapshot_chain};
pub use status::{RebuildFigures, ReplicaMode, ReplicaStatus, VolumeState};
