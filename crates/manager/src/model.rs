//! The control plane's objects. Each has a `spec` (what the user or the manager wants)
//! and a `status` (what is); only the object's own reconciler writes its status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::scheduler::SchedulingSettings;
use crate::validate::{self, FieldError, schema};
pub use shorthorn_agent::{DiskSpec, DiskStatus, EngineTuning};

/// The name serde gives an enum value (`"rw"`, `"degraded"`): what the API shows.
pub fn json_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// How healthy a volume's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Robustness {
    /// Not known yet (being created).
    #[default]
    Unknown,
    /// Every replica in sync.
    Healthy,
    /// Some replicas missing or rebuilding; at least one in sync.
    Degraded,
    /// No replica in sync: I/O fails until salvage.
    Faulted,
}

/// Whether a volume keeps a replica on the node where its engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataLocality {
    /// Replicas stay where the scheduler put them.
    #[default]
    Disabled,
    /// While attached, one replica is on the engine's node when that node can take one
    /// (its data then goes over the replica's unix socket, not the network): attached
    /// elsewhere, a replica is built there and then one elsewhere removed.
    BestEffort,
}

/// Where a volume is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    /// Replicas being placed and started.
    #[default]
    Creating,
    /// Replicas run; no engine.
    Detached,
    /// Engine starting on the requested node.
    Attaching,
    /// Served over NBD at `status.endpoint`.
    Attached,
    /// Engine stopping.
    Detaching,
    /// Replicas could not be placed (see `status.message`).
    Failed,
    /// A standby (disaster recovery) volume: its replicas follow the backups of a volume
    /// in a backup target (`status.standby`); not attachable until activated.
    Standby,
}

/// What a user asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeSpec {
    /// Size in bytes (a multiple of 4096).
    pub size: u64,
    /// How many replicas.
    pub replicas: usize,
    /// Tags every replica's node must have.
    #[serde(default)]
    pub node_selector: Vec<String>,
    /// Tags every replica's disk must have.
    #[serde(default)]
    pub disk_selector: Vec<String>,
    /// The node the volume is attached to (its engine runs there), if any.
    #[serde(default)]
    pub attached_node: Option<String>,
    /// Recurring jobs that run for this volume, by name.
    #[serde(default)]
    pub recurring_jobs: Vec<String>,
    /// Groups of recurring jobs that run for this volume.
    #[serde(default)]
    pub recurring_job_groups: Vec<String>,
    /// A backup URL the volume's first replicas are restored from.
    #[serde(default)]
    pub from_backup: Option<String>,
    /// The snapshot of another volume the volume's first replicas are copied from (a
    /// clone).
    #[serde(default)]
    pub from_snapshot: Option<SnapshotRef>,
    /// Salvages asked for (`volume salvage`); one is carried out while this is above
    /// `status.salvages`.
    #[serde(default)]
    pub salvage_requests: u64,
    /// Whether a replica follows the engine's node.
    #[serde(default)]
    pub data_locality: DataLocality,
    /// Labels users find it by; nothing acts on them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Set for a standby (disaster recovery) volume: the backups it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbySpec>,
}

/// What a standby volume follows, and what was asked of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StandbySpec {
    /// `TARGET?volume=VOLUME`: each new backup of that volume in that target is restored
    /// onto the replicas, fetching only the blocks that changed.
    pub source: String,
    /// Reads of the target asked for (`volume sync`); one is made at once while this is
    /// above `status.standby.syncs`.
    #[serde(default)]
    pub sync_requests: u64,
    /// Activation asked for (`volume activate`): once done, the volume is an ordinary
    /// one and this whole spec is gone.
    #[serde(default)]
    pub activation: Option<Activation>,
}

/// How a standby volume is to be activated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Activation {
    /// Activate with the backup restored last (a restore under way still finishes),
    /// without waiting for newer backups to be applied.
    pub at_last_restored: bool,
    /// Without `at_last_restored`: the read of the target (the `sync_requests` count
    /// the request raised it to) whose newest backup must be restored first.
    pub after_sync: u64,
}

/// Where a standby volume is in following its source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StandbyStatus {
    /// The backup the replicas hold, all of it.
    pub last_restored: Option<String>,
    /// When that backup was completed at the source (RFC 3339): the recovery point.
    pub last_restored_completed: Option<String>,
    /// When its restore completed here (RFC 3339).
    pub restored_at: Option<String>,
    /// Bytes the last restore fetched from the target (compressed, as stored; the most
    /// any one replica fetched).
    pub last_restore_bytes: u64,
    /// The newest backup of the source in the target, as last read.
    pub newest: Option<String>,
    /// When the newest backup was completed (RFC 3339).
    pub newest_completed: Option<String>,
    /// Backups newer than the last restored one.
    pub lag_backups: u64,
    /// Seconds between the completion of the last restored backup and of the newest (0
    /// when caught up).
    pub lag_seconds: u64,
    /// The backup being restored now, if any.
    pub restoring: Option<String>,
    /// The restore's progress (of the first replica still restoring).
    pub progress: Option<String>,
    /// When the target was last read (RFC 3339).
    pub last_read: Option<String>,
    /// `spec.standby.sync_requests` as of the last read.
    pub syncs: u64,
    /// Why it does not follow, if it does not (the target unreadable, the source grown).
    pub message: String,
}

/// What the manager observes of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeStatus {
    /// Life-cycle state.
    pub state: VolumeState,
    /// Data health.
    pub robustness: Robustness,
    /// `nbd://host:port/NAME` while attached (its engine's endpoint).
    pub endpoint: Option<String>,
    /// The node whose manager reconciles the volume (its etcd lease owns it).
    #[serde(default)]
    pub owner: Option<String>,
    /// Why the volume is not where its spec wants it, if it is not.
    pub message: String,
    /// `spec.salvage_requests` as of the last salvage carried out.
    #[serde(default)]
    pub salvages: u64,
    /// A standby volume's progress in following its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyStatus>,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    /// Unique name; also the NBD export name.
    pub name: String,
    /// Wanted.
    pub spec: VolumeSpec,
    /// Observed.
    #[serde(default)]
    pub status: VolumeStatus,
}

impl Volume {
    /// Refuses `what` (`"attached"`, `"snapshotted"`) on a standby volume, saying why
    /// and how to end that.
    pub fn not_standby(&self, what: &str) -> Result<(), String> {
        match &self.spec.standby {
            Some(standby) => Err(format!(
                "volume {:?} is a standby volume (it follows the backups at {}): it cannot be {what} until it is activated (shorthorn volume activate {})",
                self.name, standby.source, self.name
            )),
            None => Ok(()),
        }
    }
}

/// Where a volume's engine should run, and which replicas it should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EngineSpec {
    /// The volume it serves.
    pub volume: String,
    /// The node it should run on; `None`: stopped (the volume is detached).
    pub node: Option<String>,
    /// Replicas it should serve with, as `tcp://address:port`: started with them, and
    /// those not in it (or failed in it) are added, i.e. rebuilt.
    pub replicas: Vec<String>,
    /// Failed replicas it keeps as they are (not added, not removed): one that comes back
    /// is rebuilt with only what it missed, and a volume whose replicas all failed can
    /// be salvaged from them. Replicas in neither list are removed from it.
    #[serde(default)]
    pub failed: Vec<String>,
    /// Run for maintenance, without a frontend: the volume is detached, and its engine
    /// rebuilds the replicas that replace evicted ones.
    #[serde(default)]
    pub maintenance: bool,
}

/// Where an engine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineState {
    /// No process.
    #[default]
    Stopped,
    /// Process being started.
    Starting,
    /// Serving.
    Running,
    /// Process being stopped.
    Stopping,
    /// Could not be started or reached (see `message`).
    Error,
}

/// What the engine reports of one of its replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EngineReplicaStatus {
    /// RW, WO (being rebuilt) or ERR.
    pub mode: String,
    /// Rebuild progress, while it is rebuilt.
    pub rebuild: Option<String>,
    /// Why the engine failed it, or why adding it failed.
    pub error: String,
    /// Where the engine's data path to it goes: `unix:///…/data.sock` for a replica on
    /// the engine's node (reached over its unix socket), else its TCP address.
    #[serde(default)]
    pub data_path: String,
}

/// What the manager observes of an engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EngineStatus {
    /// Life-cycle state.
    pub state: EngineState,
    /// The node its process runs on.
    pub node: Option<String>,
    /// Control (gRPC) address.
    pub address: Option<String>,
    /// Ports it uses (control, NBD); kept across restarts so clients reconnect.
    pub ports: Option<(u16, u16)>,
    /// `nbd://host:port/VOLUME`.
    pub endpoint: Option<String>,
    /// The engine's own verdict: healthy, degraded or faulted.
    pub health: String,
    /// Its replicas by `tcp://address:port`.
    pub replicas: BTreeMap<String, EngineReplicaStatus>,
    /// What went wrong last, if anything.
    pub message: String,
    /// Started for maintenance (no frontend), as `spec.maintenance` was then.
    #[serde(default)]
    pub maintenance: bool,
}

/// A volume's engine (controller): one per volume, named `<volume>-e`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Engine {
    /// `<volume>-e`; also its process's name on its node.
    pub name: String,
    /// Wanted (written by the volume's reconciler).
    pub spec: EngineSpec,
    /// Observed (written by the engine's reconciler).
    #[serde(default)]
    pub status: EngineStatus,
}

impl Engine {
    /// The engine object's name for `volume`.
    pub fn name_for(volume: &str) -> String {
        shorthorn_agent::naming::engine_name(volume)
    }
}

/// One replica's place and wanted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaSpec {
    /// The volume it belongs to.
    pub volume: String,
    /// Its node.
    pub node: String,
    /// Its disk on that node.
    pub disk: String,
    /// Where its data lives on its node (`<disk path>/replicas/<name>`), for people and
    /// tools to find; the agent derives the directory itself and is never sent it.
    pub data_dir: String,
    /// Data port; the control API listens on the port after it.
    pub port: u16,
    /// Whether its process should run.
    pub desire_running: bool,
    /// A backup URL to restore its directory from before its first start (the first
    /// replicas of a volume created from a backup; later ones are rebuilt by the engine).
    /// Cleared once the restore completed.
    #[serde(default)]
    pub restore_from: Option<String>,
    /// A snapshot of another volume to copy into its directory before its first start
    /// (the first replicas of a clone); cleared once the copy completed.
    #[serde(default)]
    pub clone_from: Option<SnapshotRef>,
    /// Leaving its volume (fewer replicas wanted, `volume replica-rm`): it leaves the
    /// engine first, then its process and data are removed.
    #[serde(default)]
    pub retire: bool,
}

/// A replica's observed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Not started yet.
    #[default]
    Pending,
    /// Its process runs (and it is in sync in the engine, when attached).
    Running,
    /// Its process runs and the engine is adding it (a rebuild).
    Rebuilding,
    /// Its process exited or the engine dropped it.
    Failed,
    /// Stopped on purpose.
    Stopped,
}

/// What the manager observes of a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaStatus {
    /// Process state.
    pub state: ReplicaState,
    /// Mode in the engine (RW, WO, ERR) while attached.
    pub mode: Option<String>,
    /// Rebuild progress while it is rebuilt.
    pub rebuild: Option<String>,
    /// While it is filled before its first start (restored from a backup, or copied
    /// from a clone's source), how far: `40% (… of … bytes examined, … transferred)`.
    #[serde(default)]
    pub fill_progress: Option<String>,
    /// While attached, where the engine's data path to it goes: `unix:///…/data.sock`
    /// on the engine's node (no network in between), else its TCP address.
    #[serde(default)]
    pub data_path: Option<String>,
    /// Why it failed.
    pub message: String,
    /// When it failed (RFC 3339), to time its replacement.
    pub failed_at: Option<String>,
    /// Failed starts in a row; after a few the replica is replaced.
    #[serde(default)]
    pub start_failures: u32,
}

/// One snapshot of one volume (what a clone copies), written `VOLUME/SNAPSHOT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotRef {
    /// The volume.
    pub volume: String,
    /// Its snapshot.
    pub snapshot: String,
}

impl std::fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.volume, self.snapshot)
    }
}

/// A replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Replica {
    /// Unique name, `<volume>-r-<random>`.
    pub name: String,
    /// Wanted.
    pub spec: ReplicaSpec,
    /// Observed.
    #[serde(default)]
    pub status: ReplicaStatus,
}

impl Replica {
    /// A new, unique replica name for `volume`: `<volume>-r-<8 hex digits>`.
    pub fn new_name(volume: &str) -> String {
        shorthorn_agent::naming::new_replica_name(volume)
    }

    /// The volume a replica name belongs to, if it is a replica name at all
    /// ([`shorthorn_agent::naming::replica_volume`]).
    pub fn volume_of(name: &str) -> Option<&str> {
        shorthorn_agent::naming::replica_volume(name)
    }
}

/// A node: a host running an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeSpec {
    /// Address replicas and engines on this node listen on.
    pub address: String,
    /// URL of its manager's API (its agent is reached there).
    #[serde(default)]
    pub api_url: String,
    /// Zone, for spreading replicas.
    #[serde(default)]
    pub zone: String,
    /// Tags for node selectors.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether new replicas may be placed here.
    pub allow_scheduling: bool,
    /// Move its replicas to other nodes: each is rebuilt elsewhere before it is
    /// removed, and no new one is placed here.
    #[serde(default)]
    pub evict: bool,
    /// Its disks.
    pub disks: Vec<DiskSpec>,
}

/// What the node's agent reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    /// Whether its manager reported in lately: the API answers it as of the request
    /// (false once the heartbeat is older than 15 s, whatever the node last wrote).
    pub ready: bool,
    /// When its manager last reported (RFC 3339).
    #[serde(default)]
    pub heartbeat: Option<String>,
    /// Space of each disk.
    pub disks: Vec<DiskStatus>,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// Unique name (the host name by default).
    pub name: String,
    /// Wanted.
    pub spec: NodeSpec,
    /// Observed.
    #[serde(default)]
    pub status: NodeStatus,
}

/// What a recurring job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobTask {
    /// Take a snapshot; keep the newest `retain` snapshots of this job.
    Snapshot,
    /// Take a snapshot and back it up to `target`; keep the newest `retain` backups (and
    /// snapshots) of this job.
    Backup,
    /// Remove the system snapshots (those the engine took itself, for example before a
    /// rebuild or an expansion) and purge; takes no snapshot, `retain` is not used.
    SnapshotCleanup,
    /// Keep the newest `retain` user snapshots of the volume (whoever took them), remove
    /// the older ones and purge; takes no snapshot.
    SnapshotDelete,
}

impl JobTask {
    /// Every task, with the name the API and the CLI use for it.
    pub const ALL: [(JobTask, &'static str); 4] = [
        (JobTask::Snapshot, "snapshot"),
        (JobTask::Backup, "backup"),
        (JobTask::SnapshotCleanup, "snapshot-cleanup"),
        (JobTask::SnapshotDelete, "snapshot-delete"),
    ];

    /// Whether the job takes a snapshot of its own each run.
    pub fn takes_snapshot(self) -> bool {
        matches!(self, JobTask::Snapshot | JobTask::Backup)
    }
}

/// A recurring job's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecurringJobSpec {
    /// What it does.
    pub task: JobTask,
    /// When, as cron: `MIN HOUR DOM MON DOW` (UTC), or with a leading seconds field.
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")] // validate::MAX_CRON
    pub cron: String,
    /// How many of its snapshots or backups to keep per volume (1 to 1000).
    #[schema(minimum = 1, maximum = 1000)] // validate::MAX_RETAIN
    pub retain: u32,
    /// Groups it belongs to; volumes that select a group run its jobs.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub groups: Vec<String>,
    /// Backup target (backup jobs): a URL such as `s3://bucket@region/path`, or the name
    /// of a backup target object; `default` when not given.
    #[serde(default)]
    #[schema(schema_with = schema::optional_url)]
    pub target: Option<String>,
    /// Labels put on what it creates (besides `recurring-job: NAME`).
    #[serde(default)]
    #[schema(schema_with = schema::labels)]
    pub labels: BTreeMap<String, String>,
}

impl RecurringJobSpec {
    /// The field rules, for a spec at `field` of a request body. (Whether the cron
    /// expression parses is the scheduler's rule.)
    pub fn validate_as(&self, field: &str) -> Result<(), FieldError> {
        validate::text(format_args!("{field}.cron"), &self.cron, validate::MAX_CRON)?;
        validate::range(
            format_args!("{field}.retain"),
            self.retain,
            1..=validate::MAX_RETAIN,
        )?;
        validate::names(&format!("{field}.groups"), &self.groups)?;
        match self.target.as_deref() {
            Some(url) if url.contains("://") => validate::url(format_args!("{field}.target"), url)?,
            target => validate::optional_name(format_args!("{field}.target"), target)?,
        }
        validate::labels(&format!("{field}.labels"), &self.labels)
    }
}

/// A recurring job's last and next run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecurringJobStatus {
    /// When it last ran (RFC 3339).
    pub last_run: Option<String>,
    /// When it runs next (RFC 3339).
    pub next_run: Option<String>,
    /// What the last run did, per volume, or why it failed.
    pub last_result: String,
}

/// A recurring snapshot or backup job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecurringJob {
    /// Unique name; also the label its snapshots and backups carry.
    pub name: String,
    /// Wanted.
    pub spec: RecurringJobSpec,
    /// Observed.
    #[serde(default)]
    pub status: RecurringJobStatus,
}

/// Where backups go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupTargetSpec {
    /// `s3://bucket@region/path`, `file:///path` or `nfs://host:/path`.
    pub url: String,
    /// Seconds between two reads of the target's backup list (backups made elsewhere
    /// appear, deleted ones disappear).
    pub poll_interval: u64,
    /// The S3 endpoint (default: the managers' `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Whether the manager holds credentials of its own for this target (never shown;
    /// without them, the managers' `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub has_credentials: bool,
}

/// A backup target's S3 credentials, stored apart from the target (kind
/// [`crate::state::Kind::TargetCredentials`], which neither the API nor the watch
/// sends). `Debug` never shows the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: shorthorn_backup::Secret,
}

/// What the leader last saw of a backup target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupTargetStatus {
    /// Whether its last read succeeded.
    pub available: bool,
    /// When it was last read (RFC 3339).
    pub last_synced: Option<String>,
    /// Backups it holds.
    pub backups: usize,
    /// Why it is not available.
    pub message: String,
}

/// A backup target, by name; `default` is used when none is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupTarget {
    /// Its name.
    pub name: String,
    /// Wanted.
    pub spec: BackupTargetSpec,
    /// Observed (written by the leader).
    #[serde(default)]
    pub status: BackupTargetStatus,
}

/// Which snapshot of which volume to back up, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupSpec {
    /// The volume.
    pub volume: String,
    /// The snapshot; `None`: a new snapshot, named after the backup, is taken first.
    pub snapshot: Option<String>,
    /// The backup target's name.
    pub target: String,
    /// Labels recorded with the backup.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Set to delete the backup from its target (then the object goes).
    #[serde(default)]
    pub delete_requested: bool,
}

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    /// Waiting for its volume's manager to start it.
    #[default]
    Pending,
    /// Being uploaded.
    InProgress,
    /// Complete in the target.
    Completed,
    /// Failed (see `message`); nothing listed in the target.
    Error,
}

/// What a backup is, or how far it got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupStatus {
    /// Life-cycle state.
    pub state: BackupState,
    /// The snapshot it holds.
    pub snapshot: Option<String>,
    /// `TARGET?backup=NAME&volume=VOLUME`, for `backup restore`, once complete.
    pub url: Option<String>,
    /// Volume size when it was taken.
    pub volume_size: u64,
    /// Bytes of the snapshot read (an incremental backup reads only what changed).
    pub read_bytes: u64,
    /// Bytes this backup uploaded (new blocks only, compressed).
    pub uploaded_bytes: u64,
    /// When it completed (RFC 3339).
    pub completed: Option<String>,
    /// Progress while in progress.
    pub progress: String,
    /// Why it failed.
    pub message: String,
}

/// A backup of a volume in a backup target. Named as in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    /// Its name in the target (unique per volume; the manager makes it unique).
    pub name: String,
    /// Wanted.
    pub spec: BackupSpec,
    /// Observed.
    #[serde(default)]
    pub status: BackupStatus,
}

/// Cluster-wide settings, one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    /// Replica placement rules.
    #[serde(flatten)]
    pub scheduling: SchedulingSettings,
    /// Seconds a failed replica is given to come back (its data reused) before a new
    /// replica replaces it.
    pub replica_replenishment_wait_interval: u64,
    /// Seconds after which a failed replica that was replaced is deleted.
    pub stale_replica_timeout: u64,
    /// Default replica count of new volumes.
    pub default_replica_count: usize,
    /// Bring a volume back by itself when it cannot open otherwise: every replica
    /// failed at once, or a replica the open needs is on a node that is down (then
    /// writes only that replica acknowledged are lost).
    pub auto_salvage: bool,
    /// How engines treat slow replicas; engines started after a change use it.
    #[serde(flatten)]
    pub engine: EngineTuning,
    /// Data locality of new volumes that do not choose one.
    #[serde(default)]
    pub default_data_locality: DataLocality,
    /// Seconds between two reads of the backup target by each standby volume (`volume
    /// sync` reads at once).
    #[serde(default = "default_backup_poll_interval")]
    pub backup_poll_interval: u64,
}

fn default_backup_poll_interval() -> u64 {
    300
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            scheduling: SchedulingSettings::default(),
            replica_replenishment_wait_interval: 600,
            stale_replica_timeout: 2880 * 60,
            default_replica_count: 3,
            auto_salvage: true,
            engine: EngineTuning::default(),
            default_data_locality: DataLocality::Disabled,
            backup_poll_interval: default_backup_poll_interval(),
        }
    }
}

impl Settings {
    /// Refuses values outside what makes sense.
    pub fn validate(&self) -> Result<(), String> {
        /// Longest interval a setting takes: ten years.
        const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;
        if !(1..=16).contains(&self.default_replica_count) {
            return Err("default_replica_count must be 1 to 16".into());
        }
        if self.scheduling.minimal_available_percentage > 100 {
            return Err("minimal_available_percentage must be 0 to 100".into());
        }
        if !(1..=validate::MAX_OVER_PROVISIONING)
            .contains(&self.scheduling.over_provisioning_percentage)
        {
            return Err(format!(
                "over_provisioning_percentage must be 1 to {}",
                validate::MAX_OVER_PROVISIONING
            ));
        }
        self.engine.validate().map_err(|e| e.to_string())?;
        if !(1..=MAX_SECONDS).contains(&self.backup_poll_interval) {
            return Err(format!(
                "backup_poll_interval must be 1 to {MAX_SECONDS} seconds"
            ));
        }
        if self.replica_replenishment_wait_interval > MAX_SECONDS
            || self.stale_replica_timeout > MAX_SECONDS
        {
            return Err(format!("intervals are at most {MAX_SECONDS} seconds"));
        }
        Ok(())
    }

    /// The settings as name → JSON value, the shape `setting get|set` works with.
    pub fn to_map(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// Something the manager did or saw happen to an object, for `shorthorn events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Unique; sorts by time.
    pub name: String,
    /// When (RFC 3339).
    pub time: String,
    /// The kind of object: `volume`, `replica`, `backup`, `snapshot`, `job`.
    pub object_kind: String,
    /// The object's name (a snapshot's is `VOLUME/NAME`).
    pub object: String,
    /// The volume it concerns, if any.
    pub volume: Option<String>,
    /// A short CamelCase reason, such as `Attached` or `ReplicaFailed`.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// The manager (node) that recorded it.
    pub reporter: String,
}
