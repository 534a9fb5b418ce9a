//! Running a replica: open (or create) the store, serve its data over the wire protocol
//! on the replica's address (and a unix socket for engines on the same host), and the
//! control API on the next port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use shorthorn_proto::v1::replica_control_server::ReplicaControlServer;
use shorthorn_store::{ConsistencyFile, ConsistencyRecord, METADATA_FILE, Store, StoreDevice};
use shorthorn_wire::{ConnectionFence, ReplicaAddr, WireServer};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::control::ReplicaControlService;

/// What `shorthorn replica` is asked to run.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The replica directory; created with a new volume when it holds none.
    pub dir: PathBuf,
    /// Volume size: required to create, checked against an existing volume.
    pub size: Option<u64>,
    /// Volume name for a new volume (an existing volume keeps its own).
    pub volume: String,
    /// Data address; the control API listens on the next port.
    pub listen: SocketAddr,
    /// Also serve data on this unix socket (engines on the same host use it).
    pub unix_socket: Option<PathBuf>,
}

/// Opens the replica's store, creating the volume if the directory holds none.
pub fn open_or_create(dir: &Path, volume: &str, size: Option<u64>) -> anyhow::Result<Store> {
    if dir.join(METADATA_FILE).exists() {
        let store =
            Store::open(dir).with_context(|| format!("opening replica {}", dir.display()))?;
        if let Some(size) = size {
            if size != store.size() {
                bail!(
                    "replica {} holds a volume of {} bytes, but --size says {size}; \
                     expand the volume through its engine instead",
                    dir.display(),
                    store.size()
                );
            }
        }
        return Ok(store);
    }
    let Some(size) = size else {
        bail!(
            "{} holds no volume yet; give --size to create one",
            dir.display()
        );
    };
    Store::create(dir, volume, size).with_context(|| format!("creating replica {}", dir.display()))
}

/// Where a running replica serves, reported once every listener is bound.
#[derive(Debug, Clone)]
pub struct ReplicaEndpoints {
    /// Data addresses: `tcp://…` and, when enabled, `unix://…`.
    pub data: Vec<String>,
    /// The control API.
    pub control: SocketAddr,
}

/// Runs a replica until `shutdown` is cancelled, then flushes the store. `ready`
/// receives the endpoints once every listener is bound.
pub async fn run(
    config: ReplicaConfig,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<ReplicaEndpoints>,
) -> anyhow::Result<()> {
    let (dir, volume, size) = (config.dir.clone(), config.volume.clone(), config.size);
    let store = tokio::task::spawn_blocking(move || open_or_create(&dir, &volume, size))
        .await
        .context("store task failed")??;
    let store = Arc::new(store);
    let device = Arc::new(StoreDevice::new(store.clone()));

    let data = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the data address {}", config.listen))?;
    let control_addr = shorthorn_wire::control_socket_addr(config.listen)
        .with_context(|| format!("data address {}", config.listen))?;
    let control = std::net::TcpListener::bind(control_addr)
        .with_context(|| format!("binding the control address {control_addr}"))?;
    control
        .set_nonblocking(true)
        .context("configuring the control listener")?;
    let control = TcpListener::from_std(control).context("configuring the control listener")?;

    let mut data_addresses = vec![ReplicaAddr::from(config.listen).to_string()];
    let mut tasks = tokio::task::JoinSet::new();
    // One fence over both data listeners: the control API closes them together.
    let fence = ConnectionFence::default();
    let server = WireServer::new(device.clone()).fence(fence.clone());
    if let Some(path) = &config.unix_socket {
        // A socket file left by an earlier run would make bind fail.
        if path.exists() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let unix = UnixListener::bind(path)
            .with_context(|| format!("binding unix socket {}", path.display()))?;
        data_addresses.push(ReplicaAddr::unix(path.clone()).to_string());
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tasks.spawn(async move { server.serve(unix, shutdown.cancelled_owned()).await });
    }
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { server.serve(data, shutdown.cancelled_owned()).await });
    }
    tracing::info!(
        dir = %config.dir.display(),
        volume = %store.name(),
        size = store.size(),
        data = ?data_addresses,
        control = %control_addr,
        "replica serving"
    );
    let endpoints = ReplicaEndpoints {
        data: data_addresses.clone(),
        control: control_addr,
    };
    let record_dir = config.dir.clone();
    let record = tokio::task::spawn_blocking(move || ConsistencyRecord::load_or_init(&record_dir))
        .await
        .context("store task failed")?
        .with_context(|| format!("reading the consistency record of {}", config.dir.display()))?;
    let service = ReplicaControlService::new(store.clone(), data_addresses, record, fence);
    let _ = ready.send(endpoints);
    let incoming = shorthorn_proto::incoming_nodelay(control);
    tonic::transport::Server::builder()
        .add_service(ReplicaControlServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await
        .context("serving the control API")?;
    while tasks.join_next().await.is_some() {}
    let flush_store = store.clone();
    tokio::task::spawn_blocking(move || flush_store.flush())
        .await
        .context("store task failed")?
        .with_context(|| format!("flushing replica {}", config.dir.display()))?;
    if let Some(path) = &config.unix_socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!(dir = %config.dir.display(), "replica stopped");
    Ok(())
}
