//! Read-only views of a snapshot: what the volume showed when the snapshot was taken,
//! readable while the volume goes on (snapshot layers are immutable). Exports, backups
//! and consistency checks read through them.

use std::sync::Arc;

use shorthorn_block::{BLOCK_SIZE, Extent};

use crate::error::StoreError;
use crate::extent_map::ExtentMap;
use crate::layer_file::LayerFile;
use crate::meta::layer_path;
use crate::store::{ChainLayer, Store, block_span, build_map, read_through, status_through};

/// The content of one snapshot. It holds its layers' files open, so a purge that folds
/// them away later does not disturb it.
pub struct SnapshotView {
    name: String,
    size: u64,
    chain: Vec<ChainLayer>,
    map: ExtentMap,
}

impl Store {
    /// A read-only view of snapshot `name`: its size is the volume size when it was
    /// taken.
    pub fn snapshot_view(&self, name: &str) -> Result<SnapshotView, StoreError> {
        let state = self.state.read();
        self.check_healthy()?;
        let target = state
            .meta
            .snapshot(name)
            .ok_or_else(|| StoreError::SnapshotNotFound(name.to_owned()))?;
        let size = target.size;
        let mut ids = Vec::new();
        let mut next = Some(target.id);
        while let Some(id) = next {
            ids.push(id);
            next = state.meta.layer(id).and_then(|l| l.parent);
        }
        ids.reverse();
        let chain = ids
            .into_iter()
            .map(|id| {
                let file = match state.chain.iter().find(|l| l.id == id) {
                    Some(layer) => layer.file.clone(),
                    None => Arc::new(LayerFile::open(&layer_path(&self.dir, id))?),
                };
                Ok(ChainLayer { id, file })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        drop(state);
        let map = build_map(&chain)?;
        Ok(SnapshotView {
            name: name.to_owned(),
            size,
            chain,
            map,
        })
    }
}

impl Store {
    /// The byte ranges `(offset, len)` that layer `snapshot` (the head when `None`) holds
    /// in its own file, oldest offset first. A rebuild copies a layer's own ranges only,
    /// so it moves what the layer holds rather than the whole volume.
    pub fn layer_extents(&self, snapshot: Option<&str>) -> Result<Vec<(u64, u64)>, StoreError> {
        let state = self.state.read();
        self.check_healthy()?;
        let file = match snapshot {
            None => state.head().file.clone(),
            Some(name) => {
                let id = state
                    .meta
                    .snapshot(name)
                    .ok_or_else(|| StoreError::SnapshotNotFound(name.to_owned()))?
                    .id;
                match state.chain.iter().find(|l| l.id == id) {
                    Some(layer) => layer.file.clone(),
                    None => Arc::new(LayerFile::open(&layer_path(&self.dir, id))?),
                }
            }
        };
        drop(state);
        Ok(file
            .data_extents()?
            .into_iter()
            .map(|(start, end)| (start * BLOCK_SIZE, (end - start) * BLOCK_SIZE))
            .collect())
    }
}

impl SnapshotView {
    /// The snapshot's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The volume size when the snapshot was taken.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Fills `buf` with the snapshot's bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        self.check(offset, buf.len() as u64)?;
        let (first, last) = block_span(offset, buf.len() as u64);
        read_through(&self.map.segments(first, last), &self.chain, offset, buf)
    }

    /// Data and zero extents of `len` bytes at `offset`, as `Store::block_status`.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, StoreError> {
        self.check(offset, len)?;
        let (first, last) = block_span(offset, len);
        Ok(status_through(&self.map.segments(first, last), offset, len))
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(StoreError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }
}
