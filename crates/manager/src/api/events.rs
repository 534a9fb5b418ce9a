//! `/v1/events`: what the managers did and saw, oldest first.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::{ApiResult, AppState, ErrorBody};
use crate::model::Event;

/// Which events to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct EventFilter {
    /// Only those about this volume (its replicas, snapshots and backups included).
    volume: Option<String>,
}

#[utoipa::path(get, path = "/v1/events", params(EventFilter), responses(
    (status = 200, body = [Event]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_events(
    State(state): State<AppState>,
    Query(filter): Query<EventFilter>,
) -> ApiResult<Vec<Event>> {
    let store = state.manager.state();
    Ok(Json(crate::events::list(
        store.as_ref(),
        filter.volume.as_deref(),
    )?))
}
