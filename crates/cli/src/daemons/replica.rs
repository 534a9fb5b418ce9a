//! `shorthorn replica`: serve one replica directory; `shorthorn --engine ADDR replica
//! add|rm ADDR`: add (rebuild) or remove a replica of a running volume.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use shorthorn_replica::ReplicaConfig;

use crate::daemon;
use shorthorn_block::size::parse_size;

/// Longest unix socket path the kernel accepts (sun_path is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Serve a replica: one copy of a volume, kept in DIR, for an engine to replicate to.
/// With `add` or `rm` (and --engine): change the replicas of a running volume.
///
/// Data (the wire protocol) is served on --listen; the control API (gRPC) on the next
/// port (P+1). The replica also serves data on a unix socket (DIR/data.sock by default),
/// which an engine on the same host uses instead of TCP. Stops on Ctrl-C or SIGTERM
/// after flushing.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReplicaArgs {
    /// Add or remove a replica of the volume of `--engine ADDR`.
    #[command(subcommand)]
    pub action: Option<ReplicaAction>,
    /// The replica directory; a new volume is created in it if it holds none.
    #[arg(required = true)]
    dir: Option<PathBuf>,
    /// Volume size (e.g. 10G, 512M, 4096): needed to create; checked when opening.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Volume name for a new volume [default: the directory's name].
    #[arg(long)]
    volume: Option<String>,
    /// Data address; the control API takes the next port.
    #[arg(long, default_value = "127.0.0.1:9502")]
    listen: SocketAddr,
    /// Unix socket for engines on this host [default: DIR/data.sock].
    #[arg(long, conflicts_with = "no_unix_socket")]
    unix_socket: Option<PathBuf>,
    /// Serve no unix socket.
    #[arg(long)]
    no_unix_socket: bool,
    /// Stop when stdin closes (used by launch-simple so no replica outlives it).
    #[arg(long, hide = true)]
    exit_on_stdin_eof: bool,
}

/// Changes to the replicas of a running volume.
#[derive(Debug, Subcommand)]
pub enum ReplicaAction {
    /// Add a replica (a new one, or one that failed and came back) and rebuild it while
    /// the volume serves I/O: it joins write-only, receives the data it lacks (chunks it
    /// already holds are recognised by checksum and skipped), is verified, and becomes
    /// RW. Start the replica first (`shorthorn replica DIR --size SIZE --listen …`).
    /// Progress shows in `ls`; waits until the rebuild ends and prints what it copied.
    Add {
        /// The replica's data address, tcp://host:port.
        address: String,
        /// Most bytes per second the rebuild copies (e.g. 100M); 0: no limit.
        #[arg(long, default_value = "0", value_parser = parse_size)]
        bandwidth: u64,
    },
    /// Remove a replica from the volume (its directory is left as it is). The last RW
    /// replica cannot be removed.
    Rm {
        /// The replica's data address, tcp://host:port.
        address: String,
    },
}

/// Runs the replica until it is told to stop.
pub fn run(args: ReplicaArgs) -> anyhow::Result<()> {
    let Some(dir) = args.dir else {
        anyhow::bail!("give the replica directory: shorthorn replica DIR --size SIZE");
    };
    let volume = match args.volume {
        Some(volume) => volume,
        None => crate::offline_store::default_name(&dir, "--volume")?,
    };
    let unix_socket = if args.no_unix_socket {
        None
    } else {
        let path = args.unix_socket.unwrap_or_else(|| dir.join("data.sock"));
        let absolute = std::path::absolute(&path).unwrap_or(path);
        if absolute.as_os_str().len() > MAX_SOCKET_PATH {
            tracing::warn!(path = %absolute.display(), "unix socket path too long; serving TCP only");
            None
        } else {
            Some(absolute)
        }
    };
    let config = ReplicaConfig {
        dir,
        size: args.size,
        volume,
        listen: args.listen,
        unix_socket,
    };
    let runtime = daemon::runtime()?;
    runtime.block_on(async {
        let shutdown = daemon::shutdown_token(args.exit_on_stdin_eof)?;
        let (ready, endpoints) =
            tokio::sync::oneshot::channel::<shorthorn_replica::ReplicaEndpoints>();
        let announce = tokio::spawn(async move {
            if let Ok(endpoints) = endpoints.await {
                println!(
                    "replica ready: data {} control {}",
                    endpoints.data.join(" "),
                    endpoints.control
                );
            }
        });
        let result = shorthorn_replica::run(config, shutdown, ready).await;
        announce.abort();
        result
    })
}
