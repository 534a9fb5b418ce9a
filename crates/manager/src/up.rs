//! `shorthorn up`: an all-in-one node — the manager with the embedded store, this node's
//! agent, and a default disk under the data directory; with etcd, one node of a cluster.
//! `shorthorn agent`: the same node without a manager.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shorthorn_backup::TargetPolicy;

use shorthorn_agent::Agent;

use crate::cluster_agents::StoredNodes;
use crate::etcd::EtcdStore;
use crate::model::{DiskSpec, Node, NodeSpec, NodeStatus, Settings};
use crate::reconcile::{Manager, SETTINGS_NAME};
use crate::state::{EmbeddedStore, Kind, StateStore, StateStoreExt};

/// How long a manager's ownership of volumes outlives it (etcd lease time-to-live).
const OWNERSHIP_TTL: std::time::Duration = std::time::Duration::from_secs(6);

/// File in the data directory telling clients where the API is and its token.
pub const CONNECTION_FILE: &str = "manager.json";
/// File in the data directory holding the user token (the user routes take it).
pub const TOKEN_FILE: &str = "token";
/// File in the data directory holding the node credential: other nodes' managers call
/// this node's agent routes with it. Never in the connection file.
pub const NODE_TOKEN_FILE: &str = "node-token";
/// The data directory's folder recording the engines and replicas that outlive `up`.
pub const INSTANCES_DIR: &str = "instances";
/// etcd keys under which a cluster shares its user token and its node credential.
const TOKEN_KEY: &str = "token";
const NODE_TOKEN_KEY: &str = "node-token";

/// How to start a node.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Where state, the token and the default disk live.
    pub data_dir: PathBuf,
    /// The REST API's address.
    pub listen: SocketAddr,
    /// This node's name.
    pub node: String,
    /// The address replicas and engines listen on.
    pub address: IpAddr,
    /// etcd endpoints shared with other nodes' managers; empty: the embedded store.
    pub etcd: Vec<String>,
    /// What runs on this node.
    pub role: NodeRole,
    /// Directories `file://` backup targets named through the API may live under.
    pub file_target_roots: Vec<PathBuf>,
    /// Hosts `nfs://` backup targets named through the API may mount.
    pub nfs_target_hosts: Vec<String>,
    /// Whether stopping this process stops the node's engines and replicas (else they
    /// run on, recorded in `DATA_DIR/instances`, for the next one to take over).
    pub stop_instances: bool,
}

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Manager and agent (`shorthorn up`).
    Full,
    /// The agent only (`shorthorn agent`): it reports the node and its disks and runs
    /// the engines and replicas other nodes' managers ask for; it owns no volume and
    /// never leads.
    Agent,
}

/// What clients need to reach a running manager (`CONNECTION_FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connection {
    /// The API's base URL.
    pub url: String,
    /// The user token (never the node credential).
    pub token: String,
}

impl Connection {
    /// Reads the connection file of a data directory.
    pub fn load(data_dir: &Path) -> anyhow::Result<Connection> {
        let path = data_dir.join(CONNECTION_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is `shorthorn up` running with --data-dir {}? or set SHORTHORN_URL and SHORTHORN_TOKEN)",
                path.display(),
                data_dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
    }
}

/// Runs a node until `shutdown` resolves; `ready` gets the connection once the API
/// listens. Stops every engine and replica it started before returning.
pub async fn up(
    config: UpConfig,
    ready: impl FnOnce(&Connection, bool),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if config.role == NodeRole::Agent && config.etcd.is_empty() {
        anyhow::bail!(
            "an agent needs --etcd: it serves the managers of a cluster that shares etcd"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (local_token, mut first_start) = load_or_create_secret(&config.data_dir, TOKEN_FILE)?;
    let (local_node_token, _) = load_or_create_secret(&config.data_dir, NODE_TOKEN_FILE)?;
    let (state, token, node_token): (Arc<dyn StateStore>, String, String) =
        if config.etcd.is_empty() {
            let path = config.data_dir.join("state.redb");
            (
                Arc::new(EmbeddedStore::open(&path)?),
                local_token,
                local_node_token,
            )
        } else {
            let store = EtcdStore::connect(&config.etcd, &config.node, OWNERSHIP_TTL).await?;
            // Every node of a cluster serves the same secrets: the first node's.
            let token = store.put_if_absent(TOKEN_KEY, &local_token).await?;
            if token != local_token {
                write_private(&config.data_dir.join(TOKEN_FILE), &token)?;
                first_start = false;
            }
            let node_token = store
                .put_if_absent(NODE_TOKEN_KEY, &local_node_token)
                .await?;
            if node_token != local_node_token {
                write_private(&config.data_dir.join(NODE_TOKEN_FILE), &node_token)?;
            }
            (Arc::new(store), token, node_token)
        };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.listen))?;
    let mut api = listener.local_addr().context("API address")?;
    if api.ip().is_unspecified() {
        api.set_ip(config.address);
    }
    let url = format!("http://{api}");
    register_node(state.as_ref(), &config, &url)?;
    let target_policy = TargetPolicy::new(&config.file_target_roots, &config.nfs_target_hosts)?;
    let manager = Arc::new(Manager::new(
        state.clone(),
        Arc::new(
            Agent::new(
                &config.node,
                Arc::new(StoredNodes(state)),
                Arc::new(target_policy),
            )
            .keeping_instances(&config.data_dir.join(INSTANCES_DIR), config.stop_instances)?,
        ),
        &config.node,
        &node_token,
        config.role == NodeRole::Full,
    ));
    let connection = Connection { url, token };
    let connection_file = config.data_dir.join(CONNECTION_FILE);
    write_private(
        &connection_file,
        &serde_json::to_string_pretty(&connection).context("connection file")?,
    )?;
    ready(&connection, first_start);
    let app = crate::api::router(manager.clone(), &connection.token, &node_token);
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = api_stopped.await;
            })
            .await
    });
    manager.run(shutdown).await;
    let _ = stop_api.send(());
    server.await.context("API task")?.context("API server")?;
    Ok(())
}

/// A secret (the user token, the node credential) in the data directory's file `name`:
/// read, or generated (the bool says so: first start).
fn load_or_create_secret(data_dir: &Path, name: &str) -> anyhow::Result<(String, bool)> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => Ok((secret.trim().to_string(), false)),
        _ => {
            let secret = format!("{:032x}", rand::random::<u128>());
            write_private(&path, &secret)?;
            Ok((secret, true))
        }
    }
}

/// Writes `contents` to `path`, readable by its owner only (created so: no moment where
/// others may read it).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        // A file made earlier with a wider mode is narrowed too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(contents.as_bytes())
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// Records this node (its addresses updated on every start) with a default disk under
/// the data directory, and on the very first start of a single node (embedded store)
/// settings suited to one node (replicas may share it). A cluster sharing etcd keeps
/// Longhorn's default: hard node anti-affinity.
fn register_node(state: &dyn StateStore, config: &UpConfig, api_url: &str) -> anyhow::Result<()> {
    if let Some(mut node) = state.get::<Node>(Kind::Node, &config.node)? {
        if node.spec.api_url != api_url || node.spec.address != config.address.to_string() {
            node.spec.api_url = api_url.to_string();
            node.spec.address = config.address.to_string();
            state.put(Kind::Node, &node.name.clone(), &node)?;
        }
    } else {
        let disk = config.data_dir.join("disks").join("default");
        std::fs::create_dir_all(&disk).with_context(|| format!("creating {}", disk.display()))?;
        let disk = disk
            .canonicalize()
            .with_context(|| format!("resolving {}", disk.display()))?;
        let node = Node {
            name: config.node.clone(),
            spec: NodeSpec {
                address: config.address.to_string(),
                api_url: api_url.to_string(),
                zone: String::new(),
                tags: Vec::new(),
                allow_scheduling: true,
                evict: false,
                disks: vec![DiskSpec {
                    name: "default".into(),
                    path: disk.display().to_string(),
                    tags: Vec::new(),
                    reserved: 0,
                    allow_scheduling: true,
                    evict: false,
                }],
            },
            status: NodeStatus::default(),
        };
        state.put(Kind::Node, &node.name, &node)?;
    }
    if config.etcd.is_empty()
        && state
            .get::<Settings>(Kind::Settings, SETTINGS_NAME)?
            .is_none()
    {
        let mut settings = Settings::default();
        // One node: a 3-replica volume can only exist with replicas sharing it.
        settings.scheduling.replica_soft_anti_affinity = true;
        state.put(Kind::Settings, SETTINGS_NAME, &settings)?;
    }
    Ok(())
}
