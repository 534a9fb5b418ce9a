//! The replica server: serves one replica directory's store to an engine over the
//! `wire` data protocol, and a gRPC control API (info, snapshots) beside it.

mod control;
mod server;

pub use control::ReplicaControlService;
pub use server::{ReplicaConfig, ReplicaEndpoints, open_or_create, run};
