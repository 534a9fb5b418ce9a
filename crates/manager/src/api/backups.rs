//! `/v1/backup-targets` and `/v1/backups`: where backups go, and the backups.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, ErrorBody, JsonObject};
use crate::model::{
    Backup, BackupSpec, BackupState, BackupStatus, BackupTarget, BackupTargetSpec,
    TargetCredentials, Volume,
};
use crate::state::{Kind, StateStoreExt};
use crate::validate::{self, FieldError, Validate, schema};
use shorthorn_agent::protocol::TargetAccess;
use shorthorn_backup::Secret;

/// A request to set a backup target.
/// `Debug` never shows the secret.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBackupTarget {
    /// `s3://bucket@region/path`, `file:///path` or `nfs://host:/path`.
    #[schema(schema_with = schema::url)]
    pub url: String,
    /// Seconds between two reads of its backup list [default: 300].
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub poll_interval: Option<u64>,
    /// An S3 target's endpoint, e.g. `http://10.0.0.5:9000` [default: the managers'
    /// `AWS_ENDPOINT_URL`, else AWS].
    #[serde(default)]
    #[schema(schema_with = schema::optional_url)]
    pub endpoint: Option<String>,
    /// An S3 target's access key id, given with `secret_access_key`. Neither given: the
    /// target keeps the credentials it holds (none: the managers' `AWS_ACCESS_KEY_ID`
    /// and `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    #[schema(schema_with = secret_schema)]
    pub access_key_id: Option<String>,
    /// The secret access key. It is kept apart from the target and never sent back
    /// (the target shows `has_credentials`).
    #[serde(default)]
    #[schema(schema_with = secret_schema)]
    pub secret_access_key: Option<Secret>,
    /// Forget the credentials the target holds (the managers' environment is used
    /// again).
    #[serde(default)]
    pub forget_credentials: bool,
}

fn secret_schema() -> utoipa::openapi::Schema {
    schema::optional_text(TargetAccess::MAX_FIELD)
}

impl SetBackupTarget {
    /// Whether the target is an S3 bucket (the only kind with an endpoint and
    /// credentials).
    fn is_s3(&self) -> bool {
        self.url.starts_with("s3://")
    }

    /// The credentials given, if any.
    fn credentials(&self) -> Option<TargetCredentials> {
        Some(TargetCredentials {
            access_key_id: self.access_key_id.clone()?,
            secret_access_key: self.secret_access_key.clone()?,
        })
    }
}

/// A request to back up a volume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// The volume (it must be attached: the snapshot is read through its engine).
    #[schema(schema_with = schema::name)]
    pub volume: String,
    /// A snapshot to back up [default: a new snapshot, named after the backup].
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub snapshot: Option<String>,
    /// The backup target's name [default: `default`].
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub target: Option<String>,
    /// Labels recorded with the backup.
    #[serde(default)]
    #[schema(schema_with = schema::labels)]
    pub labels: BTreeMap<String, String>,
}

impl Validate for SetBackupTarget {
    fn validate(&self) -> Result<(), FieldError> {
        validate::url("url", &self.url)?;
        if let Some(interval) = self.poll_interval {
            validate::range("poll_interval", interval, 1..=86400)?;
        }
        if let Some(endpoint) = &self.endpoint {
            validate::url("endpoint", endpoint)?;
        }
        TargetAccess {
            endpoint: None,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        }
        .validate("")?;
        let s3_only = |field: &str| {
            FieldError::new(
                field,
                format!("is for S3 targets only, and {:?} is not one", self.url),
            )
        };
        let s3 = self.is_s3();
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return Err(FieldError::new(
                    "secret_access_key",
                    "is missing: access_key_id and secret_access_key go together",
                ));
            }
            (None, Some(_)) => {
                return Err(FieldError::new(
                    "access_key_id",
                    "is missing: access_key_id and secret_access_key go together",
                ));
            }
            (Some(_), Some(_)) if self.forget_credentials => {
                return Err(FieldError::new(
                    "forget_credentials",
                    "cannot be given with new credentials",
                ));
            }
            (Some(_), Some(_)) if !s3 => return Err(s3_only("access_key_id")),
            _ => {}
        }
        if self.endpoint.is_some() && !s3 {
            return Err(s3_only("endpoint"));
        }
        Ok(())
    }
}

impl Validate for CreateBackup {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("volume", &self.volume)?;
        validate::optional_name("snapshot", self.snapshot.as_deref())?;
        validate::optional_name("target", self.target.as_deref())?;
        validate::labels("labels", &self.labels)
    }
}

#[utoipa::path(get, path = "/v1/backup-targets", responses(
    (status = 200, body = [BackupTarget]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_backup_targets(
    State(state): State<AppState>,
) -> ApiResult<Vec<BackupTarget>> {
    Ok(Json(state.manager.state().list(Kind::BackupTarget)?))
}

#[utoipa::path(put, path = "/v1/backup-targets/{name}", params(("name" = String, Path)),
    request_body = SetBackupTarget, responses(
    (status = 200, body = BackupTarget), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody)))]
pub(super) async fn set_backup_target(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(request): JsonObject<SetBackupTarget>,
) -> ApiResult<BackupTarget> {
    shorthorn_block::validate_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    state
        .manager
        .target_policy()
        .check(&request.url)
        .map_err(|e| ApiError::bad_request(format!("url: {e:#}")))?;
    let poll_interval = request.poll_interval.unwrap_or(300);
    let store = state.manager.state();
    // The credentials are written before the target that says it has them.
    if let Some(credentials) = request.credentials() {
        store.put(Kind::TargetCredentials, &name, &credentials)?;
    } else if request.forget_credentials || !request.is_s3() {
        store.delete(Kind::TargetCredentials, &name)?;
    }
    let has_credentials = store
        .get::<TargetCredentials>(Kind::TargetCredentials, &name)?
        .is_some();
    let spec = BackupTargetSpec {
        url: request.url,
        poll_interval,
        endpoint: request.endpoint,
        has_credentials,
    };
    let status = store
        .get::<BackupTarget>(Kind::BackupTarget, &name)?
        .filter(|old| old.spec.url == spec.url)
        .map(|old| old.status)
        .unwrap_or_default();
    let target = BackupTarget { name, spec, status };
    store.put(Kind::BackupTarget, &target.name, &target)?;
    state.manager.poke();
    Ok(Json(target))
}

#[utoipa::path(delete, path = "/v1/backup-targets/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn delete_backup_target(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.manager.state();
    if store
        .get::<BackupTarget>(Kind::BackupTarget, &name)?
        .is_none()
    {
        return Err(ApiError::not_found("backup target", &name));
    }
    let backups: Vec<Backup> = store.list(Kind::Backup)?;
    let ours = || backups.iter().filter(|b| b.spec.target == name);
    if let Some(busy) = ours().find(|b| b.status.state != BackupState::Completed) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("backup {} to target {name} is not complete", busy.name),
        ));
    }
    // Its backups stay in the target; only their objects go.
    for backup in ours() {
        store.delete(Kind::Backup, &backup.name)?;
    }
    store.delete(Kind::BackupTarget, &name)?;
    store.delete(Kind::TargetCredentials, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which backups to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct BackupFilter {
    /// Only this volume's.
    volume: Option<String>,
}

#[utoipa::path(get, path = "/v1/backups", params(BackupFilter), responses(
    (status = 200, body = [Backup]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_backups(
    State(state): State<AppState>,
    Query(filter): Query<BackupFilter>,
) -> ApiResult<Vec<Backup>> {
    let backups: Vec<Backup> = state.manager.state().list(Kind::Backup)?;
    Ok(Json(
        backups
            .into_iter()
            .filter(|b| filter.volume.as_ref().is_none_or(|v| &b.spec.volume == v))
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/backups", request_body = CreateBackup, responses(
    (status = 201, body = Backup), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn create_backup(
    State(state): State<AppState>,
    JsonObject(request): JsonObject<CreateBackup>,
) -> Result<(StatusCode, Json<Backup>), ApiError> {
    let target = request
        .target
        .unwrap_or_else(|| crate::backups::DEFAULT_TARGET.to_string());
    let store = state.manager.state();
    let volume: Volume = store
        .get(Kind::Volume, &request.volume)?
        .ok_or_else(|| ApiError::not_found("volume", &request.volume))?;
    volume
        .not_standby("backed up")
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
    if volume.spec.attached_node.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "volume {:?} is not attached: a backup reads its snapshot through the engine",
                volume.name
            ),
        ));
    }
    if store
        .get::<BackupTarget>(Kind::BackupTarget, &target)?
        .is_none()
    {
        return Err(ApiError::not_found("backup target", &target));
    }
    let backup = Backup {
        name: crate::backups::new_backup_name(&volume.name),
        spec: BackupSpec {
            volume: volume.name,
            snapshot: request.snapshot,
            target,
            labels: request.labels,
            delete_requested: false,
        },
        status: BackupStatus::default(),
    };
    store.put(Kind::Backup, &backup.name, &backup)?;
    state.manager.poke();
    Ok((StatusCode::CREATED, Json(backup)))
}

#[utoipa::path(get, path = "/v1/backups/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = Backup), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(super) async fn get_backup(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Backup> {
    state
        .manager
        .state()
        .get(Kind::Backup, &name)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("backup", &name))
}

#[utoipa::path(delete, path = "/v1/backups/{name}", params(("name" = String, Path)), responses(
    (status = 202, body = Backup), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(super) async fn delete_backup(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Backup>), ApiError> {
    let backup = state
        .manager
        .state()
        .update::<Backup>(Kind::Backup, &name, |backup| {
            backup.spec.delete_requested = true;
            Ok(())
        })?
        .ok_or_else(|| ApiError::not_found("backup", &name))?;
    state.manager.poke();
    Ok((StatusCode::ACCEPTED, Json(backup)))
}
