//! What managers and node agents say to each other: the launch requests, the process
//! states and reports that answer them, and the agent's errors. Below the agent, its
//! checks ([`crate::launch_checks`]) and its replica directories
//! ([`crate::replica_dir`]), which all read these.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shorthorn_backup::Secret;

use crate::node::EngineTuning;

/// Ports the agent lets daemons listen on; the scheduler picks theirs from this range.
pub const PORT_RANGE: std::ops::Range<u16> = 20000..30000;
/// A restore's process name is its replica's name and this.
pub const RESTORE_SUFFIX: &str = "-restore";

/// The process name of the restore into `replica`'s directory.
pub fn restore_task_name(replica: &str) -> String {
    format!("{replica}{RESTORE_SUFFIX}")
}

/// Why the agent did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is wrong: a bad name, size, address, port or disk (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// What is on disk forbids it: a directory the agent did not create, or outside its
    /// disks (HTTP 409).
    #[error("{0}")]
    Refused(String),
    /// Doing it failed (I/O, a daemon that would not start).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What became of a process the agent started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    /// Runs.
    Running,
    /// Exited by itself (crashed, or failed); the exit status.
    Exited(String),
    /// The agent has no such process (never started, or stopped on request).
    Absent,
    /// The node's agent did not answer (the node may be down).
    Unreachable(String),
}

/// A replica process to start. Its directory is not sent: the agent derives it from the
/// disk and the name.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicaLaunch {
    /// Process name (the replica object's name, `<volume>-r-<8 hex digits>`).
    #[schema(min_length = 12, max_length = 74, pattern = r"-r-[0-9a-f]{8}$")]
    pub name: String,
    /// Volume name.
    #[schema(schema_with = crate::validate::schema::name)]
    pub volume: String,
    /// Volume size: a multiple of 4096, at most 2^50.
    #[schema(minimum = 4096, maximum = 1125899906842624_u64, multiple_of = 4096)]
    pub size: u64,
    /// The name of the node's disk it lives on.
    #[schema(schema_with = crate::validate::schema::name)]
    pub disk: String,
    /// Data address; control listens on the next port.
    #[schema(value_type = String)]
    pub listen: SocketAddr,
}

/// An engine process to start.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineLaunch {
    /// Process name (`<volume>-e`).
    #[schema(min_length = 3, max_length = 65, pattern = r"-e$")]
    pub name: String,
    /// Volume name.
    #[schema(schema_with = crate::validate::schema::name)]
    pub volume: String,
    /// Volume size: a multiple of 4096, at most 2^50.
    #[schema(minimum = 4096, maximum = 1125899906842624_u64, multiple_of = 4096)]
    pub size: u64,
    /// Control API address.
    #[schema(value_type = String)]
    pub listen: SocketAddr,
    /// NBD address.
    #[schema(value_type = String)]
    pub nbd: SocketAddr,
    /// Replica data addresses, `tcp://host:port`.
    #[schema(max_items = 16)]
    pub replicas: Vec<String>,
    /// Open with `--salvage`: without proof that these replicas hold the newest writes
    /// (auto-salvage, when a replica's node is down).
    #[serde(default)]
    pub salvage: bool,
    /// Its replica timeout and slow-replica rule (the engine's defaults when left out).
    #[serde(default)]
    pub tuning: EngineTuning,
    /// Whether it serves its NBD frontend at `nbd`: not for a maintenance engine (a
    /// detached volume's evicted replicas rebuilt elsewhere, with no client).
    #[serde(default = "serves_a_frontend")]
    pub frontend: bool,
}

/// An engine launch without `frontend` serves one (as before the field existed).
fn serves_a_frontend() -> bool {
    true
}

/// A restore of a backup into a new replica's directory, before its first start; it
/// runs as process [`restore_task_name`] of the replica.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreLaunch {
    /// The replica restored into.
    #[schema(min_length = 12, max_length = 74, pattern = r"-r-[0-9a-f]{8}$")]
    pub replica: String,
    /// The name of the node's disk it lives on.
    #[schema(schema_with = crate::validate::schema::name)]
    pub disk: String,
    /// The backup's URL.
    #[schema(schema_with = crate::validate::schema::url)]
    pub url: String,
    /// The new volume's name (the replica's volume, not the backed-up one).
    #[schema(schema_with = crate::validate::schema::name)]
    pub volume: String,
    /// How to reach the backup's S3 target, when its backup target object says (the
    /// agent's environment otherwise).
    #[serde(default)]
    pub access: TargetAccess,
    /// Nothing wrote the directory since its last complete restore (a standby volume's
    /// replica): the restore compares the two backups' records instead of reading the
    /// local data (`backup restore --since-last-restore`).
    #[serde(default)]
    pub since_last_restore: bool,
}

/// A clone of another volume's snapshot into a new replica's directory, before its
/// first start, read from one running replica of that volume; it runs as process
/// [`restore_task_name`] of the replica (a replica is filled by a restore or a clone).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneLaunch {
    /// The replica cloned into.
    #[schema(min_length = 12, max_length = 74, pattern = r"-r-[0-9a-f]{8}$")]
    pub replica: String,
    /// The name of the node's disk it lives on.
    #[schema(schema_with = crate::validate::schema::name)]
    pub disk: String,
    /// The new volume's name (the replica's volume).
    #[schema(schema_with = crate::validate::schema::name)]
    pub volume: String,
    /// The new volume's size in bytes (at least the snapshot's).
    #[schema(minimum = 4096, maximum = 1125899906842624_u64)]
    pub size: u64,
    /// The source replica, `tcp://IP:PORT`.
    #[schema(schema_with = crate::validate::schema::url)]
    pub source: String,
    /// The volume the source replica serves.
    #[schema(schema_with = crate::validate::schema::name)]
    pub source_volume: String,
    /// The snapshot copied.
    #[schema(schema_with = crate::validate::schema::name)]
    pub snapshot: String,
}

/// How to reach one S3 backup target: its endpoint and credentials, as the manager keeps
/// them for a backup target object. Each field left out falls back to the environment
/// (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`). `Debug` never
/// shows the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetAccess {
    /// The S3 endpoint, e.g. `http://10.0.0.5:9000`.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub endpoint: Option<String>,
    /// The access key id.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub access_key_id: Option<String>,
    /// The secret access key.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 1024)]
    pub secret_access_key: Option<Secret>,
}

impl TargetAccess {
    /// The longest field.
    pub const MAX_FIELD: usize = 1024;

    /// The backup crate's options for this access.
    pub fn options(&self, create_directory: bool) -> shorthorn_backup::TargetOptions {
        shorthorn_backup::TargetOptions {
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            create_directory,
        }
    }

    /// The environment of a process that opens the target itself (a restore), for the
    /// fields set here.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        self.fields()
            .into_iter()
            .filter_map(|(_, variable, value)| value.map(|value| (variable, value.to_string())))
            .collect()
    }

    /// Each field is at most [`TargetAccess::MAX_FIELD`] bytes of printable text.
    pub fn validate(&self, field: &str) -> Result<(), crate::validate::FieldError> {
        for (name, _, value) in self.fields() {
            if let Some(value) = value {
                crate::validate::text(format!("{field}{name}"), value, Self::MAX_FIELD)?;
            }
        }
        Ok(())
    }

    /// Each field: its name, the environment variable it stands in for, its value.
    fn fields(&self) -> [(&'static str, &'static str, Option<&str>); 3] {
        [
            ("endpoint", "AWS_ENDPOINT_URL", self.endpoint.as_deref()),
            (
                "access_key_id",
                "AWS_ACCESS_KEY_ID",
                self.access_key_id.as_deref(),
            ),
            (
                "secret_access_key",
                "AWS_SECRET_ACCESS_KEY",
                self.secret_access_key.as_ref().map(Secret::expose),
            ),
        ]
    }
}

/// The agent's request bodies are checked field by field against this node's record
/// when they are carried out ([`crate::launch_checks`]): an unknown disk, a foreign
/// address or a malformed name is a 400 there. Nothing is checkable without the record.
macro_rules! checked_against_the_node_record {
    ($($launch:ty),*) => {$(
        impl crate::validate::Validate for $launch {
            fn validate(&self) -> Result<(), crate::validate::FieldError> {
                Ok(())
            }
        }
    )*};
}
checked_against_the_node_record!(
    ReplicaLaunch,
    EngineLaunch,
    RestoreLaunch,
    CloneLaunch,
    RemoveReplica
);

/// Whether a process's exit status (as reported) says it succeeded.
pub fn exited_cleanly(status: &str) -> bool {
    status == "exit status: 0"
}

/// A process state as the agent API reports it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcessReport {
    /// `running`, `exited` or `absent`.
    pub state: String,
    /// The exit status, when exited.
    #[serde(default)]
    pub status: String,
    /// A task's (restore, clone) last progress report, such as `40% (… of … bytes
    /// examined, … transferred)`.
    #[serde(default)]
    pub progress: Option<String>,
}

/// What starts the progress lines a task (`backup restore`, `clone`, run with
/// `--progress-lines`) prints on stdout; the agent keeps the last one.
pub const PROGRESS_PREFIX: &str = "progress: ";

impl From<&ProcessState> for ProcessReport {
    fn from(state: &ProcessState) -> ProcessReport {
        let (state, status) = match state {
            ProcessState::Running => ("running", String::new()),
            ProcessState::Exited(status) => ("exited", status.clone()),
            ProcessState::Absent | ProcessState::Unreachable(_) => ("absent", String::new()),
        };
        ProcessReport {
            state: state.into(),
            status,
            progress: None,
        }
    }
}

/// The body of a replica removal: empty. The agent finds the directory itself, and a
/// body naming a path (`data_dir`, as older managers sent) is rejected, not ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveReplica {}
