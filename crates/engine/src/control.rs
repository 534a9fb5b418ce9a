//! The engine's gRPC control API (`shorthorn.v1.EngineControl`): what `shorthorn
//! --engine ADDR ls` and `info` show.

use std::sync::Arc;
use std::time::Duration;

use shorthorn_block::BlockDevice;
use shorthorn_proto::v1 as pb;
use shorthorn_proto::v1::engine_control_server::EngineControl;
use shorthorn_proto::v1::replica_control_client::ReplicaControlClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::replicator::{Replica, Replicator};
use crate::status::{ReplicaMode, ReplicaStatus};

/// How long `ls` waits for a replica's chain before showing it as unknown.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the control API of one engine.
pub struct EngineControlService<R: Replica> {
    replicator: Arc<Replicator<R>>,
    frontend: String,
    /// Control clients of the replicas, by the address the replicator knows them by.
    replica_controls: Vec<(String, ReplicaControlClient<Channel>)>,
}

impl<R: Replica> EngineControlService<R> {
    /// Controls `replicator`; `frontend` is the URI clients connect to (empty: none).
    pub fn new(
        replicator: Arc<Replicator<R>>,
        frontend: String,
        replica_controls: Vec<(String, ReplicaControlClient<Channel>)>,
    ) -> Self {
        EngineControlService {
            replicator,
            frontend,
            replica_controls,
        }
    }

    async fn replicas(&self) -> Vec<pb::ReplicaStatus> {
        let mut out = Vec::new();
        for status in self.replicator.status() {
            let chain = match self
                .replica_controls
                .iter()
                .find(|(a, _)| *a == status.address)
            {
                Some((_, client)) if status.mode != ReplicaMode::ERR => {
                    chain_of(client.clone()).await
                }
                _ => Vec::new(),
            };
            out.push(status_of(status, chain));
        }
        out
    }
}

async fn chain_of(mut client: ReplicaControlClient<Channel>) -> Vec<String> {
    match tokio::time::timeout(CHAIN_TIMEOUT, client.info(pb::ReplicaInfoRequest {})).await {
        Ok(Ok(info)) => info.into_inner().chain,
        _ => Vec::new(),
    }
}

fn status_of(status: ReplicaStatus, chain: Vec<String>) -> pb::ReplicaStatus {
    let mode = match status.mode {
        ReplicaMode::RW => pb::ReplicaMode::Rw,
        ReplicaMode::WO => pb::ReplicaMode::Wo,
        ReplicaMode::ERR => pb::ReplicaMode::Err,
    };
    pb::ReplicaStatus {
        address: status.address,
        mode: mode.into(),
        error: status.error.unwrap_or_default(),
        chain,
    }
}

#[tonic::async_trait]
impl<R: Replica> EngineControl for EngineControlService<R> {
    async fn info(
        &self,
        _: Request<pb::EngineInfoRequest>,
    ) -> Result<Response<pb::EngineInfo>, Status> {
        Ok(Response::new(pb::EngineInfo {
            volume: self.replicator.volume().to_owned(),
            size: self.replicator.size(),
            state: self.replicator.state().to_string(),
            frontend: self.frontend.clone(),
            replicas: self.replicas().await,
        }))
    }

    async fn list_replicas(
        &self,
        _: Request<pb::ListReplicasRequest>,
    ) -> Result<Response<pb::ListReplicasResponse>, Status> {
        Ok(Response::new(pb::ListReplicasResponse {
            replicas: self.replicas().await,
        }))
    }
}
