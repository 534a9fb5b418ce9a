//! The REST API: volumes, nodes and settings, as JSON, behind a bearer token. The OpenAPI
//! document is served at `/v1/openapi.json` (no token needed), Prometheus metrics at
//! `/metrics`. Errors are `{"message": "..."}` with a fitting status code. The node
//! agent's routes (`/agent/v1/…`, for other nodes' managers) take the node credential
//! instead, and never the user token: they start root processes on this node.
//!
//! This file holds the token checks, the router and the user API's OpenAPI document;
//! each resource's request types and handlers are in a file of its own. The error shape
//! and the JSON body extractor are shared with the agent's routes
//! ([`shorthorn_agent::http`]), which the agent crate serves ([`shorthorn_agent::routes`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use utoipa::OpenApi;

use crate::model::{
    Activation, Backup, BackupSpec, BackupState, BackupStatus, BackupTarget, BackupTargetSpec,
    BackupTargetStatus, DataLocality, DiskSpec, DiskStatus, Engine, EngineReplicaStatus,
    EngineSpec, EngineState, EngineStatus, EngineTuning, Event, JobTask, Node, NodeSpec,
    NodeStatus, RecurringJob, RecurringJobSpec, RecurringJobStatus, Replica, ReplicaSpec,
    ReplicaState, ReplicaStatus, Robustness, Settings, StandbySpec, StandbyStatus, Volume,
    VolumeSpec, VolumeState, VolumeStatus,
};
use crate::reconcile::Manager;
use crate::scheduler::SchedulingSettings;
use shorthorn_agent::http::BearerAuth;
pub use shorthorn_agent::http::{ApiError, ApiResult, ErrorBody, JsonObject};
use shorthorn_agent::routes::{AGENT_OPENAPI_PATH, agent_openapi_json};

mod backups;
mod cluster;
mod engines;
mod events;
mod io;
mod jobs;
mod metrics;
mod nodes;
mod session;
mod settings;
mod snapshots;
mod ui;
mod volumes;
mod watch;

pub use backups::{CreateBackup, SetBackupTarget};
pub use cluster::ClusterInfo;
pub use io::{IoRates, IoSample};
pub use jobs::CreateJob;
pub use nodes::UpdateNode;
pub use session::{Login, SessionInfo};
pub use settings::SetSetting;
pub use snapshots::{CreateSnapshot, Snapshot};
pub use volumes::{
    ActivateVolume, AttachVolume, CreateVolume, ExpandVolume, SetDataLocality, SetReplicaCount,
    VolumeDetail, VolumeJobs,
};
pub use watch::WatchMessage;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(title = "Shorthorn manager API", version = "1"),
    paths(
        volumes::list_volumes, volumes::create_volume, volumes::get_volume, volumes::delete_volume, volumes::attach_volume,
        volumes::detach_volume, volumes::expand_volume, volumes::set_volume_jobs, jobs::list_jobs, jobs::create_job, jobs::get_job, jobs::delete_job,
        nodes::list_nodes, nodes::get_node, nodes::update_node, nodes::delete_node, settings::get_settings, settings::set_setting, engines::list_engines, engines::get_engine,
        engines::list_replicas, backups::list_backup_targets, backups::set_backup_target, backups::delete_backup_target,
        backups::list_backups, backups::create_backup, backups::get_backup, backups::delete_backup, cluster::cluster_info,
        snapshots::list_snapshots, snapshots::create_snapshot, snapshots::get_snapshot, snapshots::delete_snapshot,
        snapshots::revert_snapshot, snapshots::purge_snapshots, volumes::set_replica_count, volumes::set_data_locality,
        volumes::remove_volume_replica, volumes::salvage_volume, volumes::sync_volume, volumes::activate_volume, events::list_events, watch::watch,
        session::login, session::get_session, session::logout, io::volume_io
    ),
    components(schemas(
        ErrorBody, CreateVolume, AttachVolume, SetSetting, VolumeDetail, Volume, VolumeSpec,
        VolumeStatus, VolumeState, Robustness, Replica, ReplicaSpec, ReplicaStatus,
        ReplicaState, Node, NodeSpec, NodeStatus, DiskSpec, DiskStatus, Settings, EngineTuning,
        SchedulingSettings, VolumeJobs, ExpandVolume, UpdateNode, CreateJob, RecurringJob, RecurringJobSpec,
        RecurringJobStatus, JobTask, Engine, EngineSpec, EngineStatus, EngineState,
        EngineReplicaStatus, BackupTarget, BackupTargetSpec, BackupTargetStatus, Backup,
        BackupSpec, BackupStatus, BackupState, SetBackupTarget, CreateBackup, ClusterInfo, Snapshot, CreateSnapshot, SetReplicaCount, SetDataLocality, DataLocality, Event, WatchMessage, Login, SessionInfo, IoSample, IoRates,
        ActivateVolume, StandbySpec, StandbyStatus, Activation
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    add_setting_defaults(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Gives every setting's property in the document its default, taken from
/// `Settings::default()` (one source for the code and the document), so that clients —
/// the web UI's settings page — can show it.
fn add_setting_defaults(doc: &mut serde_json::Value) {
    fn visit(
        schema: &mut serde_json::Value,
        defaults: &std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        if let Some(properties) = object.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for (name, property) in properties {
                if let (Some(default), Some(property)) =
                    (defaults.get(name), property.as_object_mut())
                {
                    property.insert("default".into(), default.clone());
                }
            }
        }
        for nested in ["allOf", "oneOf", "anyOf"] {
            if let Some(parts) = object.get_mut(nested).and_then(|p| p.as_array_mut()) {
                parts.iter_mut().for_each(|part| visit(part, defaults));
            }
        }
    }
    let defaults = Settings::default().to_map();
    for schema in ["Settings", "SchedulingSettings", "EngineTuning"] {
        if let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{schema}")) {
            visit(schema, &defaults);
        }
    }
}

#[derive(Clone)]
struct AppState {
    manager: Arc<Manager>,
    /// What users (and the CLI) hold: the user routes take it.
    user_token: Arc<str>,
    /// What the nodes of the cluster hold: the agent routes take it.
    node_token: Arc<str>,
    /// The web UI's browser sessions: the user routes take one instead of the token.
    sessions: Arc<session::Sessions>,
}

/// The API's routes over `manager`: the user routes require `user_token`, the agent
/// routes `node_token`.
pub fn router(manager: Arc<Manager>, user_token: &str, node_token: &str) -> Router {
    let state = AppState {
        manager,
        user_token: user_token.into(),
        node_token: node_token.into(),
        sessions: Arc::default(),
    };
    let user_routes = Router::new()
        .route(
            "/v1/volumes",
            get(volumes::list_volumes).post(volumes::create_volume),
        )
        .route(
            "/v1/volumes/{name}",
            get(volumes::get_volume).delete(volumes::delete_volume),
        )
        .route("/v1/volumes/{name}/attach", post(volumes::attach_volume))
        .route("/v1/volumes/{name}/detach", post(volumes::detach_volume))
        .route("/v1/volumes/{name}/expand", post(volumes::expand_volume))
        .route(
            "/v1/volumes/{name}/replica-count",
            post(volumes::set_replica_count),
        )
        .route(
            "/v1/volumes/{name}/replicas/{replica}",
            axum::routing::delete(volumes::remove_volume_replica),
        )
        .route(
            "/v1/volumes/{name}/data-locality",
            post(volumes::set_data_locality),
        )
        .route("/v1/volumes/{name}/salvage", post(volumes::salvage_volume))
        .route("/v1/volumes/{name}/sync", post(volumes::sync_volume))
        .route(
            "/v1/volumes/{name}/activate",
            post(volumes::activate_volume),
        )
        .route("/v1/volumes/{name}/io", get(io::volume_io))
        .route(
            "/v1/volumes/{name}/snapshots",
            get(snapshots::list_snapshots).post(snapshots::create_snapshot),
        )
        .route(
            "/v1/volumes/{name}/snapshots/{snapshot}",
            get(snapshots::get_snapshot).delete(snapshots::delete_snapshot),
        )
        .route(
            "/v1/volumes/{name}/snapshots/{snapshot}/revert",
            post(snapshots::revert_snapshot),
        )
        .route(
            "/v1/volumes/{name}/snapshot-purge",
            post(snapshots::purge_snapshots),
        )
        .route(
            "/v1/volumes/{name}/recurring-jobs",
            put(volumes::set_volume_jobs),
        )
        .route("/v1/engines", get(engines::list_engines))
        .route("/v1/engines/{name}", get(engines::get_engine))
        .route("/v1/replicas", get(engines::list_replicas))
        .route("/v1/backup-targets", get(backups::list_backup_targets))
        .route(
            "/v1/backup-targets/{name}",
            put(backups::set_backup_target).delete(backups::delete_backup_target),
        )
        .route(
            "/v1/backups",
            get(backups::list_backups).post(backups::create_backup),
        )
        .route(
            "/v1/backups/{name}",
            get(backups::get_backup).delete(backups::delete_backup),
        )
        .route("/v1/cluster", get(cluster::cluster_info))
        .route("/v1/events", get(events::list_events))
        .route("/v1/watch", get(watch::watch))
        .route(
            "/v1/recurring-jobs",
            get(jobs::list_jobs).post(jobs::create_job),
        )
        .route(
            "/v1/recurring-jobs/{name}",
            get(jobs::get_job).delete(jobs::delete_job),
        )
        .route("/v1/nodes", get(nodes::list_nodes))
        .route(
            "/v1/nodes/{name}",
            get(nodes::get_node)
                .put(nodes::update_node)
                .delete(nodes::delete_node),
        )
        .route("/v1/settings", get(settings::get_settings))
        .route("/v1/settings/{name}", put(settings::set_setting))
        .route("/metrics", get(metrics::metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_user_token,
        ));
    // This node's agent, for the managers of other nodes (not in the public API).
    let agent_routes = shorthorn_agent::routes::router(state.manager.agent().clone()).layer(
        middleware::from_fn_with_state(state.clone(), require_node_token),
    );
    Router::new()
        .route(
            OPENAPI_PATH,
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi_json()) }),
        )
        .route(
            AGENT_OPENAPI_PATH,
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    agent_openapi_json(),
                )
            }),
        )
        .route(
            "/v1/session",
            get(session::get_session)
                .post(session::login)
                .delete(session::logout),
        )
        .route("/", get(ui::index))
        .route("/assets/{*path}", get(ui::built_asset))
        .route(
            "/favicon.svg",
            get(|| ui::file(axum::extract::Path("favicon.svg".into()))),
        )
        .merge(user_routes)
        .with_state(state)
        .merge(agent_routes)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
}

/// The user routes take the user token, or the web UI's session cookie (with its CSRF
/// token on requests that change something); the node credential is refused there too,
/// so a node's credential only ever drives agents.
async fn require_user_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if bearer(&request).is_none() {
        match state.sessions.check(&request) {
            session::SessionCheck::Allowed => return next.run(request).await,
            session::SessionCheck::MissingCsrf => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a request that changes something needs the session's X-CSRF-Token header",
                )
                .into_response();
            }
            session::SessionCheck::NoSession => {}
        }
    }
    match bearer(&request) {
        Some(token) if constant_time_eq(token.as_bytes(), state.user_token.as_bytes()) => {
            next.run(request).await
        }
        Some(token) if constant_time_eq(token.as_bytes(), state.node_token.as_bytes()) => {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "this route is for users; it takes the user token (the data directory's token file), not the node credential",
            )
            .into_response()
        }
        Some(_) => unauthorized("wrong token"),
        None => unauthorized(
            "missing Authorization: Bearer TOKEN (the token is in the data directory's token file)",
        ),
    }
}

/// The agent routes take the node credential only: they start root processes and
/// remove replica directories on this node.
async fn require_node_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match bearer(&request) {
        Some(token) if constant_time_eq(token.as_bytes(), state.node_token.as_bytes()) => {
            next.run(request).await
        }
        Some(token) if constant_time_eq(token.as_bytes(), state.user_token.as_bytes()) => {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "this route is for node agents; it takes the node credential (the data directory's node-token file), not the user token",
            )
            .into_response()
        }
        Some(_) => unauthorized("wrong node credential"),
        None => unauthorized(
            "missing Authorization: Bearer NODE-TOKEN (the node credential is in the data directory's node-token file)",
        ),
    }
}

/// The bearer token of a request, if it has one.
fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

fn unauthorized(refusal: &'static str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, refusal).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate;

    /// The web UI's client types are generated (`npm run types` in `ui/`) from a copy of
    /// the document in `ui/src/api/openapi.json`: it must be what the API serves.
    /// `SHORTHORN_WRITE_OPENAPI=1` rewrites it.
    #[test]
    fn the_ui_has_the_current_document() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/api/openapi.json");
        let current = openapi_json() + "\n";
        if std::env::var_os("SHORTHORN_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &current).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == current,
            "{} is not the API's document: run `SHORTHORN_WRITE_OPENAPI=1 cargo test -p shorthorn-manager the_ui_has_the_current_document`, then `npm run types` in ui/",
            path.display()
        );
    }

    /// Every setting the API takes has its default in the document.
    #[test]
    fn the_document_gives_every_setting_its_default() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let text = doc["components"]["schemas"].to_string();
        for (name, default) in Settings::default().to_map() {
            let mut found = false;
            for schema in ["Settings", "SchedulingSettings", "EngineTuning"] {
                let schema = &doc["components"]["schemas"][schema];
                let mut parts = vec![schema];
                parts.extend(schema["allOf"].as_array().into_iter().flatten());
                found |= parts
                    .iter()
                    .any(|part| part["properties"][&name]["default"] == default);
            }
            assert!(found, "setting {name}: no default {default} in {text}");
        }
    }

    /// The request bodies' schemas state the rules the API enforces, so that a client
    /// (and schemathesis) can know them; what is optional stays optional.
    #[test]
    fn the_document_states_the_field_rules() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let create = &schemas["CreateVolume"];
        assert_eq!(create["required"], serde_json::json!(["name", "size"]));
        let selector = &create["properties"]["node_selector"];
        assert_eq!(selector["items"]["pattern"], validate::NAME_PATTERN);
        assert_eq!(selector["maxItems"], validate::MAX_LIST);
        assert_eq!(create["properties"]["name"]["maxLength"], 63);
        let node = &schemas["UpdateNode"];
        assert!(node.get("required").is_none(), "{node}");
        assert_eq!(node["properties"]["tags"]["items"]["maxLength"], 63);
        let backup = &schemas["CreateBackup"];
        assert_eq!(
            backup["properties"]["labels"]["maxProperties"],
            validate::MAX_LABELS
        );
        assert_eq!(
            schemas["RecurringJobSpec"]["properties"]["retain"]["maximum"],
            1000
        );
    }
}
