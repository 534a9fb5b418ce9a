//! `/v1/volumes/{name}/snapshots`: a volume's snapshots, attached (through its engine)
//! or detached (through its replicas). A snapshot's `id` is `VOLUME/NAME`, stable for
//! its life.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shorthorn_proto::v1 as pb;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, ErrorBody, JsonObject};
use crate::reconcile::{SnapshotChange, SnapshotError};
use crate::validate::{self, FieldError, Validate, schema};

/// A snapshot of a volume.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// `VOLUME/NAME`: unique in the cluster, stable while the snapshot exists.
    pub id: String,
    /// The volume it belongs to.
    pub volume: String,
    /// Its name, unique in the volume.
    pub name: String,
    /// The snapshot it was taken after (empty for the first).
    pub parent: String,
    /// Snapshots taken after it (more than one after a revert); the live data is not
    /// named here.
    pub children: Vec<String>,
    /// When it was taken (RFC 3339).
    pub created: String,
    /// Taken by a user (`snapshot create`, a job, a backup), not by the system (a
    /// rebuild, an expansion).
    pub user_created: bool,
    /// Removed, and kept only until a purge because a child needs its data.
    pub removed: bool,
    /// Labels given when it was taken.
    pub labels: BTreeMap<String, String>,
    /// Bytes its own layer holds on disk (what it changed).
    pub size: u64,
}

/// A snapshot's path: its volume and its name, both following the name rule (stated so
/// that clients, schemathesis among them, can build valid ones).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct SnapshotPath {
    /// The volume.
    #[param(schema_with = schema::name)]
    name: String,
    /// The snapshot.
    #[param(schema_with = schema::name)]
    snapshot: String,
}

impl Snapshot {
    fn of(volume: &str, layer: pb::Layer) -> Snapshot {
        Snapshot {
            id: format!("{volume}/{}", layer.name),
            volume: volume.to_owned(),
            name: layer.name,
            parent: layer.parent,
            children: layer.children,
            created: layer.created,
            user_created: layer.user_created,
            removed: layer.removed,
            labels: layer.labels.into_iter().collect(),
            size: layer.allocated_bytes,
        }
    }
}

/// A request to take a snapshot.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Its name [default: `snap-` and the UTC time].
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub name: Option<String>,
    /// Labels to keep with it.
    #[serde(default)]
    #[schema(schema_with = schema::labels)]
    pub labels: BTreeMap<String, String>,
}

impl Validate for CreateSnapshot {
    fn validate(&self) -> Result<(), FieldError> {
        validate::optional_name("name", self.name.as_deref())?;
        validate::labels("labels", &self.labels)
    }
}

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> ApiError {
        match e {
            SnapshotError::Invalid(message) => ApiError::bad_request(message),
            SnapshotError::NotFound(message) => ApiError::new(StatusCode::NOT_FOUND, message),
            SnapshotError::Busy(message) => ApiError::new(StatusCode::CONFLICT, message),
            SnapshotError::Failed(e) => e.into(),
        }
    }
}

/// The snapshots of `volume` (its head left out).
async fn snapshots(state: &AppState, volume: &str) -> Result<Vec<Snapshot>, ApiError> {
    Ok(state
        .manager
        .list_snapshots(volume)
        .await?
        .into_iter()
        .filter(|layer| !layer.is_head)
        .map(|layer| Snapshot::of(volume, layer))
        .collect())
}

/// A snapshot name from a path: the name rule, so nothing like `..` or `a/b` reaches a
/// replica.
fn snapshot_name(snapshot: &str) -> Result<(), ApiError> {
    validate::name("snapshot", snapshot).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[utoipa::path(get, path = "/v1/volumes/{name}/snapshots", params(("name" = String, Path)),
    responses((status = 200, body = [Snapshot]), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn list_snapshots(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<Snapshot>> {
    Ok(Json(snapshots(&state, &name).await?))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots", params(("name" = String, Path)),
    request_body = CreateSnapshot, responses(
    (status = 201, body = Snapshot), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn create_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<CreateSnapshot>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    let created = state
        .manager
        .change_snapshots(
            &name,
            SnapshotChange::Create {
                name: body.name,
                labels: body.labels,
                system: false,
            },
        )
        .await?
        .unwrap_or_default();
    let snapshot = snapshots(&state, &name)
        .await?
        .into_iter()
        .find(|s| s.name == created)
        .ok_or_else(|| ApiError::not_found("snapshot", &created))?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}

#[utoipa::path(get, path = "/v1/volumes/{name}/snapshots/{snapshot}",
    params(SnapshotPath),
    responses((status = 200, body = Snapshot), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn get_snapshot(
    State(state): State<AppState>,
    Path(SnapshotPath { name, snapshot }): Path<SnapshotPath>,
) -> ApiResult<Snapshot> {
    snapshot_name(&snapshot)?;
    snapshots(&state, &name)
        .await?
        .into_iter()
        .find(|s| s.name == snapshot)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("snapshot", &format!("{name}/{snapshot}")))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}/snapshots/{snapshot}",
    params(SnapshotPath),
    responses((status = 204), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn delete_snapshot(
    State(state): State<AppState>,
    Path(SnapshotPath { name, snapshot }): Path<SnapshotPath>,
) -> Result<StatusCode, ApiError> {
    snapshot_name(&snapshot)?;
    state
        .manager
        .change_snapshots(&name, SnapshotChange::Remove(snapshot))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots/{snapshot}/revert",
    params(SnapshotPath),
    responses((status = 204), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn revert_snapshot(
    State(state): State<AppState>,
    Path(SnapshotPath { name, snapshot }): Path<SnapshotPath>,
) -> Result<StatusCode, ApiError> {
    snapshot_name(&snapshot)?;
    state
        .manager
        .change_snapshots(&name, SnapshotChange::Revert(snapshot))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/volumes/{name}/snapshot-purge", params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn purge_snapshots(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .manager
        .change_snapshots(&name, SnapshotChange::Purge)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
