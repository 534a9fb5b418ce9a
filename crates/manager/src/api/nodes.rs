//! `/v1/nodes`: the nodes with their disks; a node's zone, tags, scheduling, eviction and
//! disks; removing a node that is gone.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, ErrorBody, JsonObject};
use crate::model::{DiskSpec, Node, Replica, Volume};
use crate::state::{Kind, StateStoreExt};
use crate::validate::{self, FieldError, Validate, schema};

/// A change to a node's spec; fields left out keep their value.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNode {
    /// Zone, for spreading replicas (a name, or empty for none).
    #[serde(default)]
    #[schema(schema_with = schema::zone)]
    pub zone: Option<String>,
    /// Tags for node selectors (replaces the list).
    #[serde(default)]
    #[schema(schema_with = schema::optional_names)]
    pub tags: Option<Vec<String>>,
    /// Whether new replicas may be placed on it.
    #[serde(default)]
    pub allow_scheduling: Option<bool>,
    /// Move its replicas to other nodes (each is rebuilt elsewhere before it is
    /// removed; a volume never has fewer healthy replicas than it wants), or stop that.
    #[serde(default)]
    pub evict: Option<bool>,
    /// Its disks (replaces the list; a disk holding replicas cannot be removed; a
    /// disk's `evict` moves its replicas off it).
    #[serde(default)]
    #[schema(max_items = 64)] // validate::MAX_DISKS
    pub disks: Option<Vec<DiskSpec>>,
}

impl Validate for UpdateNode {
    fn validate(&self) -> Result<(), FieldError> {
        if let Some(zone) = self.zone.as_deref().filter(|z| !z.is_empty()) {
            validate::name("zone", zone)?;
        }
        if let Some(tags) = &self.tags {
            validate::names("tags", tags)?;
        }
        if let Some(disks) = &self.disks {
            if disks.len() > validate::MAX_DISKS {
                return Err(FieldError {
                    field: "disks".into(),
                    reason: format!("at most {} disks, not {}", validate::MAX_DISKS, disks.len()),
                });
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, disk) in disks.iter().enumerate() {
                disk.validate_as(&format!("disks[{i}]"))?;
                if !names.insert(disk.name.as_str()) {
                    return Err(FieldError {
                        field: format!("disks[{i}].name"),
                        reason: format!("disk {} is listed twice", disk.name),
                    });
                }
            }
        }
        Ok(())
    }
}

#[utoipa::path(get, path = "/v1/nodes", responses(
    (status = 200, body = [Node]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_nodes(State(state): State<AppState>) -> ApiResult<Vec<Node>> {
    let nodes: Vec<Node> = state.manager.state().list(Kind::Node)?;
    Ok(Json(nodes.into_iter().map(as_of_now).collect()))
}

/// `node` with `ready` as of now: a node that died wrote `true` last.
fn as_of_now(mut node: Node) -> Node {
    node.status.ready = crate::reconcile::node_is_ready(&node);
    node
}

#[utoipa::path(get, path = "/v1/nodes/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = Node), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub(super) async fn get_node(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Node> {
    let node = state
        .manager
        .state()
        .get(Kind::Node, &name)?
        .ok_or_else(|| ApiError::not_found("node", &name))?;
    Ok(Json(as_of_now(node)))
}

/// Forgets a node that is gone: refused while it holds replicas or an attached volume,
/// and while its manager still reports in (it would be running without a record).
#[utoipa::path(delete, path = "/v1/nodes/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn delete_node(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.manager.state();
    let node: Node = store
        .get(Kind::Node, &name)?
        .ok_or_else(|| ApiError::not_found("node", &name))?;
    let replicas: Vec<Replica> = store.list(Kind::Replica)?;
    let held: Vec<&Replica> = replicas.iter().filter(|r| r.spec.node == name).collect();
    if let Some(first) = held.first() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "node {name} holds {} replicas (replica {} of volume {}, …); move them first \
                 (`node update {name} --evict true`) and remove the node once `node ls` shows \
                 0 replicas left",
                held.len(),
                first.name,
                first.spec.volume
            ),
        ));
    }
    let volumes: Vec<Volume> = store.list(Kind::Volume)?;
    if let Some(attached) = volumes
        .iter()
        .find(|v| v.spec.attached_node.as_deref() == Some(name.as_str()))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "volume {} is attached on node {name}; detach it first",
                attached.name
            ),
        ));
    }
    if crate::reconcile::node_is_ready(&node) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "node {name} is up (its manager reported in lately); stop its `shorthorn up` \
                 first, then remove it"
            ),
        ));
    }
    store.delete(Kind::Node, &name)?;
    tracing::info!(node = %name, "node removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/nodes/{name}", params(("name" = String, Path)),
    request_body = UpdateNode, responses(
    (status = 200, body = Node), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
pub(super) async fn update_node(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<UpdateNode>,
) -> ApiResult<Node> {
    let store = state.manager.state();
    let mut node: Node = store
        .get(Kind::Node, &name)?
        .ok_or_else(|| ApiError::not_found("node", &name))?;
    if let Some(zone) = body.zone {
        node.spec.zone = zone;
    }
    if let Some(tags) = body.tags {
        node.spec.tags = tags;
    }
    if let Some(allow) = body.allow_scheduling {
        node.spec.allow_scheduling = allow;
    }
    // A new eviction is refused when a replica would have nowhere to go.
    let mut newly_evicted: Vec<Option<String>> = Vec::new();
    if let Some(evict) = body.evict {
        if evict && !node.spec.evict {
            newly_evicted.push(None);
        }
        node.spec.evict = evict;
    }
    if let Some(disks) = &body.disks {
        newly_evicted.extend(
            disks
                .iter()
                .filter(|d| d.evict)
                .filter(|d| {
                    !node
                        .spec
                        .disks
                        .iter()
                        .any(|old| old.name == d.name && old.evict)
                })
                .map(|d| Some(d.name.clone())),
        );
    }
    for disk in &newly_evicted {
        if let Some(why) = state.manager.eviction_blocked(&name, disk.as_deref())? {
            return Err(ApiError::new(StatusCode::CONFLICT, why));
        }
    }
    if let Some(disks) = body.disks {
        let replicas: Vec<Replica> = store.list(Kind::Replica)?;
        if let Some(used) = replicas
            .iter()
            .find(|r| r.spec.node == name && !disks.iter().any(|d| d.name == r.spec.disk))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "disk {} holds replica {} of volume {}; it cannot be removed until its \
                     replicas are gone (evict it first: `node update {name} --evict-disk {}=true`)",
                    used.spec.disk, used.name, used.spec.volume, used.spec.disk
                ),
            ));
        }
        node.spec.disks = disks;
    }
    store.put(Kind::Node, &name, &node)?;
    state.manager.poke();
    Ok(Json(node))
}
