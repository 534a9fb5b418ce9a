//! `/v1/engines` and `/v1/replicas`: read-only views of what the reconcilers run.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, ApiResult, AppState, ErrorBody};
use crate::model::{Engine, Replica};
use crate::state::{Kind, StateStoreExt};

#[utoipa::path(get, path = "/v1/engines", responses(
    (status = 200, body = [Engine]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_engines(State(state): State<AppState>) -> ApiResult<Vec<Engine>> {
    Ok(Json(state.manager.state().list(Kind::Engine)?))
}

#[utoipa::path(get, path = "/v1/engines/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = Engine), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(super) async fn get_engine(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Engine> {
    state
        .manager
        .state()
        .get(Kind::Engine, &name)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("engine", &name))
}

#[utoipa::path(get, path = "/v1/replicas", responses(
    (status = 200, body = [Replica]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_replicas(State(state): State<AppState>) -> ApiResult<Vec<Replica>> {
    Ok(Json(state.manager.state().list(Kind::Replica)?))
}
