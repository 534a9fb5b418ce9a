//! What the engine needs from a replica: block I/O (the data path), a way to learn that
//! it failed on its own, and the structural operations the engine coordinates across
//! replicas (snapshots, purge, revert, expansion).

use std::collections::BTreeMap;
use std::future::Future;

use shorthorn_block::BlockDevice;

/// One layer of a replica's snapshot tree, as the replica reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotInfo {
    /// Snapshot name; empty for the head.
    pub name: String,
    /// The snapshot it sits on; empty for a root.
    pub parent: String,
    /// Snapshots sitting on it.
    pub children: Vec<String>,
    /// When it was taken, RFC 3339.
    pub created: String,
    /// False for system snapshots.
    pub user_created: bool,
    /// Marked for removal by the next purge.
    pub removed: bool,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Volume size when it was taken.
    pub size: u64,
    /// Bytes its file occupies on the replica's disk.
    pub allocated_bytes: u64,
    /// True for the writable head.
    pub is_head: bool,
    /// True when it is in the head's chain.
    pub in_chain: bool,
}

/// What a purge on one replica did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurgeOutcome {
    /// Snapshots folded away.
    pub purged: Vec<String>,
    /// Removed snapshots kept (several children).
    pub kept: Vec<String>,
    /// Bytes copied while folding.
    pub bytes_copied: u64,
}

/// Why a replica refused or failed an operation. `Rejected` means the request itself
/// was wrong (the replica is fine); anything else counts as a replica failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaOpError {
    /// The replica refused the request as invalid (bad name, not found, exists, …).
    #[error("{0}")]
    Rejected(String),
    /// The replica could not carry the request out.
    #[error("{0}")]
    Failed(String),
}

/// A replica as the engine sees it. See the module documentation.
pub trait Replica: BlockDevice + 'static {
    /// Resolves with the reason once the replica has failed for good.
    fn failed(&self) -> impl Future<Output = String> + Send;

    /// Takes snapshot `name` of the replica's head.
    fn create_snapshot(
        &self,
        name: &str,
        system: bool,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), ReplicaOpError>> + Send;

    /// Every layer of the replica's tree.
    fn list_snapshots(
        &self,
    ) -> impl Future<Output = Result<Vec<SnapshotInfo>, ReplicaOpError>> + Send;

    /// Marks snapshot `name` removed.
    fn remove_snapshot(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), ReplicaOpError>> + Send;

    /// Folds removed snapshots away.
    fn purge_snapshots(&self) -> impl Future<Output = Result<PurgeOutcome, ReplicaOpError>> + Send;

    /// Puts a new empty head on snapshot `name`.
    fn revert(&self, name: &str) -> impl Future<Output = Result<(), ReplicaOpError>> + Send;

    /// Grows the replica's volume to `size` bytes; afterwards `size()` reports it.
    fn expand(&self, size: u64) -> impl Future<Output = Result<(), ReplicaOpError>> + Send;
}
