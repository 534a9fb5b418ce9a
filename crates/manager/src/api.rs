//! The REST API: volumes, nodes and settings, as JSON, behind a bearer token. The OpenAPI
//! document is served at `/v1/openapi.json` (no token needed), Prometheus metrics at
//! `/metrics`. Errors are `{"message": "..."}` with a fitting status code. The node
//! agent's routes (`/agent/v1/…`, for other nodes' managers) take the node credential
//! instead, and never the user token: they start root processes on this node.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::agent::{
    AgentError, EngineLaunch, ProcessReport, RemoveReplica, ReplicaLaunch, RestoreLaunch,
};
use crate::model::{
    Backup, BackupSpec, BackupState, BackupStatus, BackupTarget, BackupTargetSpec,
    BackupTargetStatus, DiskSpec, DiskStatus, Engine, EngineReplicaStatus, EngineSpec, EngineState,
    EngineStatus, EngineTuning, JobTask, Node, NodeSpec, NodeStatus, RecurringJob,
    RecurringJobSpec, RecurringJobStatus, Replica, ReplicaSpec, ReplicaState, ReplicaStatus,
    Robustness, Settings, Volume, VolumeSpec, VolumeState, VolumeStatus,
};
use crate::reconcile::{Manager, SETTINGS_NAME};
use crate::scheduler::SchedulingSettings;
use crate::state::{Kind, StateStoreExt};
use crate::validate::{self, FieldError, Validate, schema};

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";
/// Where the node agent's OpenAPI document is served.
pub const AGENT_OPENAPI_PATH: &str = "/agent/v1/openapi.json";

/// An error as the API returns it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub message: String,
}

/// An API error: a status code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn not_found(what: &str, name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no {what} {name:?}"))
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> ApiError {
        match e {
            AgentError::Invalid(message) => ApiError::bad_request(message),
            AgentError::Refused(message) => ApiError::new(StatusCode::CONFLICT, message),
            AgentError::Failed(e) => e.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                message: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// A request body: a JSON object, decoded into `T`. (axum's `Json` would also take an
/// array, which serde reads into a struct positionally.)
pub struct JsonObject<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Validate> FromRequest<S> for JsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|ct| {
                let ct = ct.trim();
                ct.eq_ignore_ascii_case("application/json") || ct.ends_with("+json")
            });
        if !json {
            return Err(ApiError::bad_request(
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            ApiError::bad_request(format!("invalid JSON body: {field}{}", e.inner()))
        })?;
        deserializer
            .end()
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        T::validate(&value).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(JsonObject(value))
    }
}

/// A request to create a volume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Name: 1–63 letters, digits, `-`, `_`, `.`.
    #[schema(schema_with = schema::name)]
    pub name: String,
    /// Size in bytes, a multiple of 4096, at most 2^50 (1 PiB).
    #[schema(minimum = 4096, maximum = 1125899906842624_u64, multiple_of = 4096)]
    pub size: u64,
    /// Replica count [default: the `default_replica_count` setting].
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16)]
    pub replicas: Option<usize>,
    /// Tags every replica's node must have.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub node_selector: Vec<String>,
    /// Tags every replica's disk must have.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub disk_selector: Vec<String>,
    /// Recurring jobs to run for it, by name.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub recurring_jobs: Vec<String>,
    /// Groups of recurring jobs to run for it.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub recurring_job_groups: Vec<String>,
    /// A backup to restore it from (`TARGET?backup=NAME&volume=VOLUME`, as `volume
    /// backups` or `backup ls` print it); `size` must be the backup's volume size.
    #[serde(default)]
    #[schema(schema_with = schema::optional_url)]
    pub from_backup: Option<String>,
}

/// Which recurring jobs run for a volume.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeJobs {
    /// Jobs, by name.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub jobs: Vec<String>,
    /// Job groups.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub groups: Vec<String>,
}

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
    /// Its disks (replaces the list; a disk holding replicas cannot be removed).
    #[serde(default)]
    #[schema(max_items = 64)] // validate::MAX_DISKS
    pub disks: Option<Vec<DiskSpec>>,
}

/// A request to grow a volume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpandVolume {
    /// The new size in bytes: larger than now, a multiple of 4096, at most 2^50.
    #[schema(minimum = 4096, maximum = 1125899906842624_u64, multiple_of = 4096)]
    pub size: u64,
}

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

/// A request to set a backup target.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBackupTarget {
    /// `s3://bucket@region/path`, `file:///path` or `nfs://host:/path`.
    #[schema(schema_with = schema::url)]
    pub url: String,
    /// Seconds between two reads of its backup list [default: 300].
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub poll_interval: Option<u64>,
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

/// A request to attach a volume.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    /// The node to attach to [default: the node serving the API].
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub node: Option<String>,
}

/// A request to change one setting.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSetting {
    /// The new value (its JSON type must match the setting's).
    pub value: serde_json::Value,
}

impl Validate for CreateVolume {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("name", &self.name)?;
        validate::size("size", self.size)?;
        if let Some(replicas) = self.replicas {
            validate::range("replicas", replicas, 1..=validate::MAX_REPLICAS)?;
        }
        validate::names("node_selector", &self.node_selector)?;
        validate::names("disk_selector", &self.disk_selector)?;
        validate::names("recurring_jobs", &self.recurring_jobs)?;
        validate::names("recurring_job_groups", &self.recurring_job_groups)?;
        if let Some(url) = &self.from_backup {
            validate::url("from_backup", url)?;
        }
        Ok(())
    }
}

impl Validate for VolumeJobs {
    fn validate(&self) -> Result<(), FieldError> {
        validate::names("jobs", &self.jobs)?;
        validate::names("groups", &self.groups)
    }
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

impl Validate for ExpandVolume {
    fn validate(&self) -> Result<(), FieldError> {
        validate::size("size", self.size)
    }
}

impl Validate for CreateJob {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("name", &self.name)?;
        self.spec.validate_as("spec")
    }
}

impl Validate for SetBackupTarget {
    fn validate(&self) -> Result<(), FieldError> {
        validate::url("url", &self.url)?;
        if let Some(interval) = self.poll_interval {
            validate::range("poll_interval", interval, 1..=86400)?;
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

impl Validate for AttachVolume {
    fn validate(&self) -> Result<(), FieldError> {
        validate::optional_name("node", self.node.as_deref())
    }
}

impl Validate for SetSetting {
    /// The value's type and range depend on the setting; the handler checks them.
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// A volume with its replicas.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VolumeDetail {
    /// The volume.
    #[serde(flatten)]
    pub volume: Volume,
    /// Its replicas.
    pub replicas: Vec<Replica>,
    /// Its engine (none before its first reconcile).
    pub engine: Option<Engine>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Shorthorn manager API", version = "1"),
    paths(
        list_volumes, create_volume, get_volume, delete_volume, attach_volume,
        detach_volume, expand_volume, set_volume_jobs, list_jobs, create_job, get_job, delete_job,
        list_nodes, update_node, get_settings, set_setting, list_engines, get_engine,
        list_replicas, list_backup_targets, set_backup_target, delete_backup_target,
        list_backups, create_backup, get_backup, delete_backup, cluster_info
    ),
    components(schemas(
        ErrorBody, CreateVolume, AttachVolume, SetSetting, VolumeDetail, Volume, VolumeSpec,
        VolumeStatus, VolumeState, Robustness, Replica, ReplicaSpec, ReplicaStatus,
        ReplicaState, Node, NodeSpec, NodeStatus, DiskSpec, DiskStatus, Settings, EngineTuning,
        SchedulingSettings, VolumeJobs, ExpandVolume, UpdateNode, CreateJob, RecurringJob, RecurringJobSpec,
        RecurringJobStatus, JobTask, Engine, EngineSpec, EngineStatus, EngineState,
        EngineReplicaStatus, BackupTarget, BackupTargetSpec, BackupTargetStatus, Backup,
        BackupSpec, BackupStatus, BackupState, SetBackupTarget, CreateBackup, ClusterInfo
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// The node agent's routes: for the managers of the cluster's nodes, with the node
/// credential; documented apart from the user API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Shorthorn node agent API", version = "1"),
    paths(
        agent_start_replica, agent_remove_replica, agent_start_engine, agent_start_restore,
        agent_process, agent_stop
    ),
    components(schemas(
        ErrorBody, ReplicaLaunch, EngineLaunch, EngineTuning, RestoreLaunch, RemoveReplica,
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

#[derive(Clone)]
struct AppState {
    manager: Arc<Manager>,
    /// What users (and the CLI) hold: the user routes take it.
    user_token: Arc<str>,
    /// What the nodes of the cluster hold: the agent routes take it.
    node_token: Arc<str>,
}

/// The API's routes over `manager`: the user routes require `user_token`, the agent
/// routes `node_token`.
pub fn router(manager: Arc<Manager>, user_token: &str, node_token: &str) -> Router {
    let state = AppState {
        manager,
        user_token: user_token.into(),
        node_token: node_token.into(),
    };
    let user_routes = Router::new()
        .route("/v1/volumes", get(list_volumes).post(create_volume))
        .route("/v1/volumes/{name}", get(get_volume).delete(delete_volume))
        .route("/v1/volumes/{name}/attach", post(attach_volume))
        .route("/v1/volumes/{name}/detach", post(detach_volume))
        .route("/v1/volumes/{name}/expand", post(expand_volume))
        .route("/v1/volumes/{name}/recurring-jobs", put(set_volume_jobs))
        .route("/v1/engines", get(list_engines))
        .route("/v1/engines/{name}", get(get_engine))
        .route("/v1/replicas", get(list_replicas))
        .route("/v1/backup-targets", get(list_backup_targets))
        .route(
            "/v1/backup-targets/{name}",
            put(set_backup_target).delete(delete_backup_target),
        )
        .route("/v1/backups", get(list_backups).post(create_backup))
        .route("/v1/backups/{name}", get(get_backup).delete(delete_backup))
        .route("/v1/cluster", get(cluster_info))
        .route("/v1/recurring-jobs", get(list_jobs).post(create_job))
        .route("/v1/recurring-jobs/{name}", get(get_job).delete(delete_job))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{name}", put(update_node))
        .route("/v1/settings", get(get_settings))
        .route("/v1/settings/{name}", put(set_setting))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_user_token,
        ));
    // This node's agent, for the managers of other nodes (not in the public API).
    let agent_routes = Router::new()
        .route("/agent/v1/replicas", post(agent_start_replica))
        .route(
            "/agent/v1/replicas/{name}/remove",
            post(agent_remove_replica),
        )
        .route("/agent/v1/engines", post(agent_start_engine))
        .route("/agent/v1/restores", post(agent_start_restore))
        .route(
            "/agent/v1/processes/{name}",
            get(agent_process).delete(agent_stop),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_node_token,
        ));
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
        .merge(user_routes)
        .merge(agent_routes)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .with_state(state)
}

/// The user routes take the user token; the node credential is refused there too, so
/// a node's credential only ever drives agents.
async fn require_user_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
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

#[utoipa::path(get, path = "/v1/volumes", responses(
    (status = 200, body = [Volume]), (status = 401, body = ErrorBody)))]
async fn list_volumes(State(state): State<AppState>) -> ApiResult<Vec<Volume>> {
    Ok(Json(state.manager.state().list(Kind::Volume)?))
}

#[utoipa::path(post, path = "/v1/volumes", request_body = CreateVolume, responses(
    (status = 201, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_volume(
    State(state): State<AppState>,
    JsonObject(body): JsonObject<CreateVolume>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let request = body;
    let settings = state.manager.settings()?;
    let replicas = request.replicas.unwrap_or(settings.default_replica_count);
    if let Some(url) = &request.from_backup {
        check_backup_size(url, request.size).await?;
    }
    let store = state.manager.state();
    if store.get::<Volume>(Kind::Volume, &request.name)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("volume {:?} exists", request.name),
        ));
    }
    let volume = Volume {
        name: request.name.clone(),
        spec: VolumeSpec {
            size: request.size,
            replicas,
            node_selector: request.node_selector,
            disk_selector: request.disk_selector,
            attached_node: None,
            recurring_jobs: request.recurring_jobs,
            recurring_job_groups: request.recurring_job_groups,
            from_backup: request.from_backup,
        },
        status: VolumeStatus::default(),
    };
    store.put(Kind::Volume, &volume.name, &volume)?;
    state.manager.poke();
    Ok((StatusCode::CREATED, Json(volume)))
}

/// Refuses a backup to restore a new volume from that cannot be read, or whose volume
/// size is not `size` (the restored replicas hold exactly the backup's size).
async fn check_backup_size(url: &str, size: u64) -> Result<(), ApiError> {
    let parsed = shorthorn_backup::BackupUrl::parse(url)
        .map_err(|e| ApiError::bad_request(format!("from_backup: {e:#}")))?;
    let record = async {
        let target = shorthorn_backup::Target::open(
            &parsed.target,
            &shorthorn_backup::TargetOptions::default(),
        )?;
        shorthorn_backup::get_backup(&target, &parsed.volume, &parsed.backup).await
    }
    .await
    .map_err(|e| ApiError::bad_request(format!("from_backup: {e:#}")))?;
    if record.volume_size != size {
        return Err(ApiError::bad_request(format!(
            "from_backup holds a volume of {} bytes; create the volume with that size",
            record.volume_size
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/volumes/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = VolumeDetail), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
async fn get_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<VolumeDetail> {
    let store = state.manager.state();
    let volume: Volume = store
        .get(Kind::Volume, &name)?
        .ok_or_else(|| ApiError::not_found("volume", &name))?;
    let replicas = store
        .list::<Replica>(Kind::Replica)?
        .into_iter()
        .filter(|r| r.spec.volume == name)
        .collect();
    let engine = store.get(Kind::Engine, &Engine::name_for(&name))?;
    Ok(Json(VolumeDetail {
        volume,
        replicas,
        engine,
    }))
}

#[utoipa::path(get, path = "/v1/engines", responses(
    (status = 200, body = [Engine]), (status = 401, body = ErrorBody)))]
async fn list_engines(State(state): State<AppState>) -> ApiResult<Vec<Engine>> {
    Ok(Json(state.manager.state().list(Kind::Engine)?))
}

#[utoipa::path(get, path = "/v1/engines/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = Engine), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
async fn get_engine(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Engine> {
    state
        .manager
        .state()
        .get(Kind::Engine, &name)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("engine", &name))
}

#[utoipa::path(get, path = "/v1/replicas", responses(
    (status = 200, body = [Replica]), (status = 401, body = ErrorBody)))]
async fn list_replicas(State(state): State<AppState>) -> ApiResult<Vec<Replica>> {
    Ok(Json(state.manager.state().list(Kind::Replica)?))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", params(("name" = String, Path)), responses(
    (status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
async fn delete_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let volume: Volume = state
        .manager
        .state()
        .get(Kind::Volume, &name)?
        .ok_or_else(|| ApiError::not_found("volume", &name))?;
    if let Some(node) = volume.spec.attached_node {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("volume {name:?} is attached to {node}; detach it first"),
        ));
    }
    state.manager.delete_volume(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/volumes/{name}/attach", params(("name" = String, Path)),
    request_body = AttachVolume, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
async fn attach_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<AttachVolume>,
) -> ApiResult<Volume> {
    let request = body;
    let node = request
        .node
        .unwrap_or_else(|| state.manager.node().to_string());
    if state
        .manager
        .state()
        .get::<Node>(Kind::Node, &node)?
        .is_none()
    {
        return Err(ApiError::bad_request(format!("no node {node:?}")));
    }
    exists(&state, &name)?;
    let volume = state
        .manager
        .update_volume(&name, |volume| match &volume.spec.attached_node {
            Some(other) if *other != node => {
                anyhow::bail!("volume {name:?} is attached to {other}; detach it first")
            }
            _ => {
                volume.spec.attached_node = Some(node.clone());
                Ok(())
            }
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))?;
    Ok(Json(volume))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/detach", params(("name" = String, Path)),
    responses((status = 200, body = Volume), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
async fn detach_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Volume> {
    exists(&state, &name)?;
    let volume = state
        .manager
        .update_volume(&name, |volume| {
            volume.spec.attached_node = None;
            Ok(())
        })
        .await?;
    Ok(Json(volume))
}

fn exists(state: &AppState, name: &str) -> Result<(), ApiError> {
    match state.manager.state().get::<Volume>(Kind::Volume, name)? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("volume", name)),
    }
}

#[utoipa::path(post, path = "/v1/volumes/{name}/expand", params(("name" = String, Path)),
    request_body = ExpandVolume, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
async fn expand_volume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<ExpandVolume>,
) -> ApiResult<Volume> {
    let request = body;
    exists(&state, &name)?;
    let volume = state
        .manager
        .expand_volume(&name, request.size)
        .await
        .map_err(|e| match e {
            crate::reconcile::ExpandError::Invalid(message) => ApiError::bad_request(message),
            crate::reconcile::ExpandError::Busy(message) => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            crate::reconcile::ExpandError::Failed(e) => e.into(),
        })?;
    Ok(Json(volume))
}

#[utoipa::path(put, path = "/v1/volumes/{name}/recurring-jobs", params(("name" = String, Path)),
    request_body = VolumeJobs, responses(
    (status = 200, body = Volume), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_volume_jobs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<VolumeJobs>,
) -> ApiResult<Volume> {
    let request = body;
    exists(&state, &name)?;
    for job in &request.jobs {
        if state
            .manager
            .state()
            .get::<RecurringJob>(Kind::RecurringJob, job)?
            .is_none()
        {
            return Err(ApiError::bad_request(format!("no recurring job {job:?}")));
        }
    }
    let volume = state
        .manager
        .update_volume(&name, |volume| {
            volume.spec.recurring_jobs.clone_from(&request.jobs);
            volume.spec.recurring_job_groups.clone_from(&request.groups);
            Ok(())
        })
        .await?;
    Ok(Json(volume))
}

#[utoipa::path(get, path = "/v1/backup-targets", responses(
    (status = 200, body = [BackupTarget]), (status = 401, body = ErrorBody)))]
async fn list_backup_targets(State(state): State<AppState>) -> ApiResult<Vec<BackupTarget>> {
    Ok(Json(state.manager.state().list(Kind::BackupTarget)?))
}

#[utoipa::path(put, path = "/v1/backup-targets/{name}", params(("name" = String, Path)),
    request_body = SetBackupTarget, responses(
    (status = 200, body = BackupTarget), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody)))]
async fn set_backup_target(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(request): JsonObject<SetBackupTarget>,
) -> ApiResult<BackupTarget> {
    shorthorn_block::validate_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    shorthorn_backup::Target::check_url(&request.url)
        .map_err(|e| ApiError::bad_request(format!("url: {e:#}")))?;
    let poll_interval = request.poll_interval.unwrap_or(300);
    let store = state.manager.state();
    let spec = BackupTargetSpec {
        url: request.url,
        poll_interval,
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
async fn delete_backup_target(
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
    Ok(StatusCode::NO_CONTENT)
}

/// Which backups to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct BackupFilter {
    /// Only this volume's.
    volume: Option<String>,
}

#[utoipa::path(get, path = "/v1/backups", params(BackupFilter), responses(
    (status = 200, body = [Backup]), (status = 401, body = ErrorBody)))]
async fn list_backups(
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
async fn create_backup(
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
async fn get_backup(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Backup> {
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
async fn delete_backup(
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

#[utoipa::path(get, path = "/v1/cluster", responses(
    (status = 200, body = ClusterInfo), (status = 401, body = ErrorBody)))]
async fn cluster_info(State(state): State<AppState>) -> ApiResult<ClusterInfo> {
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

#[utoipa::path(get, path = "/v1/recurring-jobs", responses(
    (status = 200, body = [RecurringJob]), (status = 401, body = ErrorBody)))]
async fn list_jobs(State(state): State<AppState>) -> ApiResult<Vec<RecurringJob>> {
    Ok(Json(state.manager.state().list(Kind::RecurringJob)?))
}

#[utoipa::path(post, path = "/v1/recurring-jobs", request_body = CreateJob, responses(
    (status = 201, body = RecurringJob), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_job(
    State(state): State<AppState>,
    JsonObject(body): JsonObject<CreateJob>,
) -> Result<(StatusCode, Json<RecurringJob>), ApiError> {
    let request = body;
    crate::jobs::parse_cron(&request.spec.cron)
        .map_err(|e| ApiError::bad_request(format!("spec.cron: {e:#}")))?;
    if request.spec.task == JobTask::Backup {
        // A URL must parse; a target named (or `default`) may be set later.
        if let Some(target) = request.spec.target.as_deref().filter(|t| t.contains("://")) {
            shorthorn_backup::Target::check_url(target)
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
async fn get_job(
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
async fn delete_job(
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

#[utoipa::path(get, path = "/v1/nodes", responses(
    (status = 200, body = [Node]), (status = 401, body = ErrorBody)))]
async fn list_nodes(State(state): State<AppState>) -> ApiResult<Vec<Node>> {
    Ok(Json(state.manager.state().list(Kind::Node)?))
}

#[utoipa::path(put, path = "/v1/nodes/{name}", params(("name" = String, Path)),
    request_body = UpdateNode, responses(
    (status = 200, body = Node), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
async fn update_node(
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
    if let Some(disks) = body.disks {
        let replicas: Vec<Replica> = store.list(Kind::Replica)?;
        if let Some(used) = replicas
            .iter()
            .find(|r| r.spec.node == name && !disks.iter().any(|d| d.name == r.spec.disk))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "disk {} holds replica {}; it cannot be removed",
                    used.spec.disk, used.name
                ),
            ));
        }
        node.spec.disks = disks;
    }
    store.put(Kind::Node, &name, &node)?;
    state.manager.poke();
    Ok(Json(node))
}

#[utoipa::path(get, path = "/v1/settings", responses(
    (status = 200, body = Settings), (status = 401, body = ErrorBody)))]
async fn get_settings(State(state): State<AppState>) -> ApiResult<Settings> {
    Ok(Json(state.manager.settings()?))
}

#[utoipa::path(put, path = "/v1/settings/{name}", params(("name" = String, Path)),
    request_body = SetSetting, responses(
    (status = 200, body = Settings), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_setting(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<SetSetting>,
) -> ApiResult<Settings> {
    let request = body;
    let mut map = state.manager.settings()?.to_map();
    let Some(current) = map.get_mut(&name) else {
        return Err(ApiError::not_found("setting", &name));
    };
    *current = request.value;
    let object = serde_json::Value::Object(map.into_iter().collect());
    let settings: Settings = serde_json::from_value(object)
        .map_err(|e| ApiError::bad_request(format!("setting {name}: {e}")))?;
    settings
        .validate()
        .map_err(|e| ApiError::bad_request(format!("setting {name}: {e}")))?;
    state
        .manager
        .state()
        .put(Kind::Settings, SETTINGS_NAME, &settings)?;
    state.manager.poke();
    Ok(Json(settings))
}

#[utoipa::path(post, path = "/agent/v1/restores", request_body = RestoreLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn agent_start_restore(
    State(state): State<AppState>,
    JsonObject(launch): JsonObject<RestoreLaunch>,
) -> Result<StatusCode, ApiError> {
    state.manager.agent().start_restore(&launch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agent/v1/replicas", request_body = ReplicaLaunch, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn agent_start_replica(
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
async fn agent_remove_replica(
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
async fn agent_start_engine(
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
async fn agent_process(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ProcessReport> {
    let process = state.manager.agent().state_checked(&name).await?;
    Ok(Json(ProcessReport::from(&process)))
}

#[utoipa::path(delete, path = "/agent/v1/processes/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn agent_stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.manager.agent().stop_checked(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Prometheus text: volumes by state and robustness, disk space per node.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    use std::fmt::Write as _;
    let store = state.manager.state();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP shorthorn_volume_robustness 1 for the volume's robustness."
    );
    let _ = writeln!(out, "# TYPE shorthorn_volume_robustness gauge");
    for volume in store.list::<Volume>(Kind::Volume)? {
        let robustness = serde_json::to_value(volume.status.robustness)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "shorthorn_volume_robustness{{volume=\"{}\",robustness=\"{robustness}\"}} 1",
            volume.name
        );
        let _ = writeln!(
            out,
            "shorthorn_volume_size_bytes{{volume=\"{}\"}} {}",
            volume.name, volume.spec.size
        );
    }
    let _ = writeln!(out, "# TYPE shorthorn_disk_capacity_bytes gauge");
    for node in store.list::<Node>(Kind::Node)? {
        for disk in &node.status.disks {
            for (metric, value) in [
                ("capacity", disk.capacity),
                ("available", disk.available),
                ("scheduled", disk.scheduled),
            ] {
                let _ = writeln!(
                    out,
                    "shorthorn_disk_{metric}_bytes{{node=\"{}\",disk=\"{}\"}} {value}",
                    node.name, disk.name
                );
            }
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

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
