//! The long-running commands: `replica`, `engine`, `launch-simple` (both on one host)
//! `up`/`agent` (the manager and node agent) and `csi` (the Kubernetes driver). Each
//! runs until Ctrl-C or SIGTERM.

pub mod csi;
pub mod engine;
pub mod launch_simple;
pub mod replica;
pub mod up;
