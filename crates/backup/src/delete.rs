//! Deleting a backup: its record goes first, then every block no remaining backup of
//! the volume references. Runs under the volume's `delete` lock, so no backup or restore
//! of the volume is between reading the block maps and deleting blocks.

use std::collections::HashSet;

use crate::error::BackupError;
use crate::format::{
    BackupRecord, backup_record_path, block_hash_of_path, blocks_dir, volume_record_path,
};
use crate::list::list_backups_except;
use crate::lock::{LockKind, LockOptions, with_lock};
use crate::target::Target;

/// What a deletion freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteSummary {
    /// Block objects removed.
    pub freed_blocks: u64,
    /// Their bytes, as stored.
    pub freed_bytes: u64,
    /// Backups of the volume left.
    pub remaining_backups: usize,
}

/// Deletes backup `name` of `volume` and collects the garbage it leaves.
pub async fn delete_backup(
    target: &Target,
    volume: &str,
    name: &str,
    lock: LockOptions,
) -> Result<DeleteSummary, BackupError> {
    let operation = format!("deletion of backup {name}");
    with_lock(
        target,
        volume,
        LockKind::Delete,
        &operation,
        lock,
        async |guard| {
            let record = backup_record_path(volume, name);
            if target.head(&record).await?.is_none() {
                return Err(BackupError::NotFound {
                    url: target.url().to_string(),
                    volume: volume.to_string(),
                    backup: name.to_string(),
                });
            }
            // Every other record must be readable before anything is deleted: garbage
            // collection cannot tell which blocks an unreadable one needs. (The record
            // being deleted may be corrupt: deleting it is the way to get rid of it.)
            let remaining = list_backups_except(target, volume, name).await?;
            target.delete(&record).await?;
            fail::fail_point!(crate::fail_points::DELETE_BEFORE_GC);
            collect_garbage(target, volume, &remaining, guard).await
        },
    )
    .await
}

/// Removes blocks of `volume` that no backup references (also those a killed backup
/// left). Refuses to touch anything when a record cannot be read.
async fn collect_garbage(
    target: &Target,
    volume: &str,
    remaining: &[BackupRecord],
    guard: &crate::lock::LockGuard,
) -> Result<DeleteSummary, BackupError> {
    let referenced: HashSet<&str> = remaining
        .iter()
        .flat_map(|r| r.blocks.iter().map(|b| b.hash.as_str()))
        .collect();
    let mut summary = DeleteSummary {
        remaining_backups: remaining.len(),
        ..DeleteSummary::default()
    };
    for meta in target.list(&blocks_dir(volume)).await? {
        let relative = target.relative(&meta.location);
        let unreferenced = block_hash_of_path(&relative).is_some_and(|h| !referenced.contains(h));
        if unreferenced {
            guard.ensure_held()?;
            target.delete(&relative).await?;
            summary.freed_blocks += 1;
            summary.freed_bytes += meta.size;
        }
    }
    if remaining.is_empty() {
        target.delete(&volume_record_path(volume)).await?;
    }
    tracing::info!(
        volume,
        freed_blocks = summary.freed_blocks,
        "garbage collected"
    );
    Ok(summary)
}
