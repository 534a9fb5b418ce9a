//! One running volume: the replicator, the frontend that can be stopped and started, and
//! the volume operations that need both (revert only with the frontend stopped; purge in
//! the background).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use parking_lot::Mutex;
use shorthorn_nbd::{Export, NbdServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Gauge, MeteredDevice, Metrics, render_prometheus};
use crate::operations::{OperationError, SnapshotLimits};
use crate::remote::RemoteReplica;
use crate::replica::PurgeOutcome;
use crate::replicator::Replicator;
use crate::status::ReplicaMode;

/// The replicator of a volume whose replicas are reached over the network.
pub type VolumeReplicator = Replicator<RemoteReplica>;

/// Where a purge stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PurgeState {
    /// None has run.
    #[default]
    Idle,
    /// Running on every replica.
    Running,
    /// The last one finished.
    Done(PurgeOutcome),
    /// The last one failed.
    Failed(String),
}

struct Frontend {
    uri: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A running volume. See the module documentation.
pub struct Engine {
    replicator: Arc<VolumeReplicator>,
    /// What the frontend's clients do, measured at the frontend.
    metrics: Arc<Metrics>,
    frontend_listen: Option<SocketAddr>,
    frontend: tokio::sync::Mutex<Option<Frontend>>,
    /// The frontend's URI while it runs, readable without waiting.
    frontend_uri: Mutex<Option<String>>,
    limits: SnapshotLimits,
    purge: Mutex<PurgeState>,
}

impl Engine {
    /// A volume served by `replicator`, with its frontend (when configured) not yet
    /// started.
    pub fn new(
        replicator: Arc<VolumeReplicator>,
        frontend_listen: Option<SocketAddr>,
        limits: SnapshotLimits,
    ) -> Self {
        Engine {
            replicator,
            metrics: Arc::new(Metrics::new()),
            frontend_listen,
            frontend: tokio::sync::Mutex::new(None),
            frontend_uri: Mutex::new(None),
            limits,
            purge: Mutex::new(PurgeState::Idle),
        }
    }

    /// The replicator.
    pub fn replicator(&self) -> &Arc<VolumeReplicator> {
        &self.replicator
    }

    /// The volume's I/O metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Prometheus text: I/O figures, replica modes and purge state.
    pub fn render_metrics(&self) -> String {
        let volume = self.replicator.volume();
        let mut gauges = Vec::new();
        for status in self.replicator.status() {
            for mode in [ReplicaMode::RW, ReplicaMode::WO, ReplicaMode::ERR] {
                gauges.push(Gauge::new(
                    "shorthorn_replica_mode",
                    "1 for the mode the replica is in, 0 for the others",
                    [
                        ("replica", status.address.clone()),
                        ("mode", mode.to_string()),
                    ],
                    f64::from(u8::from(status.mode == mode)),
                ));
            }
        }
        let running = self.purge_state() == PurgeState::Running;
        gauges.push(Gauge::new(
            "shorthorn_volume_purge_running",
            "1 while a snapshot purge runs",
            Vec::<(String, String)>::new(),
            f64::from(u8::from(running)),
        ));
        render_prometheus(volume, &self.metrics.snapshot(), &gauges)
    }

    /// The NBD URI while the frontend runs.
    pub fn frontend_uri(&self) -> Option<String> {
        self.frontend_uri.lock().clone()
    }

    /// Starts the NBD frontend; returns its URI. Starting a running frontend only
    /// returns its URI.
    pub async fn start_frontend(&self) -> anyhow::Result<String> {
        let mut frontend = self.frontend.lock().await;
        if let Some(running) = frontend.as_ref() {
            return Ok(running.uri.clone());
        }
        let listen = self
            .frontend_listen
            .context("this engine was started without a frontend (--frontend nbd)")?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the NBD frontend address {listen}"))?;
        let bound = listener.local_addr().context("reading the NBD address")?;
        let volume = self.replicator.volume().to_owned();
        let uri = format!("nbd://{bound}/{volume}");
        let device = Arc::new(MeteredDevice::new(
            self.replicator.clone(),
            self.metrics.clone(),
        ));
        let export = Export::new(volume.clone(), device)
            .with_description(format!("Shorthorn volume {volume}"))
            // A flush reaches every replica and syncs its whole head, so it covers
            // writes completed on any connection.
            .with_multi_conn(true);
        let server = NbdServer::new(vec![export]).context("configuring the NBD frontend")?;
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = server.serve_tcp(listener, shutdown.cancelled_owned()).await {
                tracing::error!(error = %e, "NBD frontend stopped");
            }
        });
        tracing::info!(%volume, %uri, "frontend started");
        *self.frontend_uri.lock() = Some(uri.clone());
        *frontend = Some(Frontend {
            uri: uri.clone(),
            stop,
            task,
        });
        Ok(uri)
    }

    /// Stops the frontend: no new connections, in-flight requests finish, clients are
    /// disconnected. Stopping a stopped frontend does nothing.
    pub async fn stop_frontend(&self) {
        let mut frontend = self.frontend.lock().await;
        if let Some(running) = frontend.take() {
            running.stop.cancel();
            if let Err(e) = running.task.await {
                tracing::error!(error = %e, "NBD frontend task failed");
            }
            *self.frontend_uri.lock() = None;
            tracing::info!(volume = %self.replicator.volume(), "frontend stopped");
        }
    }

    /// Takes a snapshot on every replica; an empty name gets `snap-<UTC time>`. Returns
    /// the name.
    pub async fn snapshot(
        &self,
        name: &str,
        system: bool,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, OperationError> {
        let name = if name.is_empty() {
            generated_name()
        } else {
            name.to_owned()
        };
        self.replicator
            .snapshot(&name, system, labels, self.limits)
            .await?;
        Ok(name)
    }

    /// Reverts the volume to snapshot `name`. Refused while the frontend runs: clients
    /// would see their disk change under them.
    pub async fn revert(&self, name: &str) -> Result<(), OperationError> {
        let frontend = self.frontend.lock().await;
        if frontend.is_some() {
            return Err(OperationError::Invalid(format!(
                "volume {} is being served; stop the frontend first (shorthorn --engine ADDR frontend stop), revert, then start it",
                self.replicator.volume()
            )));
        }
        self.replicator.revert(name).await
    }

    /// Starts a purge in the background unless one runs; returns whether it started.
    pub fn start_purge(self: &Arc<Self>) -> bool {
        {
            let mut state = self.purge.lock();
            if *state == PurgeState::Running {
                return false;
            }
            *state = PurgeState::Running;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let result = engine.replicator.purge().await;
            *engine.purge.lock() = match result {
                Ok(outcome) => PurgeState::Done(outcome),
                Err(e) => PurgeState::Failed(e.to_string()),
            };
        });
        true
    }

    /// Where the purge stands.
    pub fn purge_state(&self) -> PurgeState {
        self.purge.lock().clone()
    }

    /// Stops the frontend and flushes every replica.
    pub async fn shut_down(&self) {
        self.stop_frontend().await;
        if let Err(e) = shorthorn_block::BlockDevice::flush(self.replicator.as_ref()).await {
            tracing::warn!(volume = %self.replicator.volume(), error = %e, "final flush failed");
        }
    }
}

/// `snap-` and the UTC time to the millisecond, e.g. `snap-2026-11-22T17.07.00.123Z`
/// (colons are not allowed in names).
fn generated_name() -> String {
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    format!("snap-{}", time.replace(':', "."))
}
