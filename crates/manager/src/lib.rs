//! Shorthorn's control plane: volumes, engines, replicas, nodes, backup targets and backups as objects with a spec (what
//! is wanted) and a status (what is), the scheduler that places replicas, the node agent
//! that runs engine and replica processes, the reconcilers that move status toward
//! spec, and the REST API.

pub mod api;
pub mod backups;
mod clock;
pub mod cluster_agents;
mod engine_client;
pub mod etcd;
pub mod events;
pub mod jobs;
pub mod model;
pub mod reconcile;
pub mod scheduler;
pub mod state;
pub mod up;
/// The request field rules, shared with the agent's API (which sits below the manager).
pub use shorthorn_agent::validate;
