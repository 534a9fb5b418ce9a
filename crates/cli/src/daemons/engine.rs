//! `shorthorn engine`: run a volume's controller.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use shorthorn_engine::{EngineConfig, SlowReplicaPolicy, SnapshotLimits};
use shorthorn_wire::{ClientOptions, ReplicaAddr};

use crate::daemon;
use shorthorn_block::size::parse_size;

/// The frontends an engine can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Frontend {
    /// An NBD server inside the engine; the export name is the volume name.
    Nbd,
}

/// Run a volume's engine: replicate every write to the replicas, serve the volume.
///
/// Each replica is named by its data address (tcp://host:port, as given to `shorthorn
/// replica --listen`); its control API is on the next port. When a replica runs on this
/// host, the engine uses its unix socket for data. A write is acknowledged only when
/// every replica in RW mode has it; a replica that fails or times out goes to ERR and
/// the volume carries on with the others. Stops on Ctrl-C or SIGTERM after a flush.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Volume name (also the NBD export name).
    volume: String,
    /// Volume size (e.g. 10G); every replica must have exactly this size.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// Control API address (what `shorthorn --engine ADDR ls` talks to).
    #[arg(long, default_value = "127.0.0.1:9501")]
    listen: SocketAddr,
    /// A replica's data address, tcp://host:port; repeat for each replica.
    #[arg(long = "replica", required = true)]
    replicas: Vec<ReplicaAddr>,
    /// Frontend to serve.
    #[arg(long, value_enum)]
    frontend: Option<Frontend>,
    /// Where the frontend listens.
    #[arg(long, default_value = "127.0.0.1:10809")]
    frontend_listen: SocketAddr,
    /// Most NBD client connections open at once; a connection beyond it is closed at
    /// once (logged as "refusing connection: too many connections") until some close.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: u32,
    /// A replica request unanswered this long fails the replica (e.g. 8s, 500ms).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// A replica whose average write latency stays this many times above every other
    /// RW replica's (and above 20 ms) for --slow-replica-window leaves the write set
    /// (ERR; rebuild it later). Never the last RW replica. 0: never.
    #[arg(long, default_value_t = 8)]
    slow_replica_ratio: u32,
    /// How long a replica must stay --slow-replica-ratio times slower (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    slow_replica_window: Duration,
    /// Data connections to each replica.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Most snapshots in the volume's chain; creating one more fails with a clear error.
    #[arg(long, default_value_t = 250)]
    max_snapshots: usize,
    /// Most bytes all snapshots may occupy on a replica (e.g. 100G); 0: no limit.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    max_snapshot_bytes: u64,
    /// Serve Prometheus metrics (GET /metrics) on this address.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Open even when the replicas that answer cannot be shown to hold every
    /// acknowledged write (a member of the newest record is missing, or all failed):
    /// the volume comes back from the most recent of them, and loses any write
    /// acknowledged only by the replicas that did not answer. See docs/consistency.md.
    #[arg(long)]
    salvage: bool,
    /// Stop when stdin closes (used by launch-simple so no engine outlives it).
    #[arg(long, hide = true)]
    exit_on_stdin_eof: bool,
}

/// Runs the engine until it is told to stop.
pub fn run(args: EngineArgs) -> anyhow::Result<()> {
    let client = ClientOptions {
        connections: args.connections,
        request_timeout: args.request_timeout,
        ..ClientOptions::default()
    };
    let config = EngineConfig {
        volume: args.volume,
        size: args.size,
        listen: args.listen,
        replicas: args.replicas,
        frontend_listen: args.frontend.map(|Frontend::Nbd| args.frontend_listen),
        frontend_max_connections: args.max_connections as usize,
        client,
        metrics_listen: args.metrics_listen,
        salvage: args.salvage,
        slow_replicas: SlowReplicaPolicy {
            ratio: args.slow_replica_ratio,
            window: args.slow_replica_window,
            ..SlowReplicaPolicy::default()
        },
        limits: SnapshotLimits {
            max_count: args.max_snapshots,
            max_total_bytes: args.max_snapshot_bytes,
        },
    };
    let runtime = daemon::runtime()?;
    runtime.block_on(async {
        let shutdown = daemon::shutdown_token(args.exit_on_stdin_eof)?;
        let (ready, endpoints) =
            tokio::sync::oneshot::channel::<shorthorn_engine::EngineEndpoints>();
        let announce = tokio::spawn(async move {
            if let Ok(endpoints) = endpoints.await {
                let frontend = endpoints.frontend.unwrap_or_else(|| "none".into());
                println!(
                    "engine ready: control {} frontend {frontend}",
                    endpoints.control
                );
            }
        });
        let result = shorthorn_engine::run(config, shutdown, ready).await;
        announce.abort();
        result.context("engine failed")
    })
}
