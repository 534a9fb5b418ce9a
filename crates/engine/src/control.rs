//! The engine's gRPC control API (`shorthorn.v1.EngineControl`): what `shorthorn
//! --engine ADDR ls`, `info`, `snapshot …`, `expand` and `frontend …` talk to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shorthorn_block::BlockDevice;
use shorthorn_proto::v1 as pb;
use shorthorn_proto::v1::engine_control_server::EngineControl;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, PurgeState};
use crate::replica::Replica;
use crate::replicator::operations::OperationError;
use crate::status::ReplicaMode;
use shorthorn_block::{LayerInfo, snapshot_chain};

/// How long `ls` waits for a replica's chain before showing it as unknown.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the control API of one engine.
pub struct EngineControlService {
    engine: Arc<Engine>,
    metrics_endpoint: String,
}

impl EngineControlService {
    /// Controls `engine`, whose metrics are served at `metrics_endpoint` (empty: not).
    pub fn new(engine: Arc<Engine>, metrics_endpoint: String) -> Self {
        EngineControlService {
            engine,
            metrics_endpoint,
        }
    }

    async fn replicas(&self) -> Vec<pb::ReplicaStatus> {
        let replicator = self.engine.replicator();
        let mut out = Vec::new();
        for (status, device) in replicator.status().into_iter().zip(replicator.devices()) {
            let chain = if status.mode == ReplicaMode::ERR {
                Vec::new()
            } else {
                match tokio::time::timeout(CHAIN_TIMEOUT, device.list_snapshots()).await {
                    Ok(Ok(layers)) => chain_of(&layers),
                    _ => Vec::new(),
                }
            };
            let mode = match status.mode {
                ReplicaMode::RW => pb::ReplicaMode::Rw,
                ReplicaMode::WO => pb::ReplicaMode::Wo,
                ReplicaMode::ERR => pb::ReplicaMode::Err,
            };
            out.push(pb::ReplicaStatus {
                address: status.address,
                mode: mode.into(),
                error: status.error.unwrap_or_default(),
                chain,
                rebuild: status.rebuild.map(|r| pb::RebuildProgress {
                    phase: r.phase,
                    total_bytes: r.total_bytes,
                    done_bytes: r.done_bytes,
                    copied_bytes: r.copied_bytes,
                }),
                write_latency_us: status.write_latency_us,
                data_path: device.data_address().to_string(),
            });
        }
        out
    }
}

/// Snapshot names of the active chain, oldest first.
fn chain_of(layers: &[LayerInfo]) -> Vec<String> {
    snapshot_chain(layers)
        .into_iter()
        .map(|l| l.snapshot_name().to_owned())
        .collect()
}

fn status_of(error: OperationError) -> Status {
    match error {
        OperationError::Invalid(message) => Status::invalid_argument(message),
        OperationError::Exists(message) => Status::already_exists(message),
        e @ OperationError::Failed { .. } => Status::unavailable(e.to_string()),
    }
}

fn purge_of(state: PurgeState, total: usize) -> pb::PurgeStatus {
    let total = u32::try_from(total).unwrap_or(u32::MAX);
    match state {
        PurgeState::Idle => pb::PurgeStatus {
            state: "idle".into(),
            replicas_total: total,
            ..Default::default()
        },
        PurgeState::Running => pb::PurgeStatus {
            state: "running".into(),
            replicas_total: total,
            ..Default::default()
        },
        PurgeState::Done(outcome) => pb::PurgeStatus {
            state: "done".into(),
            replicas_done: total,
            replicas_total: total,
            purged: outcome.purged,
            error: String::new(),
        },
        PurgeState::Failed(error) => pb::PurgeStatus {
            state: "failed".into(),
            replicas_total: total,
            error,
            ..Default::default()
        },
    }
}

#[tonic::async_trait]
impl EngineControl for EngineControlService {
    async fn info(
        &self,
        _: Request<pb::EngineInfoRequest>,
    ) -> Result<Response<pb::EngineInfo>, Status> {
        let replicator = self.engine.replicator();
        let replicas = self.replicas().await;
        let active = replicas
            .iter()
            .filter(|r| r.mode() != pb::ReplicaMode::Err)
            .count();
        let io = self.engine.metrics().snapshot();
        Ok(Response::new(pb::EngineInfo {
            volume: replicator.volume().to_owned(),
            size: replicator.size(),
            state: replicator.state().to_string(),
            frontend: self.engine.frontend_uri().unwrap_or_default(),
            replicas,
            purge: Some(purge_of(self.engine.purge_state(), active)),
            read: Some(pb::IoFigures::from(&io.read)),
            write: Some(pb::IoFigures::from(&io.write)),
            metrics_endpoint: self.metrics_endpoint.clone(),
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

    async fn create_snapshot(
        &self,
        request: Request<pb::EngineCreateSnapshotRequest>,
    ) -> Result<Response<pb::EngineCreateSnapshotResponse>, Status> {
        let request = request.into_inner();
        let labels: BTreeMap<String, String> = request.labels.into_iter().collect();
        let name = self
            .engine
            .snapshot(&request.name, request.system, &labels)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::EngineCreateSnapshotResponse { name }))
    }

    async fn list_snapshots(
        &self,
        _: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let layers = self
            .engine
            .replicator()
            .list_snapshots()
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            layers: layers.into_iter().map(pb::Layer::from).collect(),
        }))
    }

    async fn remove_snapshot(
        &self,
        request: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<pb::RemoveSnapshotResponse>, Status> {
        let name = request.into_inner().name;
        self.engine
            .replicator()
            .remove_snapshot(&name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RemoveSnapshotResponse {}))
    }

    async fn purge_snapshots(
        &self,
        _: Request<pb::PurgeSnapshotsRequest>,
    ) -> Result<Response<pb::EnginePurgeResponse>, Status> {
        let started = self.engine.start_purge();
        Ok(Response::new(pb::EnginePurgeResponse { started }))
    }

    async fn revert_snapshot(
        &self,
        request: Request<pb::RevertSnapshotRequest>,
    ) -> Result<Response<pb::RevertSnapshotResponse>, Status> {
        let name = request.into_inner().name;
        self.engine.revert(&name).await.map_err(status_of)?;
        Ok(Response::new(pb::RevertSnapshotResponse {}))
    }

    async fn expand(
        &self,
        request: Request<pb::ExpandRequest>,
    ) -> Result<Response<pb::ExpandResponse>, Status> {
        let size = request.into_inner().size;
        self.engine
            .replicator()
            .expand(size)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ExpandResponse {}))
    }

    async fn start_frontend(
        &self,
        _: Request<pb::StartFrontendRequest>,
    ) -> Result<Response<pb::StartFrontendResponse>, Status> {
        let frontend = self
            .engine
            .start_frontend()
            .await
            .map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(pb::StartFrontendResponse { frontend }))
    }

    async fn stop_frontend(
        &self,
        _: Request<pb::StopFrontendRequest>,
    ) -> Result<Response<pb::StopFrontendResponse>, Status> {
        self.engine.stop_frontend().await;
        Ok(Response::new(pb::StopFrontendResponse {}))
    }

    async fn add_replica(
        &self,
        request: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::AddReplicaResponse>, Status> {
        let request = request.into_inner();
        let started = std::time::Instant::now();
        let figures = self
            .engine
            .add_replica(&request.address, request.bandwidth)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::AddReplicaResponse {
            checked_bytes: figures.done_bytes,
            copied_bytes: figures.copied_bytes,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }

    async fn remove_replica(
        &self,
        request: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::RemoveReplicaResponse>, Status> {
        self.engine
            .remove_replica(&request.into_inner().address)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RemoveReplicaResponse {}))
    }

    async fn salvage(
        &self,
        _: Request<pb::SalvageRequest>,
    ) -> Result<Response<pb::SalvageResponse>, Status> {
        let in_sync = self.engine.salvage().await.map_err(status_of)?;
        Ok(Response::new(pb::SalvageResponse { in_sync }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, parent: &str, is_head: bool) -> LayerInfo {
        LayerInfo {
            name: Some(name.to_owned()).filter(|n| !n.is_empty()),
            parent: Some(parent.to_owned()).filter(|p| !p.is_empty()),
            is_head,
            ..Default::default()
        }
    }

    #[test]
    fn chain_follows_parents_from_the_head() {
        let layers = vec![
            layer("a", "", false),
            layer("b", "a", false),
            layer("x", "a", false),
            layer("", "b", true),
        ];
        assert_eq!(chain_of(&layers), vec!["a".to_owned(), "b".to_owned()]);
        assert!(chain_of(&[layer("", "", true)]).is_empty());
    }
}
