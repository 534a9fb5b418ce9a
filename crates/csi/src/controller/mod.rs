//! The CSI Controller service: volumes, attachments, snapshots and expansion, each a
//! call (or a few) to the manager's API. What the external-provisioner, -attacher,
//! -resizer and -snapshotter sidecars call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use shorthorn_manager::api::VolumeDetail;
use shorthorn_manager::model::{Node, Volume, VolumeState};
use tonic::{Request, Response, Status};

use crate::TOPOLOGY_KEY;
use crate::capability::{self, is_mount};
use crate::client::{CallError, ManagerClient};
use crate::condition;
use crate::ids::{self, SnapshotId, shorthorn_name, volume_id};
use crate::in_flight::InFlight;
use crate::params::VolumeParameters;
use crate::pb;
use crate::pb::controller_server::Controller;
use crate::pb::controller_service_capability::rpc::Type as Rpc;

mod capacity;
mod snapshots;

use capacity::capacity_for;

/// Volume size when a request gives none.
const DEFAULT_SIZE: u64 = 1 << 30;
/// Sizes are rounded up to this (the store's block).
const GRANULARITY: u64 = 4096;
/// Largest volume (the manager's limit).
const MAX_SIZE: u64 = 1 << 50;
/// How long CreateVolume waits for a clone or restore before saying "still creating".
const CREATE_WAIT: Duration = Duration::from_secs(30);
/// How long ControllerPublish waits for the engine to serve, and Unpublish for it to stop.
const ATTACH_WAIT: Duration = Duration::from_secs(110);
/// How long DeleteVolume tries to list a volume's snapshots before giving up.
const SNAPSHOT_LIST_PATIENCE: Duration = Duration::from_secs(15);
/// How long a `bak` CreateSnapshot waits for the backup before answering not ready.
const BACKUP_WAIT: Duration = Duration::from_secs(20);
/// The label a snapshot or backup keeps its CSI name in.
const CSI_NAME_LABEL: &str = "csi-name";
/// What publish_context carries the engine's NBD URI as.
pub const PUBLISH_URI: &str = "nbd_uri";
/// Pagination tokens start with this (anything else is refused with ABORTED).
const TOKEN_PREFIX: &str = "after:";

/// Serves the Controller service over the manager's API.
#[derive(Debug, Clone)]
pub struct ControllerService {
    manager: ManagerClient,
    /// Volumes and snapshots with a call under way (a retry meanwhile is ABORTED).
    in_flight: InFlight,
}

impl ControllerService {
    /// A controller calling `manager`.
    pub fn new(manager: ManagerClient) -> Self {
        ControllerService {
            manager,
            in_flight: InFlight::default(),
        }
    }

    async fn volume(&self, name: &str) -> Result<Option<VolumeDetail>, Status> {
        match self.manager.get(&format!("/v1/volumes/{name}")).await {
            Ok(detail) => Ok(Some(detail)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn existing_volume(&self, id: &str) -> Result<VolumeDetail, Status> {
        self.volume(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no volume {id:?}")))
    }

    /// Polls `name` until `done` says so or `limit` passes; the last detail either way.
    async fn wait_for(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(&VolumeDetail) -> bool,
    ) -> Result<(VolumeDetail, bool), Status> {
        let deadline = Instant::now() + limit;
        loop {
            let detail = self.existing_volume(name).await?;
            if done(&detail) {
                return Ok((detail, true));
            }
            if Instant::now() >= deadline {
                return Ok((detail, false));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The CSI volume for `detail`. Its topology is left empty: any node reaches the
    /// volume over the network, and a topology of the replica nodes would pin its pods
    /// to them (a PV's node affinity never changes when replicas move).
    fn csi_volume(
        detail: &VolumeDetail,
        context: HashMap<String, String>,
        source: Option<pb::VolumeContentSource>,
    ) -> pb::Volume {
        pb::Volume {
            capacity_bytes: i64::try_from(detail.volume.spec.size).unwrap_or(i64::MAX),
            volume_id: detail.volume.name.clone(),
            volume_context: context,
            content_source: source,
            accessible_topology: Vec::new(),
        }
    }

    /// What a new volume is made from: `(from_snapshot, from_volume, from_backup)`, and
    /// the size it must have when that is fixed (a backup restores at its own size).
    async fn source(
        &self,
        source: Option<&pb::VolumeContentSource>,
    ) -> Result<(Option<String>, Option<String>, Option<(String, u64)>), Status> {
        use pb::volume_content_source::Type;
        let Some(kind) = source.and_then(|s| s.r#type.as_ref()) else {
            return Ok((None, None, None));
        };
        match kind {
            Type::Snapshot(snapshot) => match SnapshotId::parse(&snapshot.snapshot_id)? {
                SnapshotId::Snap { volume, name } => {
                    if !self
                        .snapshots(&volume)
                        .await?
                        .iter()
                        .any(|s| s.name == name)
                    {
                        return Err(Status::not_found(format!(
                            "no snapshot {}",
                            snapshot.snapshot_id
                        )));
                    }
                    Ok((Some(format!("{volume}/{name}")), None, None))
                }
                SnapshotId::Bak { backup, .. } => {
                    let record = self.backup(&backup).await?.ok_or_else(|| {
                        Status::not_found(format!("no snapshot {}", snapshot.snapshot_id))
                    })?;
                    let url = record.status.url.clone().ok_or_else(|| {
                        Status::unavailable(format!(
                            "backup {backup} is not complete yet ({:?})",
                            record.status.state
                        ))
                    })?;
                    Ok((None, None, Some((url, record.status.volume_size))))
                }
            },
            Type::Volume(volume) => {
                let id = volume_id(&volume.volume_id)?;
                self.existing_volume(id).await?;
                Ok((None, Some(id.to_string()), None))
            }
        }
    }

    async fn volumes(&self) -> Result<Vec<Volume>, Status> {
        let mut volumes: Vec<Volume> = self.manager.get("/v1/volumes").await?;
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }
}

/// A manager refusal while doing `what`: 404 → NOT_FOUND, 409 → FAILED_PRECONDITION
/// (the volume's state), others as [`CallError::to_status`].
fn refusal(error: CallError, what: &str) -> Status {
    let status = error.to_status();
    Status::new(status.code(), format!("{what}: {}", status.message()))
}

/// The size for a capacity range: `required_bytes` rounded up to [`GRANULARITY`] (1 GiB
/// when neither bound is given), within `limit_bytes` (else OUT_OF_RANGE).
fn size_for(range: Option<&pb::CapacityRange>) -> Result<u64, Status> {
    let required = range.map_or(0, |r| r.required_bytes);
    let limit = range.map_or(0, |r| r.limit_bytes);
    if required < 0 || limit < 0 {
        return Err(Status::invalid_argument("capacity_range: negative bytes"));
    }
    let (required, limit) = (required.unsigned_abs(), limit.unsigned_abs());
    let wanted = match (required, limit) {
        (0, 0) => DEFAULT_SIZE,
        (0, limit) => DEFAULT_SIZE.min(limit / GRANULARITY * GRANULARITY),
        (required, _) => required.div_ceil(GRANULARITY) * GRANULARITY,
    };
    if wanted == 0 || (limit != 0 && wanted > limit) || wanted > MAX_SIZE {
        return Err(Status::out_of_range(format!(
            "capacity_range {required}..{limit}: sizes are multiples of {GRANULARITY} bytes up to {MAX_SIZE}"
        )));
    }
    Ok(wanted)
}

/// Whether an existing volume of `size` bytes fits a request's range.
fn fits(size: u64, range: Option<&pb::CapacityRange>) -> bool {
    let required = range.map_or(0, |r| r.required_bytes.max(0).unsigned_abs());
    let limit = range.map_or(0, |r| r.limit_bytes.max(0).unsigned_abs());
    size >= required && (limit == 0 || size <= limit)
}

/// What the node needs to stage a volume, passed through the PV's volume context.
fn volume_context(parameters: &VolumeParameters) -> HashMap<String, String> {
    let mut context = HashMap::new();
    if let Some(fs) = &parameters.fs_type {
        context.insert("fsType".to_string(), fs.clone());
    }
    if let Some(mkfs) = &parameters.mkfs_params {
        context.insert("mkfsParams".to_string(), mkfs.clone());
    }
    if let Some(target) = &parameters.backup_target {
        context.insert("backupTargetName".to_string(), target.clone());
    }
    context
}

fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    max_entries: i32,
    token: &str,
) -> Result<(Vec<T>, String), Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument("max_entries must not be negative"));
    }
    let after = if token.is_empty() {
        None
    } else {
        Some(token.strip_prefix(TOKEN_PREFIX).ok_or_else(|| {
            Status::aborted(format!(
                "starting_token {token:?} is not one this driver gave"
            ))
        })?)
    };
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|item| after.is_none_or(|after| key(item) > after))
        .collect();
    let limit = usize::try_from(max_entries).unwrap_or(usize::MAX);
    let next = if limit > 0 && rest.len() > limit {
        rest.truncate(limit);
        rest.last()
            .map(|item| format!("{TOKEN_PREFIX}{}", key(item)))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((rest, next))
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        let name = shorthorn_name(&request.name)?;
        let _busy = self.in_flight.start(&name)?;
        capability::check_all(&request.volume_capabilities)?;
        let parameters = VolumeParameters::parse(&request.parameters)?;
        let range = request.capacity_range.as_ref();
        let mut size = size_for(range)?;
        let source = request.volume_content_source.clone();
        let (from_snapshot, from_volume, from_backup) = self.source(source.as_ref()).await?;
        let from_backup = match (from_backup, &parameters.from_backup) {
            (Some((url, backup_size)), _) => {
                if !fits(backup_size, range) {
                    return Err(Status::out_of_range(format!(
                        "the backup holds {backup_size} bytes; a volume restored from it has that size (grow it after)"
                    )));
                }
                size = backup_size;
                Some(url)
            }
            (None, Some(url)) => Some(url.clone()),
            (None, None) => None,
        };
        let context = volume_context(&parameters);
        if let Some(existing) = self.volume(&name).await? {
            let spec = &existing.volume.spec;
            // A clone of a volume is stored as a clone of the snapshot taken of it.
            let stored_source = spec.from_snapshot.as_ref();
            let same_source = spec.from_backup == from_backup
                && match &from_volume {
                    Some(volume) => stored_source.is_some_and(|s| s.volume == *volume),
                    None => stored_source.map(ToString::to_string) == from_snapshot,
                };
            if !fits(spec.size, range) || !same_source {
                return Err(Status::already_exists(format!(
                    "volume {name} exists with {} bytes and another source",
                    spec.size
                )));
            }
        } else {
            let mut body = json!({
                "name": name,
                "size": size,
                "node_selector": parameters.node_selector,
                "disk_selector": parameters.disk_selector,
                "recurring_jobs": parameters.recurring_jobs,
                "recurring_job_groups": parameters.recurring_job_groups,
            });
            for (key, value) in [
                ("from_backup", from_backup),
                ("from_snapshot", from_snapshot),
                ("from_volume", from_volume),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            if let Some(replicas) = parameters.replicas {
                body["replicas"] = json!(replicas);
            }
            if let Some(locality) = parameters.data_locality {
                body["data_locality"] = json!(locality);
            }
            match self.manager.post::<Volume>("/v1/volumes", body).await {
                Ok(_) => {}
                // Created meanwhile by a retry of the same request: answered below.
                Err(e) if e.status() == Some(409) && self.volume(&name).await?.is_some() => {}
                Err(e) if e.status() == Some(409) => {
                    return Err(Status::resource_exhausted(e.to_string()));
                }
                Err(e) if e.status() == Some(400) && e.to_string().contains("size") => {
                    return Err(Status::out_of_range(e.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (detail, ready) = self
            .wait_for(&name, CREATE_WAIT, |d| {
                d.volume.status.state != VolumeState::Creating
            })
            .await?;
        if !ready {
            return Err(Status::aborted(format!(
                "volume {name} is still being created ({}); ask again",
                detail.volume.status.message
            )));
        }
        if detail.volume.status.state == VolumeState::Failed {
            return Err(Status::internal(format!(
                "volume {name} failed: {}",
                detail.volume.status.message
            )));
        }
        tracing::info!(volume = %name, csi_name = %request.name, size, "CSI volume created");
        Ok(Response::new(pb::CreateVolumeResponse {
            volume: Some(Self::csi_volume(&detail, context, source)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        let Ok(id) = volume_id(&id) else {
            ids::require("volume_id", &id)?;
            return Ok(Response::new(pb::DeleteVolumeResponse {}));
        };
        let _busy = self.in_flight.start(id)?;
        // `snap` VolumeSnapshots live in the volume's replicas: deleting the volume would
        // delete them under Kubernetes' feet. `bak` ones live in the target and stay.
        match self.snapshots_retrying(id).await {
            Ok(snapshots) => {
                // A `snap` one is named for its CSI name; a backup's snapshot carries
                // the label too, but its VolumeSnapshot is the backup.
                let held: Vec<&str> = snapshots
                    .iter()
                    .filter_map(|s| {
                        let csi_name = s.labels.get(CSI_NAME_LABEL)?;
                        (shorthorn_name(csi_name).ok()? == s.name).then_some(csi_name.as_str())
                    })
                    .collect();
                if !held.is_empty() {
                    return Err(Status::failed_precondition(format!(
                        "volume {id} holds the snapshots {} (type snap, kept in the volume): \
                         delete those VolumeSnapshots first (type bak snapshots outlive their volume)",
                        held.join(", ")
                    )));
                }
            }
            Err(e) if e.code() == tonic::Code::NotFound => {
                return Ok(Response::new(pb::DeleteVolumeResponse {}));
            }
            Err(e) => {
                return Err(Status::new(
                    e.code(),
                    format!(
                        "volume {id}: listing its snapshots before deleting it: {}",
                        e.message()
                    ),
                ));
            }
        }
        match self.manager.delete(&format!("/v1/volumes/{id}")).await {
            Ok(()) => {
                tracing::info!(volume = %id, "CSI volume deleted");
                Ok(Response::new(pb::DeleteVolumeResponse {}))
            }
            Err(e) if e.status() == Some(404) => Ok(Response::new(pb::DeleteVolumeResponse {})),
            Err(e) => Err(refusal(e, "deleting the volume")),
        }
    }

    async fn controller_publish_volume(
        &self,
        request: Request<pb::ControllerPublishVolumeRequest>,
    ) -> Result<Response<pb::ControllerPublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = volume_id(&request.volume_id)?;
        ids::require("node_id", &request.node_id)?;
        let _busy = self.in_flight.start(id)?;
        capability::required(request.volume_capability.as_ref())?;
        let detail = self.existing_volume(id).await?;
        let node = &request.node_id;
        if shorthorn_block::validate_name(node).is_err() {
            return Err(Status::not_found(format!("no node {node:?}")));
        }
        match self.manager.get::<Node>(&format!("/v1/nodes/{node}")).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {
                return Err(Status::not_found(format!("no node {node:?}")));
            }
            Err(e) => return Err(e.into()),
        }
        match &detail.volume.spec.attached_node {
            Some(other) if other != node => {
                return Err(Status::failed_precondition(format!(
                    "volume {id} is published to node {other}; unpublish it there first"
                )));
            }
            Some(_) => {}
            None => {
                self.manager
                    .post::<Volume>(&format!("/v1/volumes/{id}/attach"), json!({"node": node}))
                    .await
                    .map_err(|e| refusal(e, "attaching the volume"))?;
            }
        }
        let (detail, served) = self
            .wait_for(id, ATTACH_WAIT, |d| d.volume.status.endpoint.is_some())
            .await?;
        let Some(endpoint) = detail.volume.status.endpoint.clone().filter(|_| served) else {
            return Err(Status::deadline_exceeded(format!(
                "volume {id} is not served on {node} after {ATTACH_WAIT:?}: {}",
                detail.volume.status.message
            )));
        };
        tracing::info!(volume = %id, %node, %endpoint, "CSI volume published");
        Ok(Response::new(pb::ControllerPublishVolumeResponse {
            publish_context: [(PUBLISH_URI.to_string(), endpoint)].into(),
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<pb::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<pb::ControllerUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = volume_id(&request.volume_id)?;
        let done = Response::new(pb::ControllerUnpublishVolumeResponse {});
        let _busy = self.in_flight.start(id)?;
        let Some(detail) = self.volume(id).await? else {
            return Ok(done);
        };
        let attached = detail.volume.spec.attached_node.as_deref();
        if attached.is_none()
            || (!request.node_id.is_empty() && attached != Some(request.node_id.as_str()))
        {
            return Ok(done);
        }
        self.manager
            .post::<Volume>(&format!("/v1/volumes/{id}/detach"), json!({}))
            .await
            .map_err(|e| refusal(e, "detaching the volume"))?;
        let (detail, stopped) = self
            .wait_for(id, ATTACH_WAIT, |d| {
                d.volume.status.state == VolumeState::Detached
                    || d.engine.as_ref().is_none_or(|e| e.status.node.is_none())
            })
            .await?;
        if !stopped {
            return Err(Status::deadline_exceeded(format!(
                "volume {id} still detaching after {ATTACH_WAIT:?}: {}",
                detail.volume.status.message
            )));
        }
        tracing::info!(volume = %id, node = %request.node_id, "CSI volume unpublished");
        Ok(done)
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<pb::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<pb::ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        let id = volume_id(&request.volume_id)?;
        if request.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities are required"));
        }
        self.existing_volume(id).await?;
        let refused: Vec<String> = request
            .volume_capabilities
            .iter()
            .filter_map(capability::unsupported)
            .collect();
        if !refused.is_empty() {
            return Ok(Response::new(pb::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: refused.join("; "),
            }));
        }
        Ok(Response::new(pb::ValidateVolumeCapabilitiesResponse {
            confirmed: Some(pb::validate_volume_capabilities_response::Confirmed {
                volume_context: request.volume_context,
                volume_capabilities: request.volume_capabilities,
                parameters: request.parameters,
                mutable_parameters: HashMap::new(),
            }),
            message: String::new(),
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let request = request.into_inner();
        let volumes = self.volumes().await?;
        let (volumes, next_token) = page(
            volumes,
            |v| v.name.as_str(),
            request.max_entries,
            &request.starting_token,
        )?;
        let entries = volumes
            .iter()
            .map(|volume| pb::list_volumes_response::Entry {
                volume: Some(pb::Volume {
                    capacity_bytes: i64::try_from(volume.spec.size).unwrap_or(i64::MAX),
                    volume_id: volume.name.clone(),
                    ..pb::Volume::default()
                }),
                status: Some(pb::list_volumes_response::VolumeStatus {
                    published_node_ids: volume.spec.attached_node.iter().cloned().collect(),
                    volume_condition: Some(condition::of(volume)),
                }),
            })
            .collect();
        Ok(Response::new(pb::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::GetCapacityResponse>, Status> {
        let request = request.into_inner();
        for capability in &request.volume_capabilities {
            if capability::unsupported(capability).is_some() {
                return Ok(Response::new(pb::GetCapacityResponse::default()));
            }
        }
        let parameters = VolumeParameters::parse(&request.parameters)?;
        let settings: shorthorn_manager::model::Settings = self.manager.get("/v1/settings").await?;
        let replicas = parameters
            .replicas
            .unwrap_or(settings.default_replica_count)
            .max(1);
        let wanted_node = request
            .accessible_topology
            .as_ref()
            .and_then(|t| t.segments.get(TOPOLOGY_KEY));
        let nodes: Vec<Node> = self.manager.get("/v1/nodes").await?;
        let mut free_by_node = Vec::new();
        for node in nodes
            .iter()
            .filter(|n| n.status.ready && n.spec.allow_scheduling)
        {
            if wanted_node.is_some_and(|w| *w != node.name) {
                continue;
            }
            let free: Vec<u64> = node
                .spec
                .disks
                .iter()
                .filter(|d| d.allow_scheduling && !d.evict)
                .map(|disk| {
                    node.status
                        .disks
                        .iter()
                        .find(|s| s.name == disk.name)
                        .map_or(0, |s| s.available.saturating_sub(disk.reserved))
                })
                .collect();
            free_by_node.push(free);
        }
        let (available, largest) = capacity_for(
            &free_by_node,
            replicas,
            settings.scheduling.replica_soft_anti_affinity,
        );
        Ok(Response::new(pb::GetCapacityResponse {
            available_capacity: i64::try_from(available).unwrap_or(i64::MAX),
            maximum_volume_size: Some(i64::try_from(largest).unwrap_or(i64::MAX)),
            minimum_volume_size: Some(i64::try_from(GRANULARITY).unwrap_or(4096)),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<pb::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<pb::ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = [
            Rpc::CreateDeleteVolume,
            Rpc::PublishUnpublishVolume,
            Rpc::ExpandVolume,
            Rpc::CreateDeleteSnapshot,
            Rpc::ListSnapshots,
            Rpc::CloneVolume,
            Rpc::GetCapacity,
            Rpc::ListVolumes,
            Rpc::ListVolumesPublishedNodes,
            Rpc::GetVolume,
            Rpc::VolumeCondition,
            Rpc::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(|rpc| pb::ControllerServiceCapability {
            r#type: Some(pb::controller_service_capability::Type::Rpc(
                pb::controller_service_capability::Rpc { r#type: rpc.into() },
            )),
        })
        .collect();
        Ok(Response::new(pb::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let request = request.into_inner();
        ids::require("name", &request.name)?;
        ids::require("source_volume_id", &request.source_volume_id)?;
        let _busy = self
            .in_flight
            .start(&format!("snapshot {}", request.name))?;
        let mut kind = "snap";
        let mut target = None;
        for (key, value) in &request.parameters {
            match key.as_str() {
                "type" if value == "snap" || value == "bak" => kind = value.as_str(),
                "type" => {
                    return Err(Status::invalid_argument(format!(
                        "parameter type: {value:?}: snap (in the replicas) or bak (a backup)"
                    )));
                }
                "backupTargetName" => target = Some(value.as_str()),
                other if other.starts_with("csi.storage.k8s.io/") => {}
                other => {
                    return Err(Status::invalid_argument(format!(
                        "unknown parameter {other:?}: a VolumeSnapshotClass takes type and backupTargetName"
                    )));
                }
            }
        }
        let source = volume_id(&request.source_volume_id)?;
        let volume = self.existing_volume(source).await?;
        let snapshot = if kind == "bak" {
            self.create_bak(source, &request.name, target).await?
        } else {
            self.create_snap(source, &request.name, volume.volume.spec.size)
                .await?
        };
        tracing::info!(snapshot = %snapshot.snapshot_id, csi_name = %request.name, ready = snapshot.ready_to_use, "CSI snapshot created");
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot: Some(snapshot),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        let done = Response::new(pb::DeleteSnapshotResponse {});
        let snapshot = match SnapshotId::parse(&id) {
            Ok(snapshot) => snapshot,
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(done),
            Err(e) => return Err(e),
        };
        let deleted = match &snapshot {
            SnapshotId::Snap { volume, name } => {
                self.manager
                    .delete(&format!("/v1/volumes/{volume}/snapshots/{name}"))
                    .await
            }
            SnapshotId::Bak { backup, .. } => {
                self.manager.delete(&format!("/v1/backups/{backup}")).await
            }
        };
        match deleted {
            Ok(()) => Ok(done),
            Err(e) if e.status() == Some(404) => Ok(done),
            Err(e) => Err(refusal(e, "deleting the snapshot")),
        }
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let request = request.into_inner();
        let mut snapshots = self.all_snapshots().await?;
        if !request.snapshot_id.is_empty() {
            snapshots.retain(|s| s.snapshot_id == request.snapshot_id);
        }
        if !request.source_volume_id.is_empty() {
            snapshots.retain(|s| s.source_volume_id == request.source_volume_id);
        }
        let (snapshots, next_token) = page(
            snapshots,
            |s| s.snapshot_id.as_str(),
            request.max_entries,
            &request.starting_token,
        )?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            entries: snapshots
                .into_iter()
                .map(|snapshot| pb::list_snapshots_response::Entry {
                    snapshot: Some(snapshot),
                })
                .collect(),
            next_token,
        }))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<pb::ControllerExpandVolumeRequest>,
    ) -> Result<Response<pb::ControllerExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = volume_id(&request.volume_id)?;
        let _busy = self.in_flight.start(id)?;
        let range = request
            .capacity_range
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
        if range.required_bytes <= 0 {
            return Err(Status::invalid_argument(
                "capacity_range.required_bytes must be above 0",
            ));
        }
        let size = size_for(Some(range))?;
        let detail = self.existing_volume(id).await?;
        // A filesystem on it must grow on its node too; a block volume is done.
        let node_expansion_required = request.volume_capability.as_ref().is_none_or(is_mount);
        let current = detail.volume.spec.size;
        if current < size {
            self.manager
                .post::<Volume>(&format!("/v1/volumes/{id}/expand"), json!({"size": size}))
                .await
                .map_err(|e| refusal(e, "growing the volume"))?;
            tracing::info!(volume = %id, from = current, to = size, "CSI volume expanded");
        }
        Ok(Response::new(pb::ControllerExpandVolumeResponse {
            capacity_bytes: i64::try_from(current.max(size)).unwrap_or(i64::MAX),
            node_expansion_required,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<pb::ControllerGetVolumeRequest>,
    ) -> Result<Response<pb::ControllerGetVolumeResponse>, Status> {
        let id = volume_id(&request.get_ref().volume_id)?.to_string();
        let detail = self.existing_volume(&id).await?;
        let volume = Self::csi_volume(&detail, HashMap::new(), None);
        Ok(Response::new(pb::ControllerGetVolumeResponse {
            volume: Some(volume),
            status: Some(pb::controller_get_volume_response::VolumeStatus {
                published_node_ids: detail.volume.spec.attached_node.iter().cloned().collect(),
                volume_condition: Some(condition::of(&detail.volume)),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        _: Request<pb::ControllerModifyVolumeRequest>,
    ) -> Result<Response<pb::ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerModifyVolume: the driver does not offer MODIFY_VOLUME",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> pb::CapacityRange {
        pb::CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }
    }

    #[test]
    fn sizes_round_up_to_the_store_s_block_within_the_limit() {
        assert_eq!(size_for(None).unwrap(), DEFAULT_SIZE);
        assert_eq!(size_for(Some(&range(1, 0))).unwrap(), 4096);
        assert_eq!(size_for(Some(&range(4097, 0))).unwrap(), 8192);
        assert_eq!(size_for(Some(&range(0, 1 << 20))).unwrap(), 1 << 20);
        assert_eq!(
            size_for(Some(&range(4097, 8000))).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert!(fits(8192, Some(&range(4097, 0))));
        assert!(!fits(8192, Some(&range(10_000, 0))));
    }

    #[test]
    fn pages_continue_after_the_last_name_given() {
        let names = vec!["a", "b", "c"];
        let (first, token) = page(names.clone(), |n| n, 2, "").unwrap();
        assert_eq!(first, ["a", "b"]);
        // An item created meanwhile before the token does not shift the next page.
        let (second, end) = page(vec!["a", "aa", "b", "c"], |n| n, 2, &token).unwrap();
        assert_eq!((second, end.as_str()), (vec!["c"], ""));
        assert_eq!(
            page(names.clone(), |n| n, 0, "bogus").unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            page(names, |n| n, -1, "").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
