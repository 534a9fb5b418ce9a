//! Purge: folding snapshots marked removed into their child so their space comes back and
//! the chain shortens, while every byte any remaining layer shows stays the same.
//!
//! A removed snapshot R with one child C is folded by copying into C the data of R that C
//! does not override, then committing metadata in which C sits on R's parent, then
//! deleting R's file. The copy only fills C's holes with what C already showed through
//! them, so it is idempotent: a crash before the commit leaves the old state (with some of
//! C's holes filled by identical data) and the next purge redoes it. When C is the head,
//! the copy runs block range by block range under the write locks, so I/O goes on.

use std::sync::Arc;

use shorthorn_block::{BLOCK_SIZE, PurgeReport};

use crate::error::StoreError;
use crate::extent_map::Owner;
use crate::layer_file::LayerFile;
use crate::meta::{VolumeMeta, layer_path};
use crate::store::{State, Store, chain_index, to_usize};

/// Blocks copied per step (1 MiB), so a fold into the head holds each write lock briefly.
const COPY_CHUNK_BLOCKS: u64 = 256;

impl Store {
    /// Folds away every snapshot marked removed that has at most one child. A removed
    /// snapshot with several children (branches left by reverts) stays until all but one
    /// are gone.
    pub fn purge(&self) -> Result<PurgeReport, StoreError> {
        let _op = self.ops.lock();
        let mut report = PurgeReport::default();
        loop {
            let (removed, child, head, name) = {
                let state = self.state.read();
                self.check_healthy()?;
                let Some((removed, child)) = next_foldable(&state.meta) else {
                    break;
                };
                let name = state.meta.layer(removed).and_then(|l| l.name.clone());
                (removed, child, state.meta.head, name.unwrap_or_default())
            };
            report.bytes_copied += match child {
                None => 0,
                Some(child) if child == head => self.copy_into_head(removed)?,
                Some(child) => self.copy_into_snapshot(removed, child)?,
            };
            fail::fail_point!(crate::fail_points::PURGE_BEFORE_COMMIT, |_| Err(
                StoreError::Injected(crate::fail_points::PURGE_BEFORE_COMMIT)
            ));
            self.drop_folded(removed, child)?;
            tracing::info!(dir = %self.dir.display(), snapshot = name, "purged snapshot");
            report.purged.push(name);
        }
        let state = self.state.read();
        report.kept = state
            .meta
            .layers
            .iter()
            .filter(|l| l.removed)
            .filter_map(|l| l.name.clone())
            .collect();
        Ok(report)
    }

    /// Copies into the head every block whose newest data is in `removed` (the head's
    /// parent), range by range under the write locks. Returns the bytes copied.
    fn copy_into_head(&self, removed: u64) -> Result<u64, StoreError> {
        let state = self.state.read();
        let position = state
            .chain_position(removed)
            .ok_or_else(|| self.lost(removed))?;
        let (source, layer) = (state.chain[position].file.clone(), chain_index(position));
        let head = state.head_index();
        let target = state.head().file.clone();
        let extents = self.map.read().extents_of(layer);
        let mut copied = 0;
        let mut buf = Vec::new();
        for (start, end) in extents {
            let mut chunk_start = start;
            while chunk_start < end {
                let chunk_end = (chunk_start + COPY_CHUNK_BLOCKS).min(end);
                let _guard = self.write_locks.lock(chunk_start, chunk_end);
                // Writes since the listing may have taken blocks into the head: re-check.
                let segments = self.map.read().segments(chunk_start, chunk_end);
                for seg in segments {
                    let Some(owner) = seg.owner.filter(|o| o.layer == layer) else {
                        continue;
                    };
                    copied += copy_blocks(&source, &target, seg.start, seg.end, &mut buf)?;
                    let moved = Owner {
                        layer: head,
                        has_lower: owner.has_lower,
                    };
                    self.map.write().set(seg.start, seg.end, Some(moved));
                }
                chunk_start = chunk_end;
                fail::fail_point!(crate::fail_points::PURGE_MID_COPY, |_| Err(
                    StoreError::Injected(crate::fail_points::PURGE_MID_COPY)
                ));
            }
        }
        target.sync_data()?;
        Ok(copied)
    }

    /// Copies into snapshot `child` the data of `removed` that `child` does not override.
    /// Both are immutable to I/O, so this needs no locks; readers never look at `child`'s
    /// holes through `child`. Returns the bytes copied.
    fn copy_into_snapshot(&self, removed: u64, child: u64) -> Result<u64, StoreError> {
        let (source, target) = {
            let state = self.state.read();
            (
                self.layer_file(&state, removed)?,
                self.layer_file(&state, child)?,
            )
        };
        let to_copy = subtract(&source.data_extents()?, &target.data_extents()?);
        let mut copied = 0;
        let mut buf = Vec::new();
        for (start, end) in to_copy {
            let mut chunk_start = start;
            while chunk_start < end {
                let chunk_end = (chunk_start + COPY_CHUNK_BLOCKS).min(end);
                copied += copy_blocks(&source, &target, chunk_start, chunk_end, &mut buf)?;
                chunk_start = chunk_end;
                fail::fail_point!(crate::fail_points::PURGE_MID_COPY, |_| Err(
                    StoreError::Injected(crate::fail_points::PURGE_MID_COPY)
                ));
            }
        }
        target.sync_data()?;
        Ok(copied)
    }

    /// Commits metadata without `removed` (its child, if any, now sits on its parent),
    /// takes it out of the chain and the map, and deletes its file.
    fn drop_folded(&self, removed: u64, child: Option<u64>) -> Result<(), StoreError> {
        let mut state = self.state.write();
        let mut meta = state.meta.clone();
        let parent = meta.layer(removed).and_then(|l| l.parent);
        if let Some(child) = child.and_then(|c| meta.layer_mut(c)) {
            child.parent = parent;
        }
        meta.layers.retain(|l| l.id != removed);
        self.commit(&mut state, meta)?;
        if let Some(position) = state.chain_position(removed) {
            state.chain.remove(position);
            // The child moved down into the removed layer's index and holds its data now.
            self.map.write().remove_layer(chain_index(position));
        }
        drop(state);
        fail::fail_point!(crate::fail_points::PURGE_BEFORE_DELETE, |_| Err(
            StoreError::Injected(crate::fail_points::PURGE_BEFORE_DELETE)
        ));
        self.delete_layer_file(removed);
        Ok(())
    }

    /// The open file of layer `id`: shared with the chain when it is in it.
    fn layer_file(&self, state: &State, id: u64) -> Result<Arc<LayerFile>, StoreError> {
        match state.chain_position(id) {
            Some(position) => Ok(state.chain[position].file.clone()),
            None => Ok(Arc::new(LayerFile::open(&layer_path(&self.dir, id))?)),
        }
    }

    fn lost(&self, id: u64) -> StoreError {
        StoreError::CorruptMetadata {
            path: layer_path(&self.dir, id),
            reason: "the layer left the chain during a purge".into(),
        }
    }
}

/// The next removed snapshot that can be folded, with its only child (if any).
fn next_foldable(meta: &VolumeMeta) -> Option<(u64, Option<u64>)> {
    meta.layers
        .iter()
        .filter(|l| l.removed)
        .find_map(|l| match meta.children(l.id)[..] {
            [] => Some((l.id, None)),
            [child] => Some((l.id, Some(child))),
            _ => None,
        })
}

/// Block ranges of `a` not covered by `b` (both sorted, non-overlapping).
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut cover = b.iter().peekable();
    for &(start, end) in a {
        let mut position = start;
        while let Some(&&(cs, ce)) = cover.peek() {
            if ce <= position {
                cover.next();
                continue;
            }
            if cs >= end {
                break;
            }
            if cs > position {
                out.push((position, cs));
            }
            position = position.max(ce);
            if ce >= end {
                break;
            }
            cover.next();
        }
        if position < end {
            out.push((position, end));
        }
    }
    out
}

/// Copies blocks `start..end` from `source` to `target`; returns the bytes copied.
fn copy_blocks(
    source: &LayerFile,
    target: &LayerFile,
    start: u64,
    end: u64,
    buf: &mut Vec<u8>,
) -> Result<u64, StoreError> {
    let mut block = start;
    while block < end {
        let n = (end - block).min(COPY_CHUNK_BLOCKS);
        buf.resize(to_usize(n * BLOCK_SIZE), 0);
        source.read_at(buf, block * BLOCK_SIZE)?;
        target.write_at(buf, block * BLOCK_SIZE)?;
        block += n;
    }
    Ok((end - start) * BLOCK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::subtract;

    #[test]
    fn subtract_leaves_what_the_cover_misses() {
        assert_eq!(
            subtract(&[(0, 10)], &[(2, 4), (6, 7)]),
            vec![(0, 2), (4, 6), (7, 10)]
        );
        assert_eq!(
            subtract(&[(0, 4), (8, 12)], &[(3, 9)]),
            vec![(0, 3), (9, 12)]
        );
        assert_eq!(subtract(&[(0, 4)], &[(0, 4)]), vec![]);
        assert_eq!(subtract(&[(5, 6)], &[]), vec![(5, 6)]);
    }
}
