//! Taking a backup of one snapshot: incremental against the newest backup of an ancestor
//! snapshot, reading only blocks the layers since then wrote.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;

use crate::error::{BackupError, SourceCause};
use crate::format::{
    BackupRecord, BackupStats, BlockEntry, Compression, DEFAULT_BLOCK_SIZE, FORMAT_VERSION,
    VolumeRecord, backup_record_path, block_hash, block_path, check_block_size, encode_block,
    volume_record_path,
};
use crate::list::list_backups;
use crate::lock::{LockKind, LockOptions, with_lock};
use crate::target::Target;
use crate::{now_rfc3339, spawn_cpu};

/// A snapshot, named as its replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotId {
    /// The snapshot's name.
    pub name: String,
    /// Its creation time as the replica reports it.
    pub created: String,
}

/// What is being backed up.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// The volume's name.
    pub volume: String,
    /// The volume's size at the snapshot.
    pub size: u64,
    /// The snapshot backed up.
    pub snapshot: SnapshotId,
    /// Its ancestors, nearest first.
    pub ancestors: Vec<SnapshotId>,
}

/// Where a backup reads a snapshot from (a replica, or a store in tests).
pub trait SnapshotSource: Send + Sync + 'static {
    /// Why reading failed; kept as the cause of the backup's error.
    type Error: Into<SourceCause>;

    /// Byte ranges written by the layers after snapshot `since` (an ancestor; `None`: from
    /// the volume's beginning) up to and including the snapshot being backed up.
    fn changed_since(
        &self,
        since: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(u64, u64)>, Self::Error>> + Send;

    /// `len` bytes of the snapshot at `offset`.
    fn read(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;
}

/// How to take a backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The backup's name (default: `backup-<UTC time>-<random>`); unique per volume.
    pub name: Option<String>,
    /// How new blocks are compressed.
    pub compression: Compression,
    /// Block size for a volume's first backup (later backups use the volume's).
    pub block_size: Option<u64>,
    /// Labels recorded with the backup.
    pub labels: BTreeMap<String, String>,
    /// Read every block of the snapshot, not only those changed since the last backup.
    pub full: bool,
    /// Blocks read, compressed and uploaded at once.
    pub parallel: usize,
    /// Lock timing.
    pub lock: LockOptions,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            name: None,
            compression: Compression::default(),
            block_size: None,
            labels: BTreeMap::new(),
            full: false,
            parallel: 8,
            lock: LockOptions::default(),
        }
    }
}

/// Counters a caller can show while a backup or restore runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes to examine.
    pub total_bytes: AtomicU64,
    /// Bytes examined so far.
    pub done_bytes: AtomicU64,
    /// Bytes sent to (backup) or fetched from (restore) the target so far.
    pub transferred_bytes: AtomicU64,
}

impl Progress {
    /// `examined/total (percent), transferred`.
    pub fn summary(&self) -> String {
        let total = self.total_bytes.load(Ordering::Relaxed);
        let done = self.done_bytes.load(Ordering::Relaxed);
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        format!(
            "{percent}% ({done} of {total} bytes examined, {} transferred)",
            self.transferred_bytes.load(Ordering::Relaxed)
        )
    }
}

/// Backs up the source's snapshot to `target`; returns the new backup's record.
pub async fn create_backup<S: SnapshotSource>(
    target: &Target,
    source: Arc<S>,
    info: &SourceInfo,
    options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupRecord, BackupError> {
    let volume = info.volume.as_str();
    let invalid_name = |field| move |source| BackupError::InvalidName { field, source };
    shorthorn_block::validate_name(volume).map_err(invalid_name("volume"))?;
    if options.parallel == 0 {
        return Err(BackupError::NoParallelism);
    }
    let created = now_rfc3339();
    let name = match &options.name {
        Some(name) => {
            shorthorn_block::validate_name(name).map_err(invalid_name("backup name"))?;
            if target
                .head(&backup_record_path(volume, name))
                .await?
                .is_some()
            {
                return Err(BackupError::Exists {
                    volume: volume.to_string(),
                    backup: name.clone(),
                });
            }
            name.clone()
        }
        None => format!(
            "backup-{}-{:08x}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            rand::random::<u32>()
        ),
    };
    let operation = format!("backup {name} of snapshot {}", info.snapshot.name);
    with_lock(
        target,
        volume,
        LockKind::Backup,
        &operation,
        options.lock,
        async |lock| {
            let volume_record = volume_record(target, volume, options.block_size, &created).await?;
            let block_size = volume_record.block_size;
            let base = if options.full {
                None
            } else {
                newest_ancestor_backup(target, info, block_size).await?
            };
            let changed = source
                .changed_since(base.as_ref().map(|b| b.snapshot.as_str()))
                .await
                .map_err(|e| BackupError::ChangedBlocks {
                    volume: volume.to_string(),
                    source: e.into(),
                })?;
            let to_read = blocks_touched(&changed, block_size, info.size);
            tracing::info!(
                volume,
                backup = %name,
                base = base.as_ref().map(|b| b.name.as_str()),
                blocks = to_read.len(),
                "backing up"
            );

            let mut map: BTreeMap<u64, String> = base
                .as_ref()
                .map(|b| {
                    b.blocks
                        .iter()
                        .filter(|e| e.offset < info.size)
                        .map(|e| (e.offset, e.hash.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let known: Arc<Mutex<HashSet<String>>> =
                Arc::new(Mutex::new(map.values().cloned().collect()));
            progress.total_bytes.store(
                to_read.iter().map(|&o| block_size.min(info.size - o)).sum(),
                Ordering::Relaxed,
            );

            let stats = Arc::new(Mutex::new(BackupStats::default()));
            let results: Vec<(u64, Option<String>)> = futures::stream::iter(to_read)
                .map(|offset| {
                    let (source, target, known, stats, progress) = (
                        source.clone(),
                        target.clone(),
                        known.clone(),
                        stats.clone(),
                        progress.clone(),
                    );
                    let (volume, compression) = (volume.to_string(), options.compression);
                    let len = block_size.min(info.size - offset);
                    async move {
                        let data =
                            source
                                .read(offset, len)
                                .await
                                .map_err(|e| BackupError::Read {
                                    volume: volume.clone(),
                                    offset,
                                    source: e.into(),
                                })?;
                        if data.len() as u64 != len {
                            return Err(BackupError::ShortRead { volume, offset });
                        }
                        let hash = store_block(&target, &volume, data, compression, &known, &stats)
                            .await?;
                        stats_add(&stats, |s| s.read_bytes += len);
                        progress.done_bytes.fetch_add(len, Ordering::Relaxed);
                        progress
                            .transferred_bytes
                            .store(stats.lock().uploaded_bytes, Ordering::Relaxed);
                        Ok((offset, hash))
                    }
                })
                .buffer_unordered(options.parallel)
                .try_collect()
                .await?;
            for (offset, hash) in results {
                match hash {
                    Some(hash) => map.insert(offset, hash),
                    None => map.remove(&offset),
                };
            }

            let mut stats = stats.lock().clone();
            stats.logical_bytes = map.keys().map(|&o| block_size.min(info.size - o)).sum();
            let record = BackupRecord {
                format_version: FORMAT_VERSION,
                name: name.clone(),
                volume: volume.to_string(),
                volume_size: info.size,
                block_size,
                snapshot: info.snapshot.name.clone(),
                snapshot_created: info.snapshot.created.clone(),
                created,
                completed: now_rfc3339(),
                labels: options.labels.clone(),
                compression: options.compression,
                base: base.map(|b| b.name),
                stats,
                blocks: map
                    .into_iter()
                    .map(|(offset, hash)| BlockEntry { offset, hash })
                    .collect(),
            };
            fail::fail_point!(crate::fail_points::CREATE_BEFORE_RECORD);
            // Every block is stored; the record makes the backup exist, so only while the lock
            // is surely ours (a deletion's garbage collection may run once it is not).
            lock.ensure_held()?;
            target
                .put_json(&backup_record_path(volume, &name), &record)
                .await?;
            Ok(record)
        },
    )
    .await
}

/// Hashes a block and uploads it unless it is zeros or stored already; returns its hash
/// (`None` for zeros).
async fn store_block(
    target: &Target,
    volume: &str,
    data: Vec<u8>,
    compression: Compression,
    known: &Mutex<HashSet<String>>,
    stats: &Mutex<BackupStats>,
) -> Result<Option<String>, BackupError> {
    let (data, hash) = spawn_cpu(move || {
        let zero = data.iter().all(|&b| b == 0);
        let hash = (!zero).then(|| block_hash(&data));
        (data, hash)
    })
    .await?;
    let Some(hash) = hash else {
        return Ok(None);
    };
    // Claimed before the upload, so identical blocks read at once are stored once; the
    // record is written only after every upload ended.
    if !known.lock().insert(hash.clone()) {
        return Ok(Some(hash));
    }
    let path = block_path(volume, &hash);
    // Stored by an earlier backup that is not our base, or by one that was killed.
    if target.head(&path).await?.is_none() {
        let object = spawn_cpu(move || encode_block(&data, compression)).await??;
        let uploaded = object.len() as u64;
        target.put(&path, object.into()).await?;
        stats_add(stats, |s| {
            s.uploaded_blocks += 1;
            s.uploaded_bytes += uploaded;
        });
    }
    Ok(Some(hash))
}

/// The volume's record, written now if this is its first backup.
async fn volume_record(
    target: &Target,
    volume: &str,
    block_size: Option<u64>,
    created: &str,
) -> Result<VolumeRecord, BackupError> {
    let path = volume_record_path(volume);
    if let Some(record) = target.get_json::<VolumeRecord>(&path).await? {
        if record.format_version != FORMAT_VERSION || record.name != volume {
            return Err(BackupError::VolumeRecordMismatch {
                url: target.url().to_string(),
                path: target.path(&path),
                version: record.format_version,
                name: record.name,
            });
        }
        check_block_size(record.block_size).map_err(|source| BackupError::CorruptVolumeRecord {
            url: target.url().to_string(),
            path: target.path(&path),
            source: Box::new(source),
        })?;
        if let Some(asked) = block_size.filter(|&b| b != record.block_size) {
            tracing::warn!(
                volume,
                asked,
                using = record.block_size,
                "the volume's earlier backups fix its block size"
            );
        }
        return Ok(record);
    }
    let block_size = block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    check_block_size(block_size)?;
    let record = VolumeRecord {
        format_version: FORMAT_VERSION,
        name: volume.to_string(),
        block_size,
        created: created.to_string(),
    };
    target.put_json(&path, &record).await?;
    Ok(record)
}

/// The newest complete backup of the snapshot or one of its ancestors, if any: the
/// layers after its snapshot hold every change since.
async fn newest_ancestor_backup(
    target: &Target,
    info: &SourceInfo,
    block_size: u64,
) -> Result<Option<BackupRecord>, BackupError> {
    let lineage: Vec<&SnapshotId> = std::iter::once(&info.snapshot)
        .chain(info.ancestors.iter())
        .collect();
    let mut best: Option<(usize, BackupRecord)> = None;
    for record in list_backups(target, &info.volume).await? {
        let Some(depth) = lineage
            .iter()
            .position(|s| s.name == record.snapshot && s.created == record.snapshot_created)
        else {
            continue;
        };
        if record.block_size != block_size {
            continue;
        }
        // Nearest snapshot first; among backups of the same snapshot, the newest.
        let better = best.as_ref().is_none_or(|(best_depth, best_record)| {
            depth < *best_depth || (depth == *best_depth && record.created > best_record.created)
        });
        if better {
            best = Some((depth, record));
        }
    }
    Ok(best.map(|(_, record)| record))
}

/// Offsets of the blocks any of `ranges` touches, within `size`.
fn blocks_touched(ranges: &[(u64, u64)], block_size: u64, size: u64) -> BTreeSet<u64> {
    let mut blocks = BTreeSet::new();
    for &(offset, len) in ranges {
        let end = offset.saturating_add(len).min(size);
        let mut block = offset - offset % block_size;
        while block < end {
            blocks.insert(block);
            block += block_size;
        }
    }
    blocks
}

fn stats_add(stats: &Mutex<BackupStats>, update: impl FnOnce(&mut BackupStats)) {
    update(&mut stats.lock());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_blocks_cover_every_range_and_stop_at_the_size() {
        let blocks = blocks_touched(&[(0, 1), (4095, 2), (10_000, 100_000)], 4096, 20_000);
        assert_eq!(
            blocks.into_iter().collect::<Vec<_>>(),
            vec![0, 4096, 8192, 12288, 16384]
        );
    }
}
