//! The replica's gRPC control API (`shorthorn.v1.ReplicaControl`): info and snapshot
//! operations on the store. Store calls block on disk I/O, so each runs on tokio's
//! blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use shorthorn_proto::v1::replica_control_server::ReplicaControl;
use shorthorn_proto::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, ExpandRequest, ExpandResponse, Layer,
    ListSnapshotsRequest, ListSnapshotsResponse, PurgeSnapshotsRequest, PurgeSnapshotsResponse,
    RemoveSnapshotRequest, RemoveSnapshotResponse, ReplicaInfo, ReplicaInfoRequest,
    RevertSnapshotRequest, RevertSnapshotResponse,
};
use shorthorn_store::{LayerInfo, SnapshotKind, Store, StoreError};
use tonic::{Request, Response, Status};

/// Serves the control API of one replica.
pub struct ReplicaControlService {
    store: Arc<Store>,
    data_addresses: Vec<String>,
}

impl ReplicaControlService {
    /// Controls `store`, reporting `data_addresses` as where its data path listens.
    pub fn new(store: Arc<Store>, data_addresses: Vec<String>) -> Self {
        ReplicaControlService {
            store,
            data_addresses,
        }
    }

    async fn run<T, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| Status::internal(format!("store task failed: {e}")))?
            .map_err(status_of)
    }
}

/// Maps store errors to gRPC codes a client can act on; the message keeps the context.
fn status_of(error: StoreError) -> Status {
    let message = error.to_string();
    match error {
        StoreError::InvalidName { .. }
        | StoreError::InvalidLabel { .. }
        | StoreError::InvalidSize { .. }
        | StoreError::OutOfRange { .. } => Status::invalid_argument(message),
        StoreError::SnapshotNotFound(_) => Status::not_found(message),
        StoreError::SnapshotExists(_) => Status::already_exists(message),
        StoreError::SnapshotRemoved(_) | StoreError::TooManyLayers(_) => {
            Status::failed_precondition(message)
        }
        e if e.is_no_space() => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

fn layer_of(info: LayerInfo) -> Layer {
    Layer {
        name: info.name.unwrap_or_default(),
        parent: info.parent.unwrap_or_default(),
        children: info.children,
        created: info.created,
        user_created: info.user_created,
        removed: info.removed,
        labels: info.labels.into_iter().collect(),
        size: info.size,
        allocated_bytes: info.allocated_bytes,
        is_head: info.is_head,
        in_chain: info.in_chain,
    }
}

#[tonic::async_trait]
impl ReplicaControl for ReplicaControlService {
    async fn info(&self, _: Request<ReplicaInfoRequest>) -> Result<Response<ReplicaInfo>, Status> {
        let data_addresses = self.data_addresses.clone();
        let info = self
            .run(move |store| {
                let chain = store
                    .layers()?
                    .into_iter()
                    .filter(|l| l.in_chain)
                    .filter_map(|l| l.name)
                    .collect();
                Ok(ReplicaInfo {
                    volume: store.name(),
                    size: store.size(),
                    directory: store.dir().display().to_string(),
                    chain,
                    data_addresses,
                    map_extents: store.map_extents() as u64,
                })
            })
            .await?;
        Ok(Response::new(info))
    }

    async fn list_snapshots(
        &self,
        _: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let layers = self.run(Store::layers).await?;
        Ok(Response::new(ListSnapshotsResponse {
            layers: layers.into_iter().map(layer_of).collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let request = request.into_inner();
        let kind = if request.system {
            SnapshotKind::System
        } else {
            SnapshotKind::User
        };
        let labels: BTreeMap<String, String> = request.labels.into_iter().collect();
        self.run(move |store| store.snapshot(&request.name, kind, labels))
            .await?;
        Ok(Response::new(CreateSnapshotResponse {}))
    }

    async fn remove_snapshot(
        &self,
        request: Request<RemoveSnapshotRequest>,
    ) -> Result<Response<RemoveSnapshotResponse>, Status> {
        let name = request.into_inner().name;
        self.run(move |store| store.remove_snapshot(&name)).await?;
        Ok(Response::new(RemoveSnapshotResponse {}))
    }

    async fn revert_snapshot(
        &self,
        request: Request<RevertSnapshotRequest>,
    ) -> Result<Response<RevertSnapshotResponse>, Status> {
        let name = request.into_inner().name;
        self.run(move |store| store.revert(&name)).await?;
        Ok(Response::new(RevertSnapshotResponse {}))
    }

    async fn purge_snapshots(
        &self,
        _: Request<PurgeSnapshotsRequest>,
    ) -> Result<Response<PurgeSnapshotsResponse>, Status> {
        let report = self.run(Store::purge).await?;
        Ok(Response::new(PurgeSnapshotsResponse {
            purged: report.purged,
            kept: report.kept,
            bytes_copied: report.bytes_copied,
        }))
    }

    async fn expand(
        &self,
        request: Request<ExpandRequest>,
    ) -> Result<Response<ExpandResponse>, Status> {
        let size = request.into_inner().size;
        self.run(move |store| store.expand(size)).await?;
        Ok(Response::new(ExpandResponse {}))
    }
}
