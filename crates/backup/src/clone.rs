//! A clone: one snapshot of a running replica copied into a new replica directory, with
//! no backup target in between (`volume create --from-snapshot`). Only the extents the
//! snapshot's layers hold are read; holes stay holes. The source is an immutable
//! snapshot, so its volume keeps serving writes meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{StreamExt, TryStreamExt};
use shorthorn_store::{METADATA_FILE, Store, StoreError};

use crate::create::{Progress, SnapshotSource};
use crate::error::SourceError;
use crate::replica_source::ReplicaSource;

/// Bytes read and written per request.
const PIECE: u64 = 2 << 20;
/// Pieces in flight at once.
const PARALLEL: usize = 4;

/// Why a clone failed.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// The source replica or its snapshot could not be read.
    #[error("reading the source")]
    Source(#[from] SourceError),
    /// The new volume would be smaller than the snapshot.
    #[error("the snapshot holds {snapshot} bytes, more than the new volume's {size}")]
    Smaller {
        /// The snapshot's size.
        snapshot: u64,
        /// The size asked for.
        size: u64,
    },
    /// The directory could not be created, opened or written.
    #[error("replica directory {dir}")]
    Store {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The directory holds another volume.
    #[error("replica directory {dir} holds volume {found}, not {volume}")]
    OtherVolume {
        /// The directory.
        dir: PathBuf,
        /// What it holds.
        found: String,
        /// What it should hold.
        volume: String,
    },
    /// A blocking task died.
    #[error("the store task failed: {0}")]
    Task(String),
}

/// What a clone copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneSummary {
    /// The new volume's size.
    pub size: u64,
    /// Bytes read from the source and written.
    pub copied_bytes: u64,
}

/// Copies snapshot `snapshot` of volume `source_volume`, read from the replica at
/// `source` (`tcp://HOST:PORT`), into replica directory `dir` of volume `volume` of
/// `size` bytes (at least the snapshot's). A directory left by an earlier attempt is
/// written over.
pub async fn clone_snapshot(
    source: &str,
    source_volume: &str,
    snapshot: &str,
    dir: &Path,
    volume: &str,
    size: Option<u64>,
    progress: Arc<Progress>,
) -> Result<CloneSummary, CloneError> {
    let (reader, info) = ReplicaSource::open_replica(source, source_volume, snapshot).await?;
    let size = size.unwrap_or(info.size);
    if size < info.size {
        return Err(CloneError::Smaller {
            snapshot: info.size,
            size,
        });
    }
    let store = Arc::new(open_or_create(dir, volume, size).await?);
    let ranges = pieces(reader.changed_since(None).await?, info.size);
    progress
        .total_bytes
        .store(ranges.iter().map(|(_, len)| len).sum(), Ordering::Relaxed);
    let reader = Arc::new(reader);
    futures::stream::iter(ranges)
        .map(|(offset, len)| {
            let (reader, store, progress) = (reader.clone(), store.clone(), progress.clone());
            let dir = dir.to_path_buf();
            async move {
                let data = reader.read(offset, len).await?;
                let written = tokio::task::spawn_blocking(move || store.write(offset, &data))
                    .await
                    .map_err(|e| CloneError::Task(e.to_string()))?;
                written.map_err(|source| CloneError::Store { dir, source })?;
                progress.done_bytes.fetch_add(len, Ordering::Relaxed);
                progress.transferred_bytes.fetch_add(len, Ordering::Relaxed);
                Ok::<(), CloneError>(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await?;
    let flushing = store.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .map_err(|e| CloneError::Task(e.to_string()))?
        .map_err(|source| CloneError::Store {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok(CloneSummary {
        size,
        copied_bytes: progress.done_bytes.load(Ordering::Relaxed),
    })
}

/// The extents (which may overlap, one list per layer) as sorted, disjoint pieces of at
/// most [`PIECE`] bytes within `size`.
fn pieces(mut extents: Vec<(u64, u64)>, size: u64) -> Vec<(u64, u64)> {
    extents.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (offset, len) in extents {
        let end = offset.saturating_add(len).min(size);
        if end <= offset {
            continue;
        }
        match merged.last_mut() {
            Some((_, last_end)) if offset <= *last_end => *last_end = (*last_end).max(end),
            _ => merged.push((offset, end)),
        }
    }
    let mut out = Vec::new();
    for (start, end) in merged {
        let mut at = start;
        while at < end {
            let len = PIECE.min(end - at);
            out.push((at, len));
            at += len;
        }
    }
    out
}

async fn open_or_create(dir: &Path, volume: &str, size: u64) -> Result<Store, CloneError> {
    let (dir, volume) = (dir.to_path_buf(), volume.to_string());
    tokio::task::spawn_blocking(move || {
        let store = if dir.join(METADATA_FILE).exists() {
            Store::open(&dir)
        } else {
            Store::create(&dir, &volume, size)
        }
        .map_err(|source| CloneError::Store {
            dir: dir.clone(),
            source,
        })?;
        if store.name() != volume {
            return Err(CloneError::OtherVolume {
                found: store.name().to_string(),
                dir,
                volume,
            });
        }
        Ok(store)
    })
    .await
    .map_err(|e| CloneError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_extents_become_disjoint_bounded_pieces() {
        let extents = vec![
            (8 << 20, 1 << 20),
            (0, 3 << 20),
            (1 << 20, 1 << 20),
            (9 << 20, 4 << 20),
        ];
        assert_eq!(
            pieces(extents, 12 << 20),
            vec![
                (0, 2 << 20),
                (2 << 20, 1 << 20),
                (8 << 20, 2 << 20),
                (10 << 20, 2 << 20),
            ]
        );
        assert!(pieces(vec![(5, 0), (100, 10)], 50).is_empty());
    }
}
