//! `/v1/volumes`: create, read, attach, detach, expand and delete volumes, and choose
//! their recurring jobs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, ErrorBody, JsonObject};
use crate::model::{
    DataLocality, Engine, Node, RecurringJob, Replica, Robustness, SnapshotRef, Volume, VolumeSpec,
    VolumeStatus,
};
use crate::reconcile::SnapshotChange;
use crate::state::{Kind, StateStoreExt};
use crate::validate::{self, FieldError, Validate, schema};

/// A request to create a volume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Name: 1–63 letters, digits, `-`, `_`, `.`.
    #[schema(schema_with = schema::name)]
    pub name: String,
    /// Size in bytes, a multiple of 4096, at most 2^50 (1 PiB).
    #[schema(minimum = 4096, maximum = 1125899906842624_u64, multiple_of = 4096)]
    pub size: u64,
    /// Replica count [default: the `default_replica_count` setting].
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16)]
    pub replicas: Option<usize>,
    /// Tags every replica's node must have.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub node_selector: Vec<String>,
    /// Tags every replica's disk must have.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub disk_selector: Vec<String>,
    /// Recurring jobs to run for it, by name.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub recurring_jobs: Vec<String>,
    /// Groups of recurring jobs to run for it.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub recurring_job_groups: Vec<String>,
    /// A backup to restore it from (`TARGET?backup=NAME&volume=VOLUME`, as `volume
    /// backups` or `backup ls` print it); `size` must be the backup's volume size.
    #[serde(default)]
    #[schema(schema_with = schema::optional_url)]
    pub from_backup: Option<String>,
    /// A clone of another volume's snapshot, `VOLUME/SNAPSHOT`: the first replicas copy
    /// it from a replica of that volume (no backup target involved); `size` at least that
    /// volume's.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 127, pattern = r"^[^/]+/[^/]+$")]
    pub from_snapshot: Option<String>,
    /// A clone of another volume as it is now: a system snapshot of it is taken, then
    /// copied as for `from_snapshot`.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub from_volume: Option<String>,
    /// Whether a replica follows the engine's node [default: the `default_data_locality`
    /// setting].
    #[serde(default)]
    pub data_locality: Option<DataLocality>,
    /// Labels to find it by (the UI filters on them); Shorthorn does not act on them.
    #[serde(default)]
    #[schema(schema_with = schema::labels)]
    pub labels: BTreeMap<String, String>,
    /// A standby (disaster recovery) volume: `from_backup` names the backups of a
    /// volume (`TARGET?volume=VOLUME`; a backup URL's volume will do); the newest is
    /// restored now and every newer one as it appears, until the volume is activated.
    /// Until then it cannot be attached, snapshotted, backed up or expanded.
    #[serde(default)]
    pub standby: bool,
}

/// A request to turn a standby volume into an ordinary one.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateVolume {
    /// Activate with the backup restored last (a restore under way finishes first),
    /// without reading the target again for newer ones [default: false: the target is
    /// read, and its newest backup restored, first].
    #[serde(default)]
    pub at_last_restored: bool,
}

impl Validate for ActivateVolume {
    /// Any boolean will do.
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

impl CreateVolume {
    /// `from_snapshot` as volume and snapshot.
    fn snapshot_source(&self) -> Option<Result<SnapshotRef, FieldError>> {
        let text = self.from_snapshot.as_deref()?;
        let Some((volume, snapshot)) = text.split_once('/') else {
            return Some(Err(FieldError::new(
                "from_snapshot",
                format!("{text:?} is not VOLUME/SNAPSHOT"),
            )));
        };
        let names = validate::name("from_snapshot (volume)", volume)
            .and_then(|()| validate::name("from_snapshot (snapshot)", snapshot));
        Some(names.map(|()| SnapshotRef {
            volume: volume.to_string(),
            snapshot: snapshot.to_string(),
        }))
    }
}

/// Which recurring jobs run for a volume.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeJobs {
    /// Jobs, by name.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub jobs: Vec<String>,
    /// Job groups.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub groups: Vec<String>,
}

/// A request to grow a volume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpandVolume {
    /// The new size in bytes: larger than now, a multiple of 4096, at most 2^50.
    #[schema(minimum = 4096, maximum = 1125899906842624_u64, multiple_of = 4096)]
    pub size: u64,
}

/// A request to change how many replicas a volume keeps.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetReplicaCount {
    /// The replica count (1 to 16): more are built live, the least useful go first.
    #[schema(minimum = 1, maximum = 16)]
    pub replicas: usize,
}

impl Validate for SetReplicaCount {
    fn validate(&self) -> Result<(), FieldError> {
        validate::range("replicas", self.replicas, 1..=validate::MAX_REPLICAS)
    }
}

/// A request to change a volume's data locality.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDataLocality {
    /// `best-effort`: while attached, a replica is kept on the engine's node (built
    /// there, then one elsewhere removed); `disabled`: replicas stay where they are.
    pub data_locality: DataLocality,
}

impl Validate for SetDataLocality {
    /// Any of the enum's values will do; serde refuses the rest.
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// A request to attach a volume.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    /// The node to attach to [default: the node serving the API].
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub node: Option<String>,
}

impl Validate for CreateVolume {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("name", &self.name)?;
        validate::size("size", self.size)?;
        if let Some(replicas) = self.replicas {
            validate::range("replicas", replicas, 1..=validate::MAX_REPLICAS)?;
        }
        validate::names("node_selector", &self.node_selector)?;
        validate::names("disk_selector", &self.disk_selector)?;
        validate::names("recurring_jobs", &self.recurring_jobs)?;
        validate::names("recurring_job_groups", &self.recurring_job_groups)?;
        if let Some(url) = &self.from_backup {
            validate::url("from_backup", url)?;
        }
        if self.standby {
            if self.from_backup.is_none() {
                return Err(FieldError::new(
                    "standby",
                    "a standby volume follows backups: give from_backup (TARGET?volume=VOLUME)",
                ));
            }
            if !self.recurring_jobs.is_empty() || !self.recurring_job_groups.is_empty() {
                return Err(FieldError::new(
                    "recurring_jobs",
                    "a standby volume runs no recurring jobs; set them after it is activated",
                ));
            }
        }
        if let Some(source) = self.snapshot_source() {
            source?;
        }
        validate::optional_name("from_volume", self.from_volume.as_deref())?;
        validate::labels("labels", &self.labels)?;
        let sources = [
            self.from_backup.is_some(),
            self.from_snapshot.is_some(),
            self.from_volume.is_some(),
        ];
        if sources.into_iter().filter(|given| *given).count() > 1 {
            return Err(FieldError::new(
                "from_backup",
                "give at most one of from_backup, from_snapshot and from_volume",
            ));
        }
        if self.from_volume.as_deref() == Some(self.name.as_str())
            || self
                .snapshot_source()
                .and_then(Result::ok)
                .is_some_and(|s| s.volume == self.name)
        {
            return Err(FieldError::new(
                "name",
                "a volume cannot be a clone of itself",
            ));
        }
        Ok(())
    }
}

impl Validate for VolumeJobs {
    fn validate(&self) -> Result<(), FieldError> {
        validate::names("jobs", &self.jobs)?;
        validate::names("groups", &self.groups)
    }
}

impl Validate for ExpandVolume {
    fn validate(&self) -> Result<(), FieldError> {
        validate::size("size", self.size)
    }
}

impl Validate for AttachVolume {
    fn validate(&self) -> Result<(), FieldError> {
        validate::optional_name("node", self.node.as_deref())
    }
}

/// A volume with its replicas.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VolumeDetail {
    /// The volume.
    #[serde(flatten)]
    pub volume: Volume,
    /// Its replicas.
    pub replicas: Vec<Replica>,
    /// Its engine (none before its first reconcile).
    pub engine: Option<Engine>,
}

#[utoipa::path(get, path = "/v1/volumes", responses(
    (status = 200, body = [Volume]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_volumes(State(state): State<AppState>) -> ApiResult<Vec<Volume>> {
    Ok(Json(state.manager.state().list(Kind::Volume)?))
}

#[utoipa::path(post, path = "/v1/volumes", request_body = CreateVolume, responses(
    (status = 201, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn create_volume(
    State(state): State<AppState>,
    JsonObject(body): JsonObject<CreateVolume>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let request = body;
    let settings = state.manager.settings()?;
    let replicas = request.replicas.unwrap_or(settings.default_replica_count);
    let mut from_backup = request.from_backup.clone();
    let mut standby = None;
    match &request.from_backup {
        Some(url) if request.standby => {
            let (spec, first) = standby_source(&state, url, request.size).await?;
            from_backup = Some(first);
            standby = Some(spec);
        }
        Some(url) => check_backup_size(&state, url, request.size).await?,
        None => {}
    }
    let store = state.manager.state();
    if store.get::<Volume>(Kind::Volume, &request.name)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("volume {:?} exists", request.name),
        ));
    }
    let from_snapshot = clone_source(&state, &request).await?;
    let volume = Volume {
        name: request.name.clone(),
        spec: VolumeSpec {
            size: request.size,
            replicas,
            node_selector: request.node_selector,
            disk_selector: request.disk_selector,
            attached_node: None,
            recurring_jobs: request.recurring_jobs,
            recurring_job_groups: request.recurring_job_groups,
            from_backup,
            from_snapshot,
            salvage_requests: 0,
            data_locality: request
                .data_locality
                .unwrap_or(settings.default_data_locality),
            labels: request.labels,
            standby,
        },
        status: VolumeStatus::default(),
    };
    // Say now what would otherwise be a volume waiting for replicas forever.
    if let Some(why) = state.manager.unschedulable(&volume)? {
        return Err(ApiError::new(StatusCode::CONFLICT, why));
    }
    store.put(Kind::Volume, &volume.name, &volume)?;
    state.manager.report(
        "volume",
        &volume.name,
        &volume.name,
        "Created",
        match &volume.spec.standby {
            Some(standby) => format!(
                "standby volume {} created: {} bytes, {} replicas, following the backups at {}",
                volume.name, volume.spec.size, volume.spec.replicas, standby.source
            ),
            None => format!(
                "volume {} created: {} bytes, {} replicas",
                volume.name, volume.spec.size, volume.spec.replicas
            ),
        },
    );
    state.manager.poke();
    Ok((StatusCode::CREATED, Json(volume)))
}

/// The snapshot a new volume clones, if it is a clone: `from_snapshot` checked to exist,
/// or for `from_volume` a system snapshot taken now (so the copy reads a state that no
/// longer changes while the source keeps serving). The new volume must be at least as
/// large as its source.
async fn clone_source(
    state: &AppState,
    request: &CreateVolume,
) -> Result<Option<SnapshotRef>, ApiError> {
    let (source, snapshot) = match (&request.from_volume, request.snapshot_source()) {
        (Some(volume), _) => (volume.clone(), None),
        (None, Some(source)) => {
            let source = source.map_err(|e| ApiError::bad_request(e.to_string()))?;
            (source.volume, Some(source.snapshot))
        }
        (None, None) => return Ok(None),
    };
    let volume: Volume = state
        .manager
        .state()
        .get(Kind::Volume, &source)?
        .ok_or_else(|| ApiError::not_found("volume", &source))?;
    volume
        .not_standby("cloned")
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
    if request.size < volume.spec.size {
        return Err(ApiError::bad_request(format!(
            "size: a clone of volume {source} must hold at least its {} bytes, not {}",
            volume.spec.size, request.size
        )));
    }
    let snapshot = match snapshot {
        Some(snapshot) => {
            let layers = state
                .manager
                .list_snapshots(&source)
                .await
                .map_err(source_not_ready(
                    "from_snapshot: listing the snapshots",
                    &source,
                ))?;
            if !layers
                .iter()
                .any(|l| !l.is_head && !l.removed && l.name == snapshot)
            {
                return Err(ApiError::not_found(
                    "snapshot",
                    &format!("{source}/{snapshot}"),
                ));
            }
            snapshot
        }
        None => {
            let name = format!("clone-{:08x}", rand::random::<u32>());
            let labels = [("clone-for".to_string(), request.name.clone())].into();
            let change = SnapshotChange::Create {
                name: Some(name),
                labels,
                system: true,
            };
            state
                .manager
                .change_snapshots(&source, change)
                .await
                .map_err(source_not_ready("from_volume: taking a snapshot", &source))?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the snapshot for the clone has no name",
                    )
                })?
        }
    };
    Ok(Some(SnapshotRef {
        volume: source,
        snapshot,
    }))
}

/// A clone's source that failed a snapshot call is not ready (its replicas still
/// starting, say): a 409 naming what was tried on `volume`, not a server error.
fn source_not_ready(
    what: &'static str,
    volume: &str,
) -> impl FnOnce(crate::reconcile::SnapshotError) -> ApiError {
    let volume = volume.to_string();
    move |e| match e {
        crate::reconcile::SnapshotError::Failed(e) => ApiError::new(
            StatusCode::CONFLICT,
            format!("{what} of volume {volume}: {e:#}"),
        ),
        other => other.into(),
    }
}

/// A standby volume's source from `url` (`TARGET?volume=VOLUME[&backup=…]`) and the URL
/// of the backup its replicas restore first: the newest of that volume's backups. The
/// target must be readable, hold backups of the volume, and the newest must hold
/// exactly `size` bytes.
async fn standby_source(
    state: &AppState,
    url: &str,
    size: u64,
) -> Result<(crate::model::StandbySpec, String), ApiError> {
    let source = shorthorn_backup::BackupSource::parse(url)
        .map_err(|e| ApiError::bad_request(format!("from_backup: {:#}", anyhow::Error::from(e))))?;
    let records = async {
        let target = state.manager.open_target(&source.target)?;
        anyhow::Ok(shorthorn_backup::list_backups(&target, &source.volume).await?)
    }
    .await
    .map_err(|e| ApiError::bad_request(format!("from_backup: {e:#}")))?;
    let newest = records
        .iter()
        .max_by_key(|r| chrono::DateTime::parse_from_rfc3339(&r.completed).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "from_backup: volume {:?} has no backups in {}; a standby needs one to start from",
                    source.volume, source.target
                ),
            )
        })?;
    if newest.volume_size != size {
        return Err(ApiError::bad_request(format!(
            "from_backup: the newest backup, {}, holds a volume of {} bytes; create the volume with that size",
            newest.name, newest.volume_size
        )));
    }
    let first = source.backup_url(&newest.name).to_string();
    let spec = crate::model::StandbySpec {
        source: format!("{}?volume={}", source.target, source.volume),
        sync_requests: 0,
        activation: None,
    };
    Ok((spec, first))
}

/// Refuses a backup to restore a new volume from that this node may not open or cannot
/// read, or whose volume size is not `size` (the restored replicas hold exactly the
/// backup's size). The target is opened with the endpoint and credentials of its backup
/// target object.
pub(super) async fn check_backup_size(
    state: &AppState,
    url: &str,
    size: u64,
) -> Result<(), ApiError> {
    let parsed = shorthorn_backup::BackupUrl::parse(url)
        .map_err(|e| ApiError::bad_request(format!("from_backup: {:#}", anyhow::Error::from(e))))?;
    let record = async {
        let target = state.manager.open_target(&parsed.target)?;
        anyhow::Ok(shorthorn_backup::get_backup(&target, &parsed.volume, &parsed.backup).await?)
    }
    .await
    .map_err(|e| ApiError::bad_request(format!("from_backup: {e:#}")))?;
    if record.volume_size != size {
        return Err(ApiError::bad_request(format!(
            "from_backup holds a volume of {} bytes; create the volume with that size",
            record.volume_size
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/volumes/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = VolumeDetail), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(super) async fn get_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<VolumeDetail> {
    let store = state.manager.state();
    let volume: Volume = store
        .get(Kind::Volume, &name)?
        .ok_or_else(|| ApiError::not_found("volume", &name))?;
    let replicas = store
        .list::<Replica>(Kind::Replica)?
        .into_iter()
        .filter(|r| r.spec.volume == name)
        .collect();
    let engine = store.get(Kind::Engine, &Engine::name_for(&name))?;
    Ok(Json(VolumeDetail {
        volume,
        replicas,
        engine,
    }))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", params(("name" = String, Path)), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn delete_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let volume: Volume = state
        .manager
        .state()
        .get(Kind::Volume, &name)?
        .ok_or_else(|| ApiError::not_found("volume", &name))?;
    if let Some(node) = volume.spec.attached_node {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("volume {name:?} is attached to {node}; detach it first"),
        ));
    }
    state.manager.delete_volume(&name).await?;
    state.manager.report(
        "volume",
        &name,
        &name,
        "Deleted",
        format!("volume {name} deleted"),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/volumes/{name}/attach", params(("name" = String, Path)),
    request_body = AttachVolume, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn attach_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<AttachVolume>,
) -> ApiResult<Volume> {
    let request = body;
    let node = request
        .node
        .unwrap_or_else(|| state.manager.node().to_string());
    if state
        .manager
        .state()
        .get::<Node>(Kind::Node, &node)?
        .is_none()
    {
        return Err(ApiError::bad_request(format!("no node {node:?}")));
    }
    let current = exists(&state, &name)?;
    current
        .not_standby("attached")
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
    // A volume none of whose replicas could be placed (the cluster changed since it was
    // created) would wait for ever: say why now.
    let placed = state
        .manager
        .state()
        .list::<Replica>(Kind::Replica)?
        .iter()
        .any(|r| r.spec.volume == name && r.spec.desire_running);
    if !placed && let Some(why) = state.manager.unschedulable(&current)? {
        return Err(ApiError::new(StatusCode::CONFLICT, why));
    }
    let volume = state
        .manager
        .update_volume(&name, |volume| match &volume.spec.attached_node {
            Some(other) if *other != node => {
                anyhow::bail!("volume {name:?} is attached to {other}; detach it first")
            }
            _ => {
                volume.spec.attached_node = Some(node.clone());
                Ok(())
            }
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))?;
    Ok(Json(volume))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/detach", params(("name" = String, Path)),
    responses((status = 200, body = Volume), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(super) async fn detach_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Volume> {
    exists(&state, &name)?;
    let volume = state
        .manager
        .update_volume(&name, |volume| {
            volume.spec.attached_node = None;
            Ok(())
        })
        .await?;
    Ok(Json(volume))
}

/// The volume `name`, or 404.
pub(super) fn exists(state: &AppState, name: &str) -> Result<Volume, ApiError> {
    state
        .manager
        .state()
        .get::<Volume>(Kind::Volume, name)?
        .ok_or_else(|| ApiError::not_found("volume", name))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/expand", params(("name" = String, Path)),
    request_body = ExpandVolume, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn expand_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<ExpandVolume>,
) -> ApiResult<Volume> {
    let request = body;
    exists(&state, &name)?;
    let volume = state
        .manager
        .expand_volume(&name, request.size)
        .await
        .map_err(|e| match e {
            crate::reconcile::ExpandError::Invalid(message) => ApiError::bad_request(message),
            crate::reconcile::ExpandError::Busy(message) => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            crate::reconcile::ExpandError::Failed(e) => e.into(),
        })?;
    Ok(Json(volume))
}

#[utoipa::path(put, path = "/v1/volumes/{name}/recurring-jobs", params(("name" = String, Path)),
    request_body = VolumeJobs, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn set_volume_jobs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<VolumeJobs>,
) -> ApiResult<Volume> {
    let request = body;
    let current = exists(&state, &name)?;
    if !request.jobs.is_empty() || !request.groups.is_empty() {
        current
            .not_standby("given recurring jobs")
            .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
    }
    for job in &request.jobs {
        if state
            .manager
            .state()
            .get::<RecurringJob>(Kind::RecurringJob, job)?
            .is_none()
        {
            return Err(ApiError::bad_request(format!("no recurring job {job:?}")));
        }
    }
    let volume = state
        .manager
        .update_volume(&name, |volume| {
            volume.spec.recurring_jobs.clone_from(&request.jobs);
            volume.spec.recurring_job_groups.clone_from(&request.groups);
            Ok(())
        })
        .await?;
    Ok(Json(volume))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/replica-count", params(("name" = String, Path)),
    request_body = SetReplicaCount, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn set_replica_count(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<SetReplicaCount>,
) -> ApiResult<Volume> {
    let mut wanted = exists(&state, &name)?;
    wanted.spec.replicas = body.replicas;
    // More replicas than can be placed would leave the volume degraded for ever.
    if let Some(why) = state.manager.unschedulable(&wanted)? {
        return Err(ApiError::new(StatusCode::CONFLICT, why));
    }
    let volume = state
        .manager
        .update_volume(&name, |volume| {
            volume.spec.replicas = body.replicas;
            Ok(())
        })
        .await?;
    Ok(Json(volume))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/data-locality", params(("name" = String, Path)),
    request_body = SetDataLocality, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn set_data_locality(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<SetDataLocality>,
) -> ApiResult<Volume> {
    exists(&state, &name)?;
    let volume = state
        .manager
        .update_volume(&name, |volume| {
            volume.spec.data_locality = body.data_locality;
            Ok(())
        })
        .await?;
    Ok(Json(volume))
}

/// A replica of a volume, by both names (following the name rule, stated so that
/// clients can build valid ones).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct VolumeReplicaPath {
    /// The volume.
    #[param(schema_with = schema::name)]
    name: String,
    /// The replica.
    #[param(schema_with = schema::name)]
    replica: String,
}

#[utoipa::path(delete, path = "/v1/volumes/{name}/replicas/{replica}",
    params(VolumeReplicaPath), responses(
    (status = 200, body = Replica), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn remove_volume_replica(
    State(state): State<AppState>,
    Path(VolumeReplicaPath { name, replica }): Path<VolumeReplicaPath>,
) -> ApiResult<Replica> {
    exists(&state, &name)?;
    let retired = state
        .manager
        .retire_replica(&name, &replica)
        .await
        .map_err(|e| match e {
            crate::reconcile::RetireError::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, message)
            }
            crate::reconcile::RetireError::Last(message) => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            crate::reconcile::RetireError::Failed(e) => e.into(),
        })?;
    Ok(Json(retired))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/salvage", params(("name" = String, Path)),
    responses((status = 200, body = Volume), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn salvage_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Volume> {
    let volume = exists(&state, &name)?;
    if volume.spec.attached_node.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "volume {name:?} is detached; attach it: the salvage happens when its engine opens"
            ),
        ));
    }
    if volume.status.robustness != Robustness::Faulted {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "volume {name:?} is not faulted ({}); a salvage is only for a volume that cannot open",
                crate::model::json_name(&volume.status.robustness)
            ),
        ));
    }
    let volume = state
        .manager
        .update_volume(&name, |volume| {
            volume.spec.salvage_requests += 1;
            Ok(())
        })
        .await?;
    Ok(Json(volume))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/sync", params(("name" = String, Path)),
    responses((status = 200, body = Volume), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
/// Has a standby volume read its backup target now (and restore a newer backup).
pub(super) async fn sync_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Volume> {
    update_standby(&state, &name, |standby| standby.sync_requests += 1).await
}

#[utoipa::path(post, path = "/v1/volumes/{name}/activate", params(("name" = String, Path)),
    request_body = ActivateVolume, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
/// Asks for a standby volume to become an ordinary one (irreversible): done by its
/// manager once the newest backup is restored (or at once with `at_last_restored`);
/// `spec.standby` is then gone. Asking again while it waits changes nothing, except that
/// `at_last_restored` may be turned on (to stop waiting for an unreachable target).
pub(super) async fn activate_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<ActivateVolume>,
) -> ApiResult<Volume> {
    update_standby(&state, &name, |standby| match &mut standby.activation {
        None => {
            // A fresh read of the target, whose newest backup is restored first.
            standby.sync_requests += 1;
            standby.activation = Some(crate::model::Activation {
                at_last_restored: body.at_last_restored,
                after_sync: standby.sync_requests,
            });
        }
        Some(asked) => asked.at_last_restored |= body.at_last_restored,
    })
    .await
}

/// Changes the standby spec of volume `name`: 404 without the volume, 409 when it is
/// not a standby.
async fn update_standby(
    state: &AppState,
    name: &str,
    mut change: impl FnMut(&mut crate::model::StandbySpec),
) -> ApiResult<Volume> {
    exists(state, name)?;
    let volume = state
        .manager
        .update_volume(name, |volume| {
            let standby = volume
                .spec
                .standby
                .as_mut()
                .ok_or_else(|| not_a_standby(name))?;
            change(standby);
            Ok(())
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))?;
    Ok(Json(volume))
}

fn not_a_standby(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "volume {name:?} is not a standby volume (an ordinary one, or already activated)"
    )
}
