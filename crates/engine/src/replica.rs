//! What the engine needs from a replica: block I/O (the data path), a way to learn that
//! it failed on its own, the structural operations the engine coordinates across
//! replicas (snapshots, purge, revert, expansion), its consistency record, and what a
//! rebuild reads (chunk checksums, a layer's own extents, snapshot content).

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
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

/// The snapshots of the head's chain in `layers`, oldest first.
pub fn snapshot_chain(layers: &[SnapshotInfo]) -> Vec<&SnapshotInfo> {
    let mut chain = Vec::new();
    let mut next = layers.iter().find(|l| l.is_head).map(|l| l.parent.as_str());
    while let Some(name) = next.filter(|n| !n.is_empty()) {
        match layers.iter().find(|l| !l.is_head && l.name == name) {
            Some(layer) => {
                next = Some(layer.parent.as_str());
                chain.push(layer);
            }
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// A replica's consistency record (see `crate::replicator::activity_log`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaRecord {
    /// The replica directory's identity.
    pub replica_id: String,
    /// Epoch of the last record written.
    pub epoch: u64,
    /// Ids of the replicas in sync as of `epoch`.
    pub members: Vec<String>,
    /// Size of one dirty region.
    pub region_size: u64,
    /// Regions that may differ between members.
    pub dirty_regions: Vec<u64>,
    /// True when the last engine closed the volume cleanly.
    pub clean: bool,
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

    /// The replica's consistency record.
    fn record(&self) -> impl Future<Output = Result<ReplicaRecord, ReplicaOpError>> + Send;

    /// Replaces the replica's consistency record durably (its id is kept).
    fn set_record(
        &self,
        record: &ReplicaRecord,
    ) -> impl Future<Output = Result<(), ReplicaOpError>> + Send;

    /// Digests of consecutive `chunk`-byte pieces of `[offset, offset + len)` of the
    /// live volume (`snapshot` `None`) or of a snapshot. Equal digests mean equal bytes.
    fn checksums(
        &self,
        snapshot: Option<&str>,
        offset: u64,
        len: u64,
        chunk: u64,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, ReplicaOpError>> + Send;

    /// Byte ranges `(offset, len)` layer `snapshot` (the head for `None`) holds itself.
    fn layer_extents(
        &self,
        snapshot: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(u64, u64)>, ReplicaOpError>> + Send;

    /// Reads `len` bytes at `offset` of snapshot `name`.
    fn read_snapshot(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Bytes, ReplicaOpError>> + Send;
}
