//! `/agent/v1/…`: this node's agent, for the managers of the cluster's nodes (the node
//! credential only).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiError, ApiResult, AppState, ErrorBody, JsonObject};
use crate::agent_protocol::{
    EngineLaunch, ProcessReport, RemoveReplica, ReplicaLaunch, RestoreLaunch,
};

#[utoipa::path(post, path = "/agent/v1/restores", request_body = RestoreLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn agent_start_restore(
    State(state): State<AppState>,
    JsonObject(launch): JsonObject<RestoreLaunch>,
) -> Result<StatusCode, ApiError> {
    state.manager.agent().start_restore(&launch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agent/v1/replicas", request_body = ReplicaLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn agent_start_replica(
    State(state): State<AppState>,
    JsonObject(body): JsonObject<ReplicaLaunch>,
) -> Result<StatusCode, ApiError> {
    let launch = body;
    state.manager.agent().start_replica(&launch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agent/v1/replicas/{name}/remove", params(("name" = String, Path)),
    request_body = RemoveReplica, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn agent_remove_replica(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(RemoveReplica {}): JsonObject<RemoveReplica>,
) -> Result<StatusCode, ApiError> {
    state.manager.agent().remove_replica(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agent/v1/engines", request_body = EngineLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn agent_start_engine(
    State(state): State<AppState>,
    JsonObject(body): JsonObject<EngineLaunch>,
) -> Result<StatusCode, ApiError> {
    let launch = body;
    state.manager.agent().start_engine(&launch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/agent/v1/processes/{name}", params(("name" = String, Path)),
    responses((status = 200, body = ProcessReport), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn agent_process(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ProcessReport> {
    let process = state.manager.agent().state_checked(&name).await?;
    Ok(Json(ProcessReport::from(&process)))
}

#[utoipa::path(delete, path = "/agent/v1/processes/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn agent_stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.manager.agent().stop_checked(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
