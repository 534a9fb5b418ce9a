//! The long-running commands: `replica`, `engine`, `launch-simple` (both on one host)
//! and `up`/`agent` (the manager and node agent). Each runs until Ctrl-C or SIGTERM.

pub mod engine;
pub mod launch_simple;
pub mod replica;
pub mod up;
