//! A Shorthorn volume's controller (the engine): replicates every write to the volume's
//! replicas and serves reads from a healthy one. One engine per volume, so a crash or a
//! bug touches exactly one volume.

mod control;
mod range_lock;
mod replicator;
mod server;
mod status;

pub use control::EngineControlService;
pub use replicator::{Replica, Replicator, ReplicatorError};
pub use server::{EngineConfig, EngineEndpoints, run};
pub use status::{ReplicaMode, ReplicaStatus, VolumeState};
