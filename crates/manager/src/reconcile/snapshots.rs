//! Snapshots of a managed volume: attached, through its engine (which pauses I/O so
//! every replica takes the snapshot at the same write); detached, through each replica's
//! control API, which is as consistent since nothing writes. Revert needs the frontend
//! stopped, so it is done only on a detached volume.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use shorthorn_proto::v1 as pb;
use shorthorn_proto::v1::replica_control_client::ReplicaControlClient;
use shorthorn_wire::ReplicaAddr;
use tonic::transport::Channel;

use super::{ENGINE_TIMEOUT, Manager};
use crate::engine_client::connect_engine;
use crate::model::{Engine, Replica, ReplicaState, Volume};
use crate::state::{Kind, StateStoreExt};

/// A change to a volume's snapshots.
#[derive(Debug, Clone)]
pub enum SnapshotChange {
    /// Take a user snapshot (named by the engine's rule when `name` is `None`).
    Create {
        /// Its name.
        name: Option<String>,
        /// Labels kept with it.
        labels: BTreeMap<String, String>,
        /// A system snapshot (taken for the cluster's own use, as a clone's source;
        /// `snapshot-cleanup` purges those) rather than a user's.
        system: bool,
    },
    /// Remove one (its data merges into its child).
    Remove(String),
    /// Bring the volume back to one.
    Revert(String),
    /// Merge away system snapshots and removed ones.
    Purge,
}

/// Why a snapshot operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The request makes no sense (a bad name, a label the store refuses).
    #[error("{0}")]
    Invalid(String),
    /// No such volume or snapshot.
    #[error("{0}")]
    NotFound(String),
    /// Not now, or not over what is there: attached (revert), attaching, detaching, a
    /// replica down, a name taken.
    #[error("{0}")]
    Busy(String),
    /// The engine, a replica or the state store failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Who carries out the operation.
enum Route {
    /// The engine of the attached volume.
    Engine(pb::engine_control_client::EngineControlClient<Channel>),
    /// Every replica of the detached volume, by name.
    Replicas(Vec<(String, ReplicaControlClient<Channel>)>),
}

impl Manager {
    /// The layers of `volume` (its snapshots and its head), as its engine or its first
    /// replica lists them.
    pub async fn list_snapshots(&self, volume: &str) -> Result<Vec<pb::Layer>, SnapshotError> {
        let volume = self.snapshot_volume(volume)?;
        let layers = match self.route(&volume).await? {
            Route::Engine(mut engine) => engine
                .list_snapshots(pb::ListSnapshotsRequest {})
                .await
                .map_err(|e| snapshot_error("engine", &e))?,
            Route::Replicas(mut replicas) => {
                let (name, client) = replicas.first_mut().ok_or_else(|| {
                    SnapshotError::Busy(format!("volume {:?} has no replicas", volume.name))
                })?;
                client
                    .list_snapshots(pb::ListSnapshotsRequest {})
                    .await
                    .map_err(|e| snapshot_error(&format!("replica {name}"), &e))?
            }
        };
        Ok(layers.into_inner().layers)
    }

    /// Carries out `change` on `volume`; a create returns the snapshot's name.
    pub async fn change_snapshots(
        &self,
        volume: &str,
        change: SnapshotChange,
    ) -> Result<Option<String>, SnapshotError> {
        // Detached work goes replica by replica: no attach may start meanwhile.
        let _busy = self.busy.lock().await;
        let volume = self.snapshot_volume(volume)?;
        volume
            .not_standby("snapshotted, reverted or purged")
            .map_err(SnapshotError::Busy)?;
        if let (SnapshotChange::Revert(_), Some(node)) = (&change, &volume.spec.attached_node) {
            return Err(SnapshotError::Busy(format!(
                "volume {:?} is attached to {node}: a revert needs its frontend stopped, so that no client sees the data change under it; detach it first",
                volume.name
            )));
        }
        let name = match self.route(&volume).await? {
            Route::Engine(engine) => engine_change(engine, &change).await?,
            Route::Replicas(replicas) => replicas_change(replicas, &change).await?,
        };
        let vol = volume.name.as_str();
        let (kind, object, reason, message) = match &change {
            SnapshotChange::Create { .. } => {
                let taken = name.as_deref().unwrap_or_default();
                let message = format!("snapshot {taken} of volume {vol} taken");
                (
                    "snapshot",
                    format!("{vol}/{taken}"),
                    "SnapshotCreated",
                    message,
                )
            }
            SnapshotChange::Remove(s) => {
                let message = format!("snapshot {s} of volume {vol} removed");
                ("snapshot", format!("{vol}/{s}"), "SnapshotRemoved", message)
            }
            SnapshotChange::Revert(s) => {
                let message = format!("volume {vol} reverted to snapshot {s}");
                (
                    "snapshot",
                    format!("{vol}/{s}"),
                    "SnapshotReverted",
                    message,
                )
            }
            SnapshotChange::Purge => {
                let message = format!("removed snapshots of volume {vol} purged");
                ("volume", vol.to_owned(), "SnapshotsPurged", message)
            }
        };
        self.report(kind, &object, vol, reason, message);
        Ok(name)
    }

    fn snapshot_volume(&self, name: &str) -> Result<Volume, SnapshotError> {
        self.state
            .get(Kind::Volume, name)?
            .ok_or_else(|| SnapshotError::NotFound(format!("no volume {name:?}")))
    }

    /// The engine of an attached volume; every replica of a detached one (all must run,
    /// or their snapshot chains would part).
    async fn route(&self, volume: &Volume) -> Result<Route, SnapshotError> {
        let engine = self
            .state
            .get::<Engine>(Kind::Engine, &Engine::name_for(&volume.name))?;
        let engine_node = engine.as_ref().and_then(|e| e.status.node.clone());
        let engine_address = engine.and_then(|e| e.status.address);
        match (&volume.spec.attached_node, engine_address) {
            (Some(_), Some(address)) => return Ok(Route::Engine(connect_engine(&address).await?)),
            (Some(node), None) => {
                return Err(SnapshotError::Busy(format!(
                    "volume {:?} is being attached to {node}; try again once it is attached",
                    volume.name
                )));
            }
            (None, _) => {}
        }
        if let Some(node) = engine_node {
            return Err(SnapshotError::Busy(format!(
                "volume {:?} is detaching or moving evicted replicas (its engine still runs on {node}); try again once it stops",
                volume.name
            )));
        }
        let replicas: Vec<Replica> = self
            .state
            .list::<Replica>(Kind::Replica)?
            .into_iter()
            .filter(|r| r.spec.volume == volume.name && r.spec.desire_running)
            .collect();
        if let Some(down) = replicas
            .iter()
            .find(|r| r.status.state != ReplicaState::Running)
        {
            return Err(SnapshotError::Busy(format!(
                "replica {} of detached volume {:?} does not run ({}): its snapshots can change only when every replica runs",
                down.name, volume.name, down.status.message
            )));
        }
        let mut clients = Vec::with_capacity(replicas.len());
        for replica in replicas {
            let address = self.node_address(&replica.spec.node)?;
            let control = ReplicaAddr::from(SocketAddr::new(address, replica.spec.port))
                .control_url()
                .with_context(|| format!("replica {}", replica.name))?;
            let channel = tonic::transport::Endpoint::from_shared(control.clone())
                .with_context(|| format!("replica {}: control address {control}", replica.name))?
                .connect_timeout(ENGINE_TIMEOUT)
                .connect()
                .await
                .with_context(|| format!("connecting to replica {} at {control}", replica.name))?;
            clients.push((replica.name, ReplicaControlClient::new(channel)));
        }
        Ok(Route::Replicas(clients))
    }
}

async fn engine_change(
    mut engine: pb::engine_control_client::EngineControlClient<Channel>,
    change: &SnapshotChange,
) -> Result<Option<String>, SnapshotError> {
    let who = "engine";
    match change {
        SnapshotChange::Create {
            name,
            labels,
            system,
        } => {
            let created = engine
                .create_snapshot(pb::EngineCreateSnapshotRequest {
                    name: name.clone().unwrap_or_default(),
                    system: *system,
                    labels: labels.clone().into_iter().collect(),
                })
                .await
                .map_err(|e| snapshot_error(who, &e))?;
            return Ok(Some(created.into_inner().name));
        }
        SnapshotChange::Remove(name) => {
            engine
                .remove_snapshot(pb::RemoveSnapshotRequest { name: name.clone() })
                .await
                .map_err(|e| snapshot_error(who, &e))?;
        }
        SnapshotChange::Revert(name) => {
            engine
                .revert_snapshot(pb::RevertSnapshotRequest { name: name.clone() })
                .await
                .map_err(|e| snapshot_error(who, &e))?;
        }
        SnapshotChange::Purge => {
            engine
                .purge_snapshots(pb::PurgeSnapshotsRequest {})
                .await
                .map_err(|e| snapshot_error(who, &e))?;
        }
    }
    Ok(None)
}

/// Applies `change` to every replica in turn. A create that fails part-way is undone on
/// the replicas that took it, so their chains stay alike.
async fn replicas_change(
    mut replicas: Vec<(String, ReplicaControlClient<Channel>)>,
    change: &SnapshotChange,
) -> Result<Option<String>, SnapshotError> {
    let created = match change {
        SnapshotChange::Create { name, .. } => Some(name.clone().unwrap_or_else(generated_name)),
        _ => None,
    };
    for index in 0..replicas.len() {
        let (replica, client) = &mut replicas[index];
        let who = format!("replica {replica}");
        let result = match change {
            SnapshotChange::Create { labels, system, .. } => client
                .create_snapshot(pb::CreateSnapshotRequest {
                    name: created.clone().unwrap_or_default(),
                    system: *system,
                    labels: labels.clone().into_iter().collect(),
                })
                .await
                .map(drop),
            SnapshotChange::Remove(name) => client
                .remove_snapshot(pb::RemoveSnapshotRequest { name: name.clone() })
                .await
                .map(drop),
            SnapshotChange::Revert(name) => client
                .revert_snapshot(pb::RevertSnapshotRequest { name: name.clone() })
                .await
                .map(drop),
            SnapshotChange::Purge => client
                .purge_snapshots(pb::PurgeSnapshotsRequest {})
                .await
                .map(drop),
        };
        if let Err(status) = result {
            if let Some(name) = &created {
                for (undone, client) in &mut replicas[..index] {
                    if let Err(e) = client
                        .remove_snapshot(pb::RemoveSnapshotRequest { name: name.clone() })
                        .await
                    {
                        tracing::warn!(replica = %undone, snapshot = %name, error = %e.message(), "could not undo a partial snapshot");
                    }
                }
            } else if index > 0 {
                let done: Vec<&str> = replicas[..index].iter().map(|(n, _)| n.as_str()).collect();
                tracing::warn!(?done, failed = %who, "snapshot change applied to some replicas only");
            }
            return Err(snapshot_error(&who, &status));
        }
    }
    Ok(created)
}

/// The engine's rule for a snapshot without a name: `snap-` and the UTC time to the
/// millisecond, colons as dots (`snap-2026-11-22T17.07.00.123Z`).
fn generated_name() -> String {
    chrono::Utc::now()
        .format("snap-%Y-%m-%dT%H.%M.%S%.3fZ")
        .to_string()
}

/// A refusal by the engine or a replica, by its gRPC code.
fn snapshot_error(who: &str, status: &tonic::Status) -> SnapshotError {
    let message = format!("{who}: {}", status.message());
    match status.code() {
        tonic::Code::InvalidArgument => SnapshotError::Invalid(message),
        tonic::Code::NotFound => SnapshotError::NotFound(message),
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
            SnapshotError::Busy(message)
        }
        _ => SnapshotError::Failed(anyhow::anyhow!(message)),
    }
}
