//! One running volume: the replicator, the frontend that can be stopped and started, and
//! the volume operations that need both (revert only with the frontend stopped; purge in
//! the background).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use parking_lot::Mutex;
use shorthorn_block::BlockDevice;
use shorthorn_nbd::{Export, NbdServer, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connect::Connector;
use crate::metrics::{Gauge, MeteredDevice, Metrics, render_prometheus};
use crate::remote::RemoteReplica;
use crate::replicator::Replicator;
use crate::replicator::operations::{OperationError, SnapshotLimits};
use crate::status::{RebuildFigures, ReplicaMode};
use shorthorn_block::PurgeReport;

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
    Done(PurgeReport),
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
    /// Most NBD connections at once.
    frontend_max_connections: usize,
    frontend: tokio::sync::Mutex<Option<Frontend>>,
    /// The frontend's URI while it runs, readable without waiting.
    frontend_uri: Mutex<Option<String>>,
    limits: SnapshotLimits,
    purge: Mutex<PurgeState>,
    /// Connects to replicas added later or reconnected by salvage.
    connector: Connector,
    /// Every replica address the volume has (what salvage reconnects to).
    addresses: Mutex<Vec<String>>,
}

impl Engine {
    /// A volume served by `replicator`, with its frontend (when configured) not yet
    /// started.
    pub(crate) fn new(
        replicator: Arc<VolumeReplicator>,
        frontend_listen: Option<SocketAddr>,
        frontend_max_connections: usize,
        limits: SnapshotLimits,
        connector: Connector,
        addresses: Vec<String>,
    ) -> Self {
        Engine {
            connector,
            addresses: Mutex::new(addresses),
            replicator,
            metrics: Arc::new(Metrics::new()),
            frontend_listen,
            frontend_max_connections,
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
        let config = ServerConfig {
            max_connections: self.frontend_max_connections,
            ..ServerConfig::default()
        };
        let server =
            NbdServer::with_config(vec![export], config).context("configuring the NBD frontend")?;
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

    /// Adds replica `address` and rebuilds it live (at most `bandwidth` bytes per second,
    /// 0: no limit); returns when it is RW.
    pub async fn add_replica(
        &self,
        address: &str,
        bandwidth: u64,
    ) -> Result<RebuildFigures, OperationError> {
        let addr: shorthorn_wire::ReplicaAddr = address
            .parse()
            .map_err(|e| OperationError::Invalid(format!("replica address {address:?}: {e}")))?;
        if *self.purge.lock() == PurgeState::Running {
            return Err(OperationError::Invalid(format!(
                "volume {}: a purge is running; add the replica when it has finished",
                self.replicator.volume()
            )));
        }
        let candidate = self
            .connector
            .connect(&addr, self.replicator.size())
            .await
            .map_err(|e| OperationError::Invalid(format!("{e:#}")))?;
        let address = addr.to_string();
        {
            let mut addresses = self.addresses.lock();
            if !addresses.contains(&address) {
                addresses.push(address.clone());
            }
        }
        self.replicator
            .rebuild(
                &address,
                &candidate.record.replica_id,
                candidate.device,
                bandwidth,
            )
            .await
            .map_err(|reason| OperationError::Failed {
                volume: self.replicator.volume().to_owned(),
                operation: format!("rebuild of {address}"),
                reasons: reason,
            })
    }

    /// Removes replica `address` from the volume. The last RW replica cannot go.
    pub async fn remove_replica(&self, address: &str) -> Result<(), OperationError> {
        let address = address
            .parse::<shorthorn_wire::ReplicaAddr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| address.to_owned());
        let replicator = &self.replicator;
        let _drained = replicator.io_gate.write().await;
        let slot = replicator.slot(&address).ok_or_else(|| {
            OperationError::Invalid(format!(
                "volume {} has no replica {address}",
                replicator.volume()
            ))
        })?;
        if replicator.rebuilding.lock().as_deref() == Some(address.as_str()) {
            return Err(OperationError::Invalid(format!(
                "replica {address} is being rebuilt; wait for the rebuild to end"
            )));
        }
        let other_rw = replicator
            .slots()
            .iter()
            .any(|s| s.address != address && s.mode() == ReplicaMode::RW);
        if slot.mode() == ReplicaMode::RW && !other_rw {
            return Err(OperationError::Invalid(format!(
                "replica {address} is the last RW replica of volume {}; it cannot be removed",
                replicator.volume()
            )));
        }
        replicator.remove_slot(&address);
        self.addresses.lock().retain(|a| a != &address);
        let version = replicator.log.forget(&slot.id);
        replicator
            .persist(version)
            .await
            .map_err(|e| OperationError::Failed {
                volume: replicator.volume().to_owned(),
                operation: "recording the removal".into(),
                reasons: e.to_string(),
            })?;
        tracing::info!(volume = %replicator.volume(), replica = %address, "replica removed");
        Ok(())
    }

    /// Salvage: reconnects to every replica address of the volume and brings the volume
    /// back from the most up-to-date of those that answer. Only when no replica is RW.
    pub async fn salvage(&self) -> Result<Vec<String>, OperationError> {
        let replicator = &self.replicator;
        if replicator.any_rw().is_some() {
            return Err(OperationError::Invalid(format!(
                "volume {} still has an RW replica; salvage is for a volume whose replicas all failed (use `replica add` to rebuild the others)",
                replicator.volume()
            )));
        }
        let addresses = self.addresses.lock().clone();
        let mut candidates = Vec::new();
        let mut unreachable = Vec::new();
        for address in &addresses {
            let connected = match address.parse::<shorthorn_wire::ReplicaAddr>() {
                Ok(addr) => self.connector.connect(&addr, replicator.size()).await,
                Err(e) => Err(anyhow::anyhow!("{e}")),
            };
            match connected {
                Ok(candidate) => candidates.push(candidate),
                Err(e) => {
                    tracing::warn!(volume = %replicator.volume(), replica = %address, error = %format!("{e:#}"), "salvage: replica unreachable");
                    unreachable.push((address.clone(), format!("{e:#}")));
                }
            }
        }
        if candidates.is_empty() {
            let reasons: Vec<&str> = unreachable.iter().map(|(_, e)| e.as_str()).collect();
            return Err(OperationError::Invalid(format!(
                "volume {}: no replica answers: {}",
                replicator.volume(),
                reasons.join("; ")
            )));
        }
        let unreachable: Vec<String> = unreachable.into_iter().map(|(a, _)| a).collect();
        replicator
            .salvage(candidates, &unreachable)
            .await
            .map_err(|e| OperationError::Invalid(e.to_string()))?;
        let in_sync: Vec<String> = replicator
            .status()
            .into_iter()
            .filter(|s| s.mode == ReplicaMode::RW)
            .map(|s| s.address)
            .collect();
        tracing::warn!(volume = %replicator.volume(), replicas = ?in_sync, "volume salvaged");
        Ok(in_sync)
    }

    /// Starts a purge in the background unless one runs; returns whether it started.
    pub fn start_purge(self: &Arc<Self>) -> bool {
        if let Some(rebuilding) = self.replicator.rebuilding.lock().clone() {
            *self.purge.lock() = PurgeState::Failed(format!(
                "replica {rebuilding} is being rebuilt; purge after the rebuild"
            ));
            return true;
        }
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
        match shorthorn_block::BlockDevice::flush(self.replicator.as_ref()).await {
            Ok(()) => self.replicator.close().await,
            Err(e) => {
                tracing::warn!(volume = %self.replicator.volume(), error = %e, "final flush failed");
            }
        }
    }
}

/// `snap-` and the UTC time to the millisecond, e.g. `snap-2026-11-22T17.07.00.123Z`
/// (colons are not allowed in names).
fn generated_name() -> String {
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    format!("snap-{}", time.replace(':', "."))
}
