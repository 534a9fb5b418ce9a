//! Shorthorn's node agent (instance manager): it starts, stops and watches the engine
//! and replica processes of one node when a manager asks, and reports the node's
//! disks. Everything a caller sends is checked against the node's own record first
//! ([`launch_checks`]); replica directories are derived, marked and removed by the
//! agent alone ([`replica_dir`]). Managers reach agents through [`NodeAgent`]: this
//! process's own [`Agent`], or another node's over its API ([`RemoteAgent`]).

mod agent;
pub mod http;
pub mod instances;
pub mod launch_checks;
pub mod naming;
mod node;
pub mod process;
pub mod protocol;
mod remote;
pub mod replica_dir;
pub mod routes;
pub mod validate;

pub use agent::Agent;
pub use node::{DiskSpec, DiskStatus, EngineTuning, NodeFacts, NodeRecords, disk_status};
pub use remote::{NodeAgent, RemoteAgent};
