//! Running an engine: connect to the volume's replicas (over a unix socket when one is
//! on this host), replicate through them, serve the volume over NBD from inside this
//! process, and answer the control API.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shorthorn_proto::v1::engine_control_server::EngineControlServer;
use shorthorn_proto::v1::replica_control_client::ReplicaControlClient;
use shorthorn_proto::v1::{CloseDataConnectionsRequest, ReplicaInfoRequest};
use shorthorn_wire::{ClientOptions, ReplicaAddr, WireClient};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::control::EngineControlService;
use crate::engine::Engine;
use crate::metrics::serve_metrics;
use crate::operations::SnapshotLimits;
use crate::recovery::Candidate;
use crate::remote::RemoteReplica;
use crate::replica::Replica;
use crate::replicator::Replicator;

/// How long the engine waits for a replica's control API at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest control answer accepted (a fragmented layer's extent list can be large).
const MAX_CONTROL_MESSAGE: usize = 256 << 20;

/// What `shorthorn engine` is asked to run.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Volume name; also the NBD export name.
    pub volume: String,
    /// Volume size in bytes; every replica must have it.
    pub size: u64,
    /// Control API address.
    pub listen: SocketAddr,
    /// The replicas, each named by its `tcp://host:port` data address.
    pub replicas: Vec<ReplicaAddr>,
    /// Where the NBD frontend listens; `None` runs no frontend.
    pub frontend_listen: Option<SocketAddr>,
    /// Most NBD client connections open at once; more are refused (and logged) until
    /// some close.
    pub frontend_max_connections: usize,
    /// Connections, timeouts and pings towards each replica.
    pub client: ClientOptions,
    /// Limits on snapshot count and size.
    pub limits: SnapshotLimits,
    /// When a replica far slower than the others leaves the write set.
    pub slow_replicas: crate::SlowReplicaPolicy,
    /// Where Prometheus metrics are served (`GET /metrics`); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Open even when no replica is known to hold every acknowledged write, from the
    /// most up-to-date ones (see docs/consistency.md).
    pub salvage: bool,
}

/// Addresses a running engine serves, reported once it is ready.
#[derive(Debug, Clone)]
pub struct EngineEndpoints {
    /// The control API.
    pub control: SocketAddr,
    /// The NBD URI, when a frontend runs.
    pub frontend: Option<String>,
    /// The metrics URL, when served.
    pub metrics: Option<String>,
}

/// A replica's control address: its data port + 1.
pub fn replica_control_endpoint(addr: &ReplicaAddr) -> anyhow::Result<(String, u16)> {
    let ReplicaAddr::Tcp { host, port } = addr else {
        bail!(
            "replica {addr}: name replicas by their tcp://host:port address; the engine finds unix sockets itself"
        );
    };
    let control_port = port
        .checked_add(1)
        .with_context(|| format!("replica {addr}: no room for its control port"))?;
    Ok((host.clone(), control_port))
}

/// Connects the engine to replicas: at start, and later for `replica add` and salvage.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    volume: String,
    client: ClientOptions,
}

impl Connector {
    /// Connects to replica `addr` of a volume of `size` bytes and reads its record.
    pub(crate) async fn connect(
        &self,
        addr: &ReplicaAddr,
        size: u64,
    ) -> anyhow::Result<Candidate<RemoteReplica>> {
        let replica = connect_replica(&self.volume, size, self.client, addr).await?;
        let record = replica
            .record()
            .await
            .with_context(|| format!("replica {addr}: reading its consistency record"))?;
        Ok(Candidate {
            address: addr.to_string(),
            device: Arc::new(replica),
            record,
        })
    }
}

/// Connects to one replica: checks through its control API that it holds this volume
/// at this size, then opens the data path (its unix socket when it is on this host).
async fn connect_replica(
    volume: &str,
    size: u64,
    client: ClientOptions,
    addr: &ReplicaAddr,
) -> anyhow::Result<RemoteReplica> {
    let (host, port) = replica_control_endpoint(addr)?;
    let endpoint = Endpoint::from_shared(format!("http://{host}:{port}"))
        .with_context(|| format!("replica {addr}: bad control address"))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("replica {addr}: cannot reach its control API on port {port}"))?;
    let mut control =
        ReplicaControlClient::new(channel).max_decoding_message_size(MAX_CONTROL_MESSAGE);
    let info = tokio::time::timeout(CONNECT_TIMEOUT, control.info(ReplicaInfoRequest {}))
        .await
        .with_context(|| format!("replica {addr}: no answer from its control API"))?
        .with_context(|| format!("replica {addr}: control API refused Info"))?
        .into_inner();
    if info.volume != volume {
        bail!(
            "replica {addr} holds volume {:?}, not {volume:?}; start it with --volume {volume}",
            info.volume,
        );
    }
    if info.size != size {
        bail!(
            "replica {addr} has {} bytes, but volume {volume} has {size}",
            info.size,
        );
    }
    // Connections of an earlier session (this engine before a network cut, or an engine
    // that died) end before ours begin: their late frames must not land on what a
    // rebuild copies.
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        control.close_data_connections(CloseDataConnectionsRequest {}),
    )
    .await
    {
        Ok(Ok(closed)) if closed.get_ref().closed > 0 => {
            tracing::info!(replica = %addr, closed = closed.get_ref().closed, "fenced off earlier data connections");
        }
        Ok(Ok(_)) => {}
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            tracing::warn!(replica = %addr, "replica cannot fence earlier data connections (older version)");
        }
        Ok(Err(status)) => {
            return Err(anyhow::anyhow!("{}", status.message()))
                .with_context(|| format!("replica {addr}: closing earlier data connections"));
        }
        Err(_) => bail!("replica {addr}: no answer when closing earlier data connections"),
    }
    let data = local_socket(&host, &info.data_addresses).unwrap_or_else(|| addr.clone());
    let client = WireClient::connect(&data, client)
        .await
        .with_context(|| format!("replica {addr}: connecting to its data path {data}"))?;
    tracing::info!(volume = %volume, replica = %addr, data = %data, "replica connected");
    Ok(RemoteReplica::new(client, control))
}

/// The replica's unix socket, if it advertises one and sits on this host.
fn local_socket(host: &str, advertised: &[String]) -> Option<ReplicaAddr> {
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    advertised
        .iter()
        .filter_map(|a| a.parse::<ReplicaAddr>().ok())
        .find(|a| matches!(a, ReplicaAddr::Unix(path) if path.exists()))
}

/// Runs an engine until `shutdown` is cancelled; `ready` receives its endpoints once
/// every listener is bound. On shutdown the frontend stops first, then the replicas are
/// flushed.
pub async fn run(
    config: EngineConfig,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<EngineEndpoints>,
) -> anyhow::Result<()> {
    let connector = Connector {
        volume: config.volume.clone(),
        client: config.client,
    };
    let mut candidates = Vec::new();
    let mut unreachable = Vec::new();
    for addr in &config.replicas {
        match connector.connect(addr, config.size).await {
            Ok(candidate) => candidates.push(candidate),
            // The open rule decides whether the volume can start without it: only if
            // the replicas that answered provably hold every acknowledged write.
            Err(e) if config.replicas.len() > 1 => {
                tracing::error!(volume = %config.volume, replica = %addr, error = %format!("{e:#}"), "replica unreachable");
                unreachable.push(addr.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    if candidates.is_empty() {
        bail!("volume {}: no replica could be reached", config.volume);
    }
    let replicator = Replicator::open(
        &config.volume,
        config.size,
        candidates,
        &unreachable,
        config.salvage,
    )
    .await?;
    replicator.set_slow_replica_policy(config.slow_replicas);
    replicator.watch_failures();
    let engine = Arc::new(Engine::new(
        replicator,
        config.frontend_listen,
        config.frontend_max_connections,
        config.limits,
        connector,
        config.replicas.iter().map(ToString::to_string).collect(),
    ));

    let control_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the control address {}", config.listen))?;
    let control_addr = control_listener
        .local_addr()
        .context("reading the control address")?;
    let metrics = match config.metrics_listen {
        Some(listen) => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the metrics address {listen}"))?;
            let bound = listener
                .local_addr()
                .context("reading the metrics address")?;
            let (render, stop) = (engine.clone(), shutdown.clone());
            tokio::spawn(async move {
                let served = serve_metrics(
                    listener,
                    move || render.render_metrics(),
                    stop.cancelled_owned(),
                )
                .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            });
            Some(format!("http://{bound}/metrics"))
        }
        None => None,
    };
    let frontend = match config.frontend_listen {
        Some(_) => Some(engine.start_frontend().await?),
        None => None,
    };
    let endpoints = EngineEndpoints {
        control: control_addr,
        frontend: frontend.clone(),
        metrics: metrics.clone(),
    };
    tracing::info!(volume = %config.volume, control = %control_addr, frontend = ?frontend, "engine serving");
    let _ = ready.send(endpoints);
    let incoming = shorthorn_proto::incoming_nodelay(control_listener);
    tonic::transport::Server::builder()
        .add_service(EngineControlServer::new(EngineControlService::new(
            engine.clone(),
            metrics.unwrap_or_default(),
        )))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await
        .context("serving the control API")?;
    engine.shut_down().await;
    tracing::info!(volume = %config.volume, "engine stopped");
    Ok(())
}
