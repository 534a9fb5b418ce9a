//! `/agent/v1/…`: this node's agent over HTTP, for the managers of the cluster's nodes.
//! The server that mounts [`router`] must let only the node credential through: these
//! routes start root processes and remove replica directories.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::Agent;
use crate::http::{ApiError, ApiResult, BearerAuth, ErrorBody, JsonObject};
use crate::node::EngineTuning;
use crate::protocol::{
    CloneLaunch, EngineLaunch, ProcessReport, RemoveReplica, ReplicaLaunch, RestoreLaunch,
};

/// Where the node agent's OpenAPI document is served.
pub const AGENT_OPENAPI_PATH: &str = "/agent/v1/openapi.json";

/// The agent's routes over `agent`, without authentication (the caller adds it).
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/agent/v1/replicas", post(agent_start_replica))
        .route(
            "/agent/v1/replicas/{name}/remove",
            post(agent_remove_replica),
        )
        .route("/agent/v1/engines", post(agent_start_engine))
        .route("/agent/v1/restores", post(agent_start_restore))
        .route("/agent/v1/clones", post(agent_start_clone))
        .route(
            "/agent/v1/processes/{name}",
            get(agent_process).delete(agent_stop),
        )
        .with_state(agent)
}

/// The node agent's routes: for the managers of the cluster's nodes, with the node
/// credential; documented apart from the user API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Shorthorn node agent API", version = "1"),
    paths(
        agent_start_replica, agent_remove_replica, agent_start_engine, agent_start_restore, agent_start_clone,
        agent_process, agent_stop
    ),
    components(schemas(
        ErrorBody, ReplicaLaunch, EngineLaunch, EngineTuning, RestoreLaunch, CloneLaunch, RemoveReplica,
        ProcessReport
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct AgentApiDoc;

/// The node agent's OpenAPI document as JSON.
pub fn agent_openapi_json() -> String {
    AgentApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

#[utoipa::path(post, path = "/agent/v1/restores", request_body = RestoreLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn agent_start_restore(
    State(agent): State<Arc<Agent>>,
    JsonObject(launch): JsonObject<RestoreLaunch>,
) -> Result<StatusCode, ApiError> {
    agent.start_restore(&launch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agent/v1/clones", request_body = CloneLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn agent_start_clone(
    State(agent): State<Arc<Agent>>,
    JsonObject(launch): JsonObject<CloneLaunch>,
) -> Result<StatusCode, ApiError> {
    agent.start_clone(&launch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agent/v1/replicas", request_body = ReplicaLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn agent_start_replica(
    State(agent): State<Arc<Agent>>,
    JsonObject(body): JsonObject<ReplicaLaunch>,
) -> Result<StatusCode, ApiError> {
    let launch = body;
    agent.start_replica(&launch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agent/v1/replicas/{name}/remove", params(("name" = String, Path)),
    request_body = RemoveReplica, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn agent_remove_replica(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    JsonObject(RemoveReplica {}): JsonObject<RemoveReplica>,
) -> Result<StatusCode, ApiError> {
    agent.remove_replica(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agent/v1/engines", request_body = EngineLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn agent_start_engine(
    State(agent): State<Arc<Agent>>,
    JsonObject(body): JsonObject<EngineLaunch>,
) -> Result<StatusCode, ApiError> {
    let launch = body;
    agent.start_engine(&launch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/agent/v1/processes/{name}", params(("name" = String, Path)),
    responses((status = 200, body = ProcessReport), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn agent_process(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
) -> ApiResult<ProcessReport> {
    let process = agent.state_checked(&name).await?;
    let mut report = ProcessReport::from(&process);
    report.progress = agent.progress(&name).await;
    Ok(Json(report))
}

#[utoipa::path(delete, path = "/agent/v1/processes/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn agent_stop(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    agent.stop_checked(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
