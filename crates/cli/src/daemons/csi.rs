//! `shorthorn csi`: the Kubernetes CSI driver, a client of a manager's API.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use shorthorn_csi::client::ManagerClient;
use shorthorn_csi::{Config, Mode};

use crate::daemon;

/// Serve the Container Storage Interface (v1.9.0) on a unix socket for Kubernetes: the
/// Controller service (volumes, attachments, snapshots, expansion — each a call to the
/// manager's API) and the Node service (a published volume as a block device through
/// nbdfuse and a loop device, formatted only when blank, mounted and bind-mounted).
/// See docs/kubernetes.md.
#[derive(Debug, Args)]
pub struct CsiArgs {
    /// The socket the CSI sidecars and the kubelet call.
    #[arg(long, default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// This node's name in the Shorthorn cluster (`shorthorn node ls`).
    #[arg(long, env = "NODE_ID")]
    node_id: String,
    /// The manager's API, http://HOST:PORT.
    #[arg(long, env = "SHORTHORN_URL")]
    manager_url: String,
    /// A file holding the API token (a mounted Secret).
    #[arg(long, value_name = "PATH")]
    token_file: PathBuf,
    /// Which services: controller (with the provisioner, attacher, resizer and
    /// snapshotter sidecars), node (beside the kubelet), or all (one host, tests).
    #[arg(long, value_enum, default_value = "all")]
    mode: CsiMode,
    /// The driver's name, as the CSIDriver object and StorageClasses name it.
    #[arg(long, default_value = "io.shorthorn.csi")]
    driver_name: String,
    /// Where node stages are recorded and nbdfuse shows volumes (kept across restarts).
    #[arg(long, default_value = "/var/lib/shorthorn-csi")]
    state_dir: PathBuf,
    /// Staging and target paths must be under this directory; repeat for more.
    #[arg(long = "allowed-root", default_value = "/var/lib/kubelet")]
    allowed_roots: Vec<PathBuf>,
}

/// Which CSI services to serve.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CsiMode {
    Controller,
    Node,
    All,
}

/// Runs `shorthorn csi` until SIGINT or SIGTERM.
pub fn run(args: CsiArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading the API token from {}", args.token_file.display()))?;
    let manager = ManagerClient::new(&args.manager_url, token.trim())?;
    let config = Config {
        socket: shorthorn_csi::socket_path(&args.endpoint)?,
        node_id: args.node_id,
        manager,
        mode: match args.mode {
            CsiMode::Controller => Mode::Controller,
            CsiMode::Node => Mode::Node,
            CsiMode::All => Mode::All,
        },
        driver_name: args.driver_name,
        state_dir: args.state_dir,
        allowed_roots: args.allowed_roots,
    };
    daemon::runtime()?.block_on(async {
        let stop = daemon::shutdown_token(false)?;
        shorthorn_csi::serve(config, stop.cancelled_owned()).await
    })
}
