//! Shorthorn's control plane: volumes, engines, replicas, nodes, backup targets and backups as objects with a spec (what
//! is wanted) and a status (what is), the scheduler that places replicas, the node agent
//! that runs engine and replica processes, the reconcilers that move status toward
//! spec, and the REST API.

pub mod agent;
pub mod agent_protocol;
pub mod api;
pub mod backups;
mod clock;
mod engine_client;
pub mod etcd;
pub mod jobs;
pub mod launch_checks;
pub mod model;
pub mod process;
pub mod reconcile;
pub mod replica_dir;
pub mod scheduler;
pub mod state;
pub mod up;
pub mod validate;
