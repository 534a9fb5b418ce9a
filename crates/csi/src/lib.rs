//! Shorthorn's CSI driver (`shorthorn csi`): the Container Storage Interface v1.9.0 over
//! gRPC on a unix socket, as Kubernetes' kubelet and the CSI sidecars call it. The
//! driver holds no state of its own but its node stages: every volume, attachment,
//! snapshot and expansion is a call to the manager's REST API.
//!
//! - [`identity`]: name, capabilities, probe.
//! - [`controller`]: volumes, publish (attach), snapshots (`snap://`, `bak://`), expansion.
//! - [`node`]: stage (nbdfuse + loop device, format only when blank, mount), publish
//!   (bind mount), stats, expansion.

pub mod capability;
pub mod client;
pub mod condition;
pub mod controller;
pub mod host;
pub mod identity;
pub mod ids;
pub mod in_flight;
pub mod node;
pub mod params;

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The CSI protocol, generated from the spec's `csi.proto` (see `proto/README.md`).
#[allow(missing_docs, clippy::all, reason = "generated code")]
pub mod pb {
    tonic::include_proto!("csi.v1");
}

/// The topology key: a node's name (NodeGetInfo) and a volume's replica nodes.
pub const TOPOLOGY_KEY: &str = "shorthorn.io/node";

/// Which services one `shorthorn csi` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Identity and Controller (the controller Deployment, with the sidecars).
    Controller,
    /// Identity and Node (the node DaemonSet, beside the kubelet).
    Node,
    /// All three (one process on a test host).
    All,
}

/// What `shorthorn csi` was told.
#[derive(Debug, Clone)]
pub struct Config {
    /// The unix socket to serve on.
    pub socket: PathBuf,
    /// This node's name in the cluster (the manager's node name).
    pub node_id: String,
    /// The manager's API.
    pub manager: client::ManagerClient,
    /// Which services.
    pub mode: Mode,
    /// The driver's name (the CSIDriver object's).
    pub driver_name: String,
    /// Where node stages are recorded and nbdfuse mounts its files.
    pub state_dir: PathBuf,
    /// Paths staging and target paths must be under.
    pub allowed_roots: Vec<PathBuf>,
}

/// The socket path of a CSI endpoint: `unix:///path`, `unix:/path` or a plain path.
pub fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !path.starts_with('/') {
        bail!("endpoint {endpoint:?}: expected unix:///absolute/path.sock");
    }
    Ok(PathBuf::from(path))
}

/// Serves the CSI services `config` names until `stop` resolves.
pub async fn serve(config: Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    use pb::controller_server::ControllerServer;
    use pb::identity_server::IdentityServer;
    use pb::node_server::NodeServer;

    let socket = &config.socket;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by an earlier run (the kubelet's directory outlives the plugin).
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", socket.display())),
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let controller = matches!(config.mode, Mode::Controller | Mode::All);
    let node = matches!(config.mode, Mode::Node | Mode::All);
    let identity = identity::IdentityService::new(
        config.driver_name.clone(),
        config.manager.clone(),
        controller,
    );
    let controller = controller
        .then(|| ControllerServer::new(controller::ControllerService::new(config.manager.clone())));
    let node = node.then(|| {
        NodeServer::new(node::NodeService::new(
            config.node_id.clone(),
            config.manager.clone(),
            config.state_dir.clone(),
            config.allowed_roots.clone(),
        ))
    });
    tracing::info!(socket = %socket.display(), mode = ?config.mode, node = %config.node_id, driver = %config.driver_name, "CSI driver serving");
    let incoming = futures::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(stream, _)| stream), listener))
    });
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_optional_service(controller)
        .add_optional_service(node)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .context("serving CSI")?;
    Ok(())
}
