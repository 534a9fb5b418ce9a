//! Restoring a backup into a replica directory the replica server can serve.
//!
//! A fresh directory gets every stored block (zero blocks stay holes). A directory that
//! already holds the volume — an earlier restore, perhaps interrupted, or a standby
//! volume kept current by restoring each new backup — is compared block by block with
//! the backup by hashing its local contents, so only blocks that differ are fetched and
//! blocks the backup has as zeros are unmapped. Every fetched block's hash is verified
//! before it is written. When the caller knows nothing wrote the directory since its
//! last complete restore (`since_last_restore`), the two backups' block maps are
//! compared instead, and the local data is not read at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use shorthorn_block::{ExtentKind, ZeroMode};
use shorthorn_store::{METADATA_FILE, Store, StoreError};

use crate::create::Progress;
use crate::error::RestoreError;
use crate::format::{BackupRecord, block_hash, block_path, decode_block};
use crate::list::get_backup;
use crate::lock::{LockKind, LockOptions, with_lock};
use crate::target::Target;
use crate::{now_rfc3339, spawn_cpu};

/// The file in a replica directory that says which backup it holds.
pub const RESTORE_FILE: &str = "restore.json";

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The restored volume's name [default: the backed-up volume's]: a new volume made
    /// from another's backup.
    pub volume_name: Option<String>,
    /// Blocks fetched and written at once.
    pub parallel: usize,
    /// Lock timing.
    pub lock: LockOptions,
    /// The directory holds its last complete restore (`restore.json`) unchanged — no
    /// replica served it since: only the blocks in which that backup and this one
    /// differ are written, without reading the local data. When that backup is gone (or
    /// the directory's restore did not complete) the local data is compared instead.
    pub since_last_restore: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            volume_name: None,
            parallel: 8,
            lock: LockOptions::default(),
            since_last_restore: false,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Whether the directory already held the volume (only differences were fetched).
    pub incremental: bool,
    /// Blocks fetched from the target.
    pub fetched_blocks: u64,
    /// Bytes fetched, as stored (compressed).
    pub fetched_bytes: u64,
    /// Blocks made zeros (holes).
    pub zeroed_blocks: u64,
    /// Blocks already right locally.
    pub unchanged_blocks: u64,
    /// The earlier backup whose block map was compared with this one's (with
    /// `since_last_restore`, when the directory held it completely); `None`: the local
    /// data was compared, or the directory was new.
    pub since: Option<String>,
}

/// `restore.json`: which backup the directory holds, and whether it holds all of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreState {
    /// The volume.
    pub volume: String,
    /// The backup last restored (or being restored).
    pub backup: String,
    /// The target it came from.
    pub target: String,
    /// `restoring` until every block is written and flushed, then `complete`.
    pub state: String,
    /// When the state was written (RFC 3339).
    pub updated: String,
}

impl RestoreState {
    /// The directory's restore state, if a restore ever ran there.
    pub fn load(dir: &Path) -> Result<Option<RestoreState>, RestoreError> {
        let path = dir.join(RESTORE_FILE);
        match std::fs::read(&path) {
            Ok(data) => match serde_json::from_slice(&data) {
                Ok(state) => Ok(Some(state)),
                Err(source) => Err(RestoreError::CorruptState { path, source }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RestoreError::ReadState { path, source }),
        }
    }

    fn save(&self, dir: &Path) -> Result<(), RestoreError> {
        let data = serde_json::to_vec_pretty(self).map_err(RestoreError::EncodeState)?;
        let temp = dir.join(format!("{RESTORE_FILE}.tmp"));
        let path = dir.join(RESTORE_FILE);
        shorthorn_store::replace_file(dir, &temp, &path, &data)
            .map_err(|source| RestoreError::WriteState { path, source })
    }
}

/// Restores backup `name` of `volume` from `target` into the replica directory `dir`.
pub async fn restore_backup(
    target: &Target,
    volume: &str,
    name: &str,
    dir: &Path,
    options: RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary, RestoreError> {
    if options.parallel == 0 {
        return Err(RestoreError::NoParallelism);
    }
    let operation = format!("restore of backup {name} to {}", dir.display());
    with_lock(
        target,
        volume,
        LockKind::Backup,
        &operation,
        options.lock,
        async |lock| {
            let record = get_backup(target, volume, name).await?;
            let restored_as = options.volume_name.as_deref().unwrap_or(&record.volume);
            let (store, incremental) =
                open_or_create(dir.to_path_buf(), restored_as, &record).await?;
            // Read before this restore marks the directory as restoring.
            let previous = match incremental && options.since_last_restore {
                true => previous_record(target, volume, dir, &record).await?,
                false => None,
            };
            let state = |state: &str| RestoreState {
                volume: volume.to_string(),
                backup: name.to_string(),
                target: target.url().to_string(),
                state: state.to_string(),
                updated: now_rfc3339(),
            };
            state("restoring").save(dir)?;

            let wanted: BTreeMap<u64, String> = record
                .blocks
                .iter()
                .map(|b| (b.offset, b.hash.clone()))
                .collect();
            let plan = if let Some(previous) = &previous {
                let before: BTreeMap<u64, &String> = previous
                    .blocks
                    .iter()
                    .map(|b| (b.offset, &b.hash))
                    .collect();
                before
                    .keys()
                    .chain(wanted.keys())
                    .copied()
                    .filter(|offset| before.get(offset).copied() != wanted.get(offset))
                    .collect::<BTreeSet<u64>>()
            } else if incremental {
                let local = local_blocks(&store, &record).await?;
                wanted
                    .keys()
                    .copied()
                    .chain(local)
                    .collect::<BTreeSet<u64>>()
            } else {
                wanted.keys().copied().collect()
            };
            let block_len = |offset: u64| record.block_size.min(record.volume_size - offset);
            progress
                .total_bytes
                .store(plan.iter().map(|&o| block_len(o)).sum(), Ordering::Relaxed);

            let counters = Arc::new(Counters::default());
            futures::stream::iter(plan)
                .map(|offset| {
                    let (store, target, counters, progress) = (
                        store.clone(),
                        target.clone(),
                        counters.clone(),
                        progress.clone(),
                    );
                    let hash = wanted.get(&offset).cloned();
                    let (len, record) = (block_len(offset), &record);
                    // With the records compared, every planned block differs.
                    let compare_local = incremental && previous.is_none();
                    async move {
                        restore_block(
                            &store,
                            &target,
                            record,
                            offset,
                            len,
                            hash,
                            compare_local,
                            &counters,
                        )
                        .await
                        .map_err(|e| RestoreError::Block {
                            volume: record.volume.clone(),
                            offset,
                            source: Box::new(e),
                        })?;
                        progress.done_bytes.fetch_add(len, Ordering::Relaxed);
                        progress.transferred_bytes.store(
                            counters.fetched_bytes.load(Ordering::Relaxed),
                            Ordering::Relaxed,
                        );
                        Ok::<(), RestoreError>(())
                    }
                })
                .buffer_unordered(options.parallel)
                .try_collect::<()>()
                .await?;

            let flushing = store.clone();
            tokio::task::spawn_blocking(move || flushing.flush())
                .await
                .map_err(task("flush task"))?
                .map_err(|source| RestoreError::Flush {
                    dir: dir.to_path_buf(),
                    source,
                })?;
            // A deletion may have removed blocks since the lock was lost.
            lock.ensure_held()?;
            state("complete").save(dir)?;
            let total_blocks = record.volume_size.div_ceil(record.block_size);
            let planned = progress_blocks(&counters);
            if previous.is_some() {
                counters
                    .unchanged_blocks
                    .store(total_blocks.saturating_sub(planned), Ordering::Relaxed);
            }
            Ok(RestoreSummary {
                since: previous.map(|p| p.name),
                incremental,
                fetched_blocks: counters.fetched_blocks.load(Ordering::Relaxed),
                fetched_bytes: counters.fetched_bytes.load(Ordering::Relaxed),
                zeroed_blocks: counters.zeroed_blocks.load(Ordering::Relaxed),
                unchanged_blocks: counters.unchanged_blocks.load(Ordering::Relaxed),
            })
        },
    )
    .await
}

/// Blocks fetched or zeroed so far.
fn progress_blocks(counters: &Counters) -> u64 {
    counters.fetched_blocks.load(Ordering::Relaxed) + counters.zeroed_blocks.load(Ordering::Relaxed)
}

/// The record of the backup `dir` last restored completely from `target`, if it is an
/// earlier backup of `volume` still in the target, with `record`'s geometry.
async fn previous_record(
    target: &Target,
    volume: &str,
    dir: &Path,
    record: &BackupRecord,
) -> Result<Option<BackupRecord>, RestoreError> {
    let Some(state) = RestoreState::load(dir)? else {
        return Ok(None);
    };
    if state.state != "complete" || state.volume != volume || state.target != target.url() {
        return Ok(None);
    }
    let previous = match get_backup(target, volume, &state.backup).await {
        Ok(previous) => previous,
        Err(e) => {
            tracing::info!(backup = %state.backup, error = %e, "the backup restored last is not readable; comparing the local data");
            return Ok(None);
        }
    };
    let same_shape =
        previous.block_size == record.block_size && previous.volume_size == record.volume_size;
    Ok(same_shape.then_some(previous))
}

/// Wraps a failed `spawn_blocking` of the work `task` names.
fn task(task: &'static str) -> impl FnOnce(tokio::task::JoinError) -> RestoreError {
    move |source| RestoreError::Task { task, source }
}

#[derive(Debug, Default)]
struct Counters {
    fetched_blocks: AtomicU64,
    fetched_bytes: AtomicU64,
    zeroed_blocks: AtomicU64,
    unchanged_blocks: AtomicU64,
}

/// Brings one block of the directory to the backup's contents.
#[allow(
    clippy::too_many_arguments,
    reason = "one block's whole context, called once"
)]
async fn restore_block(
    store: &Arc<Store>,
    target: &Target,
    record: &BackupRecord,
    offset: u64,
    len: u64,
    hash: Option<String>,
    incremental: bool,
    counters: &Counters,
) -> Result<(), RestoreError> {
    if incremental {
        let local = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || local_hash(&store, offset, len))
                .await
                .map_err(task("read task"))??
        };
        if local == hash {
            counters.unchanged_blocks.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    }
    let Some(hash) = hash else {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.write_zeroes(offset, len, ZeroMode::MayUnmap))
            .await
            .map_err(task("write task"))??;
        counters.zeroed_blocks.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    };
    let path = block_path(&record.volume, &hash);
    let Some(object) = target.get(&path).await? else {
        return Err(RestoreError::MissingBlock {
            url: target.url().to_string(),
            hash,
            backup: record.name.clone(),
        });
    };
    let fetched = object.len() as u64;
    let checked = hash.clone();
    let data = spawn_cpu(move || decode_block(&object, &checked))
        .await
        .map_err(task("background task failed"))?
        .map_err(|source| RestoreError::CorruptBlock {
            url: target.url().to_string(),
            backup: record.name.clone(),
            source: Box::new(source),
        })?;
    if data.len() as u64 != len {
        return Err(RestoreError::BlockLength {
            url: target.url().to_string(),
            hash,
            found: data.len(),
            offset,
            len,
        });
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.write(offset, &data))
        .await
        .map_err(task("write task"))??;
    counters.fetched_blocks.fetch_add(1, Ordering::Relaxed);
    counters.fetched_bytes.fetch_add(fetched, Ordering::Relaxed);
    fail::fail_point!(crate::fail_points::RESTORE_AFTER_BLOCK);
    Ok(())
}

/// The hash of the local block (`None` when it is zeros), as a backup would name it.
fn local_hash(store: &Store, offset: u64, len: u64) -> Result<Option<String>, StoreError> {
    let mapped = store
        .block_status(offset, len)?
        .iter()
        .any(|e| e.kind == ExtentKind::Data);
    if !mapped {
        return Ok(None);
    }
    #[allow(
        clippy::cast_possible_truncation,
        reason = "at most one block (64 MiB)"
    )]
    let mut data = vec![0; len as usize];
    store.read(offset, &mut data)?;
    Ok((!data.iter().all(|&b| b == 0)).then(|| block_hash(&data)))
}

/// Offsets of the blocks the directory has data in.
async fn local_blocks(store: &Arc<Store>, record: &BackupRecord) -> Result<Vec<u64>, RestoreError> {
    let (store, size, block_size) = (store.clone(), record.volume_size, record.block_size);
    let extents = tokio::task::spawn_blocking(move || store.block_status(0, size))
        .await
        .map_err(task("block status task"))??;
    let mut blocks = BTreeSet::new();
    for extent in extents.iter().filter(|e| e.kind == ExtentKind::Data) {
        let mut block = extent.offset - extent.offset % block_size;
        while block < extent.end() {
            blocks.insert(block);
            block += block_size;
        }
    }
    Ok(blocks.into_iter().collect())
}

/// Opens the replica directory of volume `volume` (growing it to the backup's size) or
/// creates it; says whether it already held the volume.
async fn open_or_create(
    dir: PathBuf,
    volume: &str,
    record: &BackupRecord,
) -> Result<(Arc<Store>, bool), RestoreError> {
    shorthorn_block::validate_name(volume).map_err(RestoreError::InvalidName)?;
    let (volume, size) = (volume.to_string(), record.volume_size);
    tokio::task::spawn_blocking(move || {
        if !dir.join(METADATA_FILE).exists() {
            return match Store::create(&dir, &volume, size) {
                Ok(store) => Ok((Arc::new(store), false)),
                Err(source) => Err(RestoreError::CreateReplica { dir, source }),
            };
        }
        let store = match Store::open(&dir) {
            Ok(store) => store,
            Err(source) => return Err(RestoreError::OpenReplica { dir, source }),
        };
        if store.name() != volume {
            return Err(RestoreError::OtherVolume {
                found: store.name().to_string(),
                dir,
                volume,
            });
        }
        if store.size() > size {
            return Err(RestoreError::Larger {
                found: store.size(),
                dir,
                size,
            });
        }
        if store.size() < size
            && let Err(source) = store.expand(size)
        {
            return Err(RestoreError::Grow { dir, size, source });
        }
        Ok((Arc::new(store), true))
    })
    .await
    .map_err(task("open task"))?
}
