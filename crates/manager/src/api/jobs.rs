//! `/v1/recurring-jobs`: snapshot and backup schedules.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, ErrorBody, JsonObject};
use crate::model::{JobTask, RecurringJob, RecurringJobSpec, RecurringJobStatus};
use crate::state::{Kind, StateStoreExt};
use crate::validate::{self, FieldError, Validate, schema};

/// A request to create a recurring job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// Name: 1–63 letters, digits, `-`, `_`, `.`.
    #[schema(schema_with = schema::name)]
    pub name: String,
    /// What it does and when.
    pub spec: RecurringJobSpec,
}

impl Validate for CreateJob {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("name", &self.name)?;
        self.spec.validate_as("spec")
    }
}

#[utoipa::path(get, path = "/v1/recurring-jobs", responses(
    (status = 200, body = [RecurringJob]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_jobs(State(state): State<AppState>) -> ApiResult<Vec<RecurringJob>> {
    Ok(Json(state.manager.state().list(Kind::RecurringJob)?))
}

#[utoipa::path(post, path = "/v1/recurring-jobs", request_body = CreateJob, responses(
    (status = 201, body = RecurringJob), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_job(
    State(state): State<AppState>,
    JsonObject(body): JsonObject<CreateJob>,
) -> Result<(StatusCode, Json<RecurringJob>), ApiError> {
    let request = body;
    crate::jobs::parse_cron(&request.spec.cron)
        .map_err(|e| ApiError::bad_request(format!("spec.cron: {e:#}")))?;
    if request.spec.task == JobTask::Backup {
        // A URL must parse; a target named (or `default`) may be set later.
        if let Some(target) = request.spec.target.as_deref().filter(|t| t.contains("://")) {
            state
                .manager
                .target_policy()
                .check(target)
                .map_err(|e| ApiError::bad_request(format!("spec.target: {e:#}")))?;
        }
    }
    let store = state.manager.state();
    if store
        .get::<RecurringJob>(Kind::RecurringJob, &request.name)?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("recurring job {:?} exists", request.name),
        ));
    }
    let job = RecurringJob {
        name: request.name,
        spec: request.spec,
        status: RecurringJobStatus::default(),
    };
    store.put(Kind::RecurringJob, &job.name, &job)?;
    state.manager.poke();
    Ok((StatusCode::CREATED, Json(job)))
}

#[utoipa::path(get, path = "/v1/recurring-jobs/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = RecurringJob), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(super) async fn get_job(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<RecurringJob> {
    let job = state
        .manager
        .state()
        .get(Kind::RecurringJob, &name)?
        .ok_or_else(|| ApiError::not_found("recurring job", &name))?;
    Ok(Json(job))
}

#[utoipa::path(delete, path = "/v1/recurring-jobs/{name}", params(("name" = String, Path)), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_job(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.manager.state();
    if store
        .get::<RecurringJob>(Kind::RecurringJob, &name)?
        .is_none()
    {
        return Err(ApiError::not_found("recurring job", &name));
    }
    store.delete(Kind::RecurringJob, &name)?;
    Ok(StatusCode::NO_CONTENT)
}
