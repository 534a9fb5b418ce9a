//! Growing a volume: online through its engine, or detached through each replica.

use std::net::SocketAddr;

use anyhow::Context;
use shorthorn_proto::v1 as pb;
use shorthorn_proto::v1::replica_control_client::ReplicaControlClient;
use shorthorn_wire::ReplicaAddr;

use super::{ENGINE_TIMEOUT, Manager};
use crate::engine_client::connect_engine;
use crate::model::{Engine, Replica, ReplicaState, Volume};
use crate::state::{Kind, StateStoreExt};

impl Manager {
    /// Grows a volume: attached, every replica through its engine; detached, every
    /// replica directly. Then the spec.
    pub async fn expand_volume(&self, name: &str, size: u64) -> Result<Volume, ExpandError> {
        let _busy = self.busy.lock().await;
        let volume: Volume = self
            .state
            .get(Kind::Volume, name)?
            .ok_or_else(|| ExpandError::Invalid(format!("no volume {name:?}")))?;
        volume.not_standby("expanded").map_err(ExpandError::Busy)?;
        if size <= volume.spec.size || size % 4096 != 0 {
            return Err(ExpandError::Invalid(format!(
                "size {size} must be a multiple of 4096 larger than {}",
                volume.spec.size
            )));
        }
        let engine = self
            .state
            .get::<Engine>(Kind::Engine, &Engine::name_for(name))?;
        if volume.spec.attached_node.is_none()
            && let Some(node) = engine.as_ref().and_then(|e| e.status.node.as_ref())
        {
            return Err(ExpandError::Busy(format!(
                "volume {name:?} is detaching or moving evicted replicas (its engine still runs on {node}); expand it once it stops"
            )));
        }
        match (
            &volume.spec.attached_node,
            engine.and_then(|engine| engine.status.address),
        ) {
            (Some(_), Some(engine)) => {
                let mut client = connect_engine(&engine).await?;
                client
                    .expand(pb::ExpandRequest { size })
                    .await
                    .map_err(|e| expand_error("engine", &e))?;
            }
            (Some(node), None) => {
                return Err(ExpandError::Busy(format!(
                    "volume {name:?} is being attached to {node}; expand it once it is attached"
                )));
            }
            (None, _) => self.expand_detached(&volume, size).await?,
        }
        let volume = self
            .state
            .update::<Volume>(Kind::Volume, name, |stored| {
                stored.spec.size = size;
                Ok(())
            })?
            .ok_or_else(|| ExpandError::Invalid(format!("no volume {name:?}")))?;
        tracing::info!(volume = name, size, "expanded");
        Ok(volume)
    }

    /// Grows every replica of a detached volume through its control API. All of them
    /// must run: a replica left at the old size could not be opened at the new one.
    pub(super) async fn expand_detached(
        &self,
        volume: &Volume,
        size: u64,
    ) -> Result<(), ExpandError> {
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
            return Err(ExpandError::Busy(format!(
                "replica {} of volume {:?} is {}: expand when every replica runs",
                down.name,
                volume.name,
                crate::model::json_name(&down.status.state)
            )));
        }
        for replica in &replicas {
            let address = self.node_address(&replica.spec.node)?;
            let control = ReplicaAddr::from(SocketAddr::new(address, replica.spec.port))
                .control_url()
                .with_context(|| format!("replica {}", replica.name))?;
            let endpoint = tonic::transport::Endpoint::from_shared(control.clone())
                .with_context(|| format!("replica {}: control address {control}", replica.name))?
                .connect_timeout(ENGINE_TIMEOUT);
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to replica {} at {control}", replica.name))?;
            ReplicaControlClient::new(channel)
                .expand(pb::ExpandRequest { size })
                .await
                .map_err(|e| expand_error(&format!("replica {}", replica.name), &e))?;
        }
        Ok(())
    }
}

/// Why a volume could not be expanded.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// The request makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// Not now: the volume is attaching, or a replica is down.
    #[error("{0}")]
    Busy(String),
    /// The engine or the state store failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// An expansion a replica or engine refused as invalid (a size its filesystem cannot
/// hold) is the request's fault; anything else is a failure.
pub(super) fn expand_error(who: &str, status: &tonic::Status) -> ExpandError {
    let message = format!("{who} expand: {}", status.message());
    if status.code() == tonic::Code::InvalidArgument {
        ExpandError::Invalid(message)
    } else {
        ExpandError::Failed(anyhow::anyhow!(message))
    }
}
