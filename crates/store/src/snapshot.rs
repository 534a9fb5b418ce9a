//! Snapshots: create (instant), list as a tree, mark removed, revert.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use shorthorn_block::LayerInfo;

use crate::error::{StoreError, io_error};
use crate::extent_map::MAX_LAYERS;
use crate::layer_file::LayerFile;
use crate::meta::{LayerMeta, layer_path, now_rfc3339};
use crate::name::validate_name;
use crate::store::{ChainLayer, Store, build_map};

/// Longest label value accepted, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 256;

/// Who asked for a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotKind {
    /// Taken on a user's request.
    #[default]
    User,
    /// Taken by the system (rebuilds, backups); purged freely.
    System,
}

impl Store {
    /// Takes snapshot `name` of the volume: the head becomes an immutable layer and a new
    /// empty head takes its place. Its cost does not depend on the volume size or the data
    /// written. In-flight I/O drains first; new I/O waits for the commit.
    pub fn snapshot(
        &self,
        name: &str,
        kind: SnapshotKind,
        labels: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        validate_name(name)?;
        validate_labels(&labels)?;
        let _op = self.ops.lock();
        let mut state = self.state.write();
        self.check_healthy()?;
        if state.meta.snapshot(name).is_some() {
            return Err(StoreError::SnapshotExists(name.to_owned()));
        }
        if state.chain.len() >= MAX_LAYERS as usize {
            return Err(StoreError::TooManyLayers(state.chain.len()));
        }
        let old_head = state.head().clone();
        old_head.file.sync_data()?;
        let mut meta = state.meta.clone();
        let new_id = meta.next_layer_id;
        let new_path = layer_path(&self.dir, new_id);
        let file = Arc::new(self.new_layer_file(&new_path, meta.size)?);
        fail::fail_point!(crate::fail_points::SNAPSHOT_AFTER_NEW_HEAD, |_| Err(
            StoreError::Injected(crate::fail_points::SNAPSHOT_AFTER_NEW_HEAD)
        ));
        let now = now_rfc3339();
        let frozen = meta.layer_mut(old_head.id).ok_or(StoreError::Poisoned {
            dir: self.dir.clone(),
        })?;
        frozen.name = Some(name.to_owned());
        frozen.created = now.clone();
        frozen.user_created = kind == SnapshotKind::User;
        frozen.labels = labels;
        meta.layers
            .push(new_head_meta(new_id, Some(old_head.id), meta.size, now));
        meta.head = new_id;
        meta.next_layer_id += 1;
        // On failure the new file stays: the commit may have reached the disk, and the next
        // open keeps the file if the metadata names it and removes it otherwise.
        self.commit(&mut state, meta)?;
        state.chain.push(ChainLayer { id: new_id, file });
        tracing::info!(dir = %self.dir.display(), snapshot = name, "snapshot created");
        Ok(())
    }

    /// Lists every layer of the tree, oldest first (the head last).
    pub fn layers(&self) -> Result<Vec<LayerInfo>, StoreError> {
        let state = self.state.read();
        let meta = &state.meta;
        let name_of = |id: u64| meta.layer(id).and_then(|l| l.name.clone());
        let chain = meta.chain();
        let mut out = Vec::with_capacity(meta.layers.len());
        for layer in &meta.layers {
            let path = layer_path(&self.dir, layer.id);
            let allocated_bytes = fs::metadata(&path)
                .map_err(|e| io_error("stat", &path, e))?
                .blocks()
                * 512;
            out.push(LayerInfo {
                name: layer.name.clone(),
                parent: layer.parent.and_then(name_of),
                children: meta
                    .children(layer.id)
                    .into_iter()
                    .filter_map(name_of)
                    .collect(),
                created: layer.created.clone(),
                user_created: layer.user_created,
                removed: layer.removed,
                labels: layer.labels.clone(),
                size: layer.size,
                allocated_bytes,
                is_head: layer.id == meta.head,
                in_chain: chain.contains(&layer.id),
            });
        }
        out.sort_by_key(|l| l.is_head);
        Ok(out)
    }

    /// Marks snapshot `name` removed: it can no longer be reverted to, and the next
    /// [`Store::purge`] folds it away. The volume's content does not change.
    pub fn remove_snapshot(&self, name: &str) -> Result<(), StoreError> {
        let _op = self.ops.lock();
        let mut state = self.state.write();
        self.check_healthy()?;
        let id = state
            .meta
            .snapshot(name)
            .ok_or_else(|| StoreError::SnapshotNotFound(name.to_owned()))?
            .id;
        let mut meta = state.meta.clone();
        if let Some(layer) = meta.layer_mut(id) {
            layer.removed = true;
        }
        self.commit(&mut state, meta)
    }

    /// Reverts the volume to snapshot `name`: a new empty head is put on top of it and the
    /// old head's data is discarded. Snapshots taken after `name` stay in the tree.
    pub fn revert(&self, name: &str) -> Result<(), StoreError> {
        let _op = self.ops.lock();
        let mut state = self.state.write();
        self.check_healthy()?;
        let target = state
            .meta
            .snapshot(name)
            .ok_or_else(|| StoreError::SnapshotNotFound(name.to_owned()))?;
        if target.removed {
            return Err(StoreError::SnapshotRemoved(name.to_owned()));
        }
        let target_id = target.id;
        let old_head = state.head().id;
        let mut meta = state.meta.clone();
        let new_id = meta.next_layer_id;
        let new_path = layer_path(&self.dir, new_id);
        let file = Arc::new(self.new_layer_file(&new_path, meta.size)?);
        fail::fail_point!(crate::fail_points::REVERT_AFTER_NEW_HEAD, |_| Err(
            StoreError::Injected(crate::fail_points::REVERT_AFTER_NEW_HEAD)
        ));
        meta.layers.retain(|l| l.id != old_head);
        meta.layers.push(new_head_meta(
            new_id,
            Some(target_id),
            meta.size,
            now_rfc3339(),
        ));
        meta.head = new_id;
        meta.next_layer_id += 1;
        // On failure the new file stays: the commit may have reached the disk, and the next
        // open keeps the file if the metadata names it and removes it otherwise.
        self.commit(&mut state, meta)?;
        let mut chain = Vec::new();
        for id in state.meta.chain() {
            let file = match state.chain.iter().find(|l| l.id == id) {
                Some(layer) => layer.file.clone(),
                None if id == new_id => file.clone(),
                None => Arc::new(LayerFile::open(&layer_path(&self.dir, id))?),
            };
            chain.push(ChainLayer { id, file });
        }
        *self.map.write() = build_map(&chain)?;
        state.chain = chain;
        fail::fail_point!(crate::fail_points::REVERT_BEFORE_DELETE, |_| Err(
            StoreError::Injected(crate::fail_points::REVERT_BEFORE_DELETE)
        ));
        self.delete_layer_file(old_head);
        tracing::info!(dir = %self.dir.display(), snapshot = name, "reverted");
        Ok(())
    }

    /// Creates the file of a new layer. A file already at that path can only be left by
    /// an operation that failed before committing (ids are never reused once committed).
    fn new_layer_file(&self, path: &Path, size: u64) -> Result<LayerFile, StoreError> {
        match fs::remove_file(path) {
            Ok(()) => tracing::warn!(path = %path.display(), "removed an uncommitted layer file"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing stale layer", path, e)),
        }
        LayerFile::create(path, size)
    }

    /// Deletes the file of a layer the metadata no longer names. A failure only leaves
    /// debris that the next open removes.
    pub(crate) fn delete_layer_file(&self, id: u64) {
        let path = layer_path(&self.dir, id);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove dropped layer; the next open will");
        }
    }
}

fn new_head_meta(id: u64, parent: Option<u64>, size: u64, created: String) -> LayerMeta {
    LayerMeta {
        id,
        name: None,
        parent,
        created,
        user_created: false,
        removed: false,
        labels: BTreeMap::new(),
        size,
    }
}

/// Label keys follow the name rules; values are short and free of control characters.
fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), StoreError> {
    for (key, value) in labels {
        let reject = |reason| {
            Err(StoreError::InvalidLabel {
                key: key.clone(),
                reason,
            })
        };
        if validate_name(key).is_err() {
            return reject("keys follow the name rules (letters, digits, '-', '_', '.')");
        }
        if value.len() > MAX_LABEL_VALUE_LEN {
            return reject("values are at most 256 bytes long");
        }
        if value.chars().any(char::is_control) {
            return reject("values cannot contain control characters");
        }
    }
    Ok(())
}
