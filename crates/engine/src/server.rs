//! Running an engine: connect to the volume's replicas (over a unix socket when one is
//! on this host), replicate through them, serve the volume over NBD from inside this
//! process, and answer the control API.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use shorthorn_proto::v1::engine_control_server::EngineControlServer;
use shorthorn_wire::{ClientOptions, ReplicaAddr};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::connect::Connector;
use crate::control::EngineControlService;
use crate::engine::Engine;
use crate::metrics::serve_metrics;
use crate::replicator::operations::SnapshotLimits;

use crate::replicator::Replicator;

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

/// Runs an engine until `shutdown` is cancelled; `ready` receives its endpoints once
/// every listener is bound. On shutdown the frontend stops first, then the replicas are
/// flushed.
pub async fn run(
    config: EngineConfig,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<EngineEndpoints>,
) -> anyhow::Result<()> {
    let connector = Connector::new(config.volume.clone(), config.client);
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
