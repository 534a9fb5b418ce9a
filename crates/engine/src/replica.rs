//! What the engine needs from a replica: block I/O (the data path), a way to learn that
//! it failed on its own, the structural operations the engine coordinates across
//! replicas (snapshots, purge, revert, expansion), its consistency record, and what a
//! rebuild reads (chunk checksums, a layer's own extents, snapshot content).

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use shorthorn_block::{BlockDevice, ConsistencyRecord, LayerInfo, PurgeReport};

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
    fn list_snapshots(&self)
    -> impl Future<Output = Result<Vec<LayerInfo>, ReplicaOpError>> + Send;

    /// Marks snapshot `name` removed.
    fn remove_snapshot(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), ReplicaOpError>> + Send;

    /// Folds removed snapshots away.
    fn purge_snapshots(&self) -> impl Future<Output = Result<PurgeReport, ReplicaOpError>> + Send;

    /// Puts a new empty head on snapshot `name`.
    fn revert(&self, name: &str) -> impl Future<Output = Result<(), ReplicaOpError>> + Send;

    /// Grows the replica's volume to `size` bytes; afterwards `size()` reports it.
    fn expand(&self, size: u64) -> impl Future<Output = Result<(), ReplicaOpError>> + Send;

    /// The replica's consistency record.
    fn record(&self) -> impl Future<Output = Result<ConsistencyRecord, ReplicaOpError>> + Send;

    /// Replaces the replica's consistency record durably (its id is kept).
    fn set_record(
        &self,
        record: &ConsistencyRecord,
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
