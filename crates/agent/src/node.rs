//! What the agent knows of its node: its disks, their space, and where the node's
//! record comes from. The agent reads the record fresh for every request (disks change
//! through the manager's API) through [`NodeRecords`], so it needs no part of the
//! manager's object store.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validate::{self, FieldError, schema};

/// What the agent's checks read of a node's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's name.
    pub name: String,
    /// The address its engines and replicas listen on.
    pub address: String,
    /// Its disks.
    pub disks: Vec<DiskSpec>,
}

/// Where the agent reads node records: the manager's store in `shorthorn up`.
pub trait NodeRecords: Send + Sync {
    /// The record of node `name`; `None` when it is not registered.
    fn node(&self, name: &str) -> anyhow::Result<Option<NodeFacts>>;
    /// The records of every registered node.
    fn nodes(&self) -> anyhow::Result<Vec<NodeFacts>>;
}

/// A disk of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskSpec {
    /// Name, unique on the node.
    #[schema(schema_with = schema::name)]
    pub name: String,
    /// Directory replicas are created under: absolute, without `.` or `..` components.
    #[schema(
        min_length = 2,
        max_length = 4096,
        pattern = r"^/[^\x00-\x1f\x7f-\x9f]*[^/\x00-\x1f\x7f-\x9f]"
    )]
    pub path: String,
    /// Tags for disk selectors.
    #[serde(default)]
    #[schema(schema_with = schema::names)]
    pub tags: Vec<String>,
    /// Bytes kept back from scheduling.
    #[serde(default)]
    #[schema(maximum = 1152921504606846976_u64)] // validate::MAX_RESERVED
    pub reserved: u64,
    /// Whether new replicas may be placed here.
    pub allow_scheduling: bool,
    /// Move its replicas elsewhere: each is rebuilt on another disk before it is
    /// removed, and no new one is placed here.
    #[serde(default)]
    pub evict: bool,
}

impl DiskSpec {
    /// The field rules, for a disk at `field` of a request body.
    pub fn validate_as(&self, field: &str) -> Result<(), FieldError> {
        validate::name(format_args!("{field}.name"), &self.name)?;
        validate::disk_path(format_args!("{field}.path"), &self.path)?;
        validate::names(&format!("{field}.tags"), &self.tags)?;
        validate::range(
            format_args!("{field}.reserved"),
            self.reserved,
            0..=validate::MAX_RESERVED,
        )
    }
}

/// A disk's observed space.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskStatus {
    /// Its name.
    pub name: String,
    /// Filesystem size.
    pub capacity: u64,
    /// Bytes free.
    pub available: u64,
    /// Sum of the sizes of replicas placed here.
    pub scheduled: u64,
    /// How many replicas are placed here (an eviction is done when none are left).
    #[serde(default)]
    pub replicas: u64,
}

/// How an engine treats slow replicas: its `--request-timeout`,
/// `--slow-replica-ratio` and `--slow-replica-window` (docs/benchmarks.md has the
/// measurements behind the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct EngineTuning {
    /// Seconds an engine waits for a replica's answer before it fails the replica
    /// (1 to 300).
    #[schema(minimum = 1, maximum = 300)]
    pub engine_replica_timeout: u64,
    /// A replica whose average write latency stays this many times above every other
    /// RW replica's (and above 20 ms) for `slow_replica_window` seconds leaves the
    /// write set and is rebuilt later; never the last RW one. 0: never (0 to 1000).
    #[schema(maximum = 1000)]
    pub slow_replica_ratio: u32,
    /// Seconds a replica must stay that slow (1 to 3600).
    #[schema(minimum = 1, maximum = 3600)]
    pub slow_replica_window: u64,
}

impl Default for EngineTuning {
    /// The engine's own defaults.
    fn default() -> Self {
        EngineTuning {
            engine_replica_timeout: 8,
            slow_replica_ratio: 8,
            slow_replica_window: 5,
        }
    }
}

impl EngineTuning {
    /// The field rules.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::range(
            "engine_replica_timeout",
            self.engine_replica_timeout,
            1..=300,
        )?;
        validate::range("slow_replica_ratio", self.slow_replica_ratio, 0..=1000)?;
        validate::range("slow_replica_window", self.slow_replica_window, 1..=3600)
    }
}

/// Space of each disk (of the filesystem holding its path); an unreadable disk shows
/// none and is logged.
pub fn disk_status(disks: &[DiskSpec]) -> Vec<DiskStatus> {
    disks
        .iter()
        .map(|disk| {
            let (capacity, available) =
                filesystem_space(Path::new(&disk.path)).unwrap_or_else(|e| {
                    tracing::warn!(disk = %disk.path, error = %format!("{e:#}"), "disk unreadable");
                    (0, 0)
                });
            DiskStatus {
                name: disk.name.clone(),
                capacity,
                available,
                scheduled: 0,
                replicas: 0,
            }
        })
        .collect()
}

/// Total and available bytes of the filesystem holding `path`.
fn filesystem_space(path: &Path) -> anyhow::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok((
        stat.f_blocks.saturating_mul(stat.f_frsize),
        stat.f_bavail.saturating_mul(stat.f_frsize),
    ))
}
