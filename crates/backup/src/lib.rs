//! Shorthorn's backupstore: volume backups in S3-compatible object stores and
//! filesystems (local or NFS).
//!
//! Volumes are cut into fixed-size blocks, stored once each under their blake3 hash
//! (compressed with lz4, zstd or not at all). Every backup records the complete block
//! map of its snapshot, so any backup restores or is deleted on its own; incremental
//! backups read only the blocks the snapshot layers changed since an earlier backed-up
//! snapshot. Locks in the store keep deletion (and its garbage collection) apart from
//! backups and restores. The format is in docs/backupstore-format.md.

mod clone;
mod create;
mod delete;
mod error;
pub mod fail_points;
pub mod format;
mod list;
mod lock;
mod replica_source;
mod restore;
mod secret;
mod target;
mod target_policy;

pub use clone::{CloneError, CloneSummary, clone_snapshot};
pub use create::{BackupOptions, Progress, SnapshotId, SnapshotSource, SourceInfo, create_backup};
pub use delete::{DeleteSummary, delete_backup};
pub use error::{
    BackupError, LockError, PolicyError, RestoreError, SourceCause, SourceError, TargetError,
};
pub use format::{BackupRecord, BackupSource, BackupUrl, Compression, FormatError};
pub use list::{get_backup, list_backups, list_volumes};
pub use lock::{LockGuard, LockKind, LockOptions, acquire, with_lock};
pub use replica_source::ReplicaSource;
pub use restore::{RESTORE_FILE, RestoreOptions, RestoreState, RestoreSummary, restore_backup};
pub use secret::Secret;
pub use target::{Target, TargetOptions};
pub use target_policy::TargetPolicy;

/// Now, as RFC 3339 UTC with milliseconds.
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs CPU-bound work (hashing, compression) off the async threads.
async fn spawn_cpu<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(work).await
}
