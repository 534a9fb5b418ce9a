//! `/v1/cluster`: which manager answered and which leads.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, AppState, ErrorBody};

/// Which manager leads, and which one answered.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterInfo {
    /// The node of the manager that answered.
    pub node: String,
    /// The leader's node: it reads backup targets and deletes backups. None for a few
    /// seconds after a leader died, until another manager takes the role.
    pub leader: Option<String>,
    /// `embedded` (one manager) or `etcd` (managers share it).
    pub store: String,
}

#[utoipa::path(get, path = "/v1/cluster", responses(
    (status = 200, body = ClusterInfo), (status = 401, body = ErrorBody)))]
pub(super) async fn cluster_info(State(state): State<AppState>) -> ApiResult<ClusterInfo> {
    let store = state.manager.state();
    let node = state.manager.node().to_string();
    let leader = match store.kind() {
        "embedded" => Some(node.clone()),
        _ => store.leader()?,
    };
    Ok(Json(ClusterInfo {
        node,
        leader,
        store: store.kind().to_string(),
    }))
}
