//! The volume metadata file (`volume.json`): the whole layer tree in one document, so
//! every structural change (snapshot, revert, purge, expand) commits with one atomic
//! rename. The format is described in `docs/store-format.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use shorthorn_block::BLOCK_SIZE;

use crate::error::{StoreError, io_error};
use crate::extent_map::MAX_BLOCKS;
use crate::name::validate_name;

/// The metadata format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the metadata file inside a replica directory.
pub const METADATA_FILE: &str = "volume.json";
/// Name of the temporary file a new metadata version is written to before the rename.
pub const METADATA_TEMP_FILE: &str = "volume.json.tmp";
/// Largest volume the store holds (what the location map can address): 4 PiB.
pub const MAX_VOLUME_SIZE: u64 = MAX_BLOCKS * BLOCK_SIZE;

/// The whole persistent description of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMeta {
    /// Always [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// The volume's name.
    pub name: String,
    /// The volume's size in bytes (a multiple of the block size).
    pub size: u64,
    /// Allocation unit in bytes; always 4096 in version 1.
    pub block_size: u64,
    /// Id of the writable head layer.
    pub head: u64,
    /// Id the next new layer gets; ids are never reused.
    pub next_layer_id: u64,
    /// Set while an expansion to this size is in progress (see `docs/store-format.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_expand: Option<u64>,
    /// Every layer of the tree: the head, the snapshots of its chain, and snapshots left
    /// on other branches by reverts.
    pub layers: Vec<LayerMeta>,
}

/// One layer: the head (no name) or a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerMeta {
    /// Unique id; the layer's file is `layer-<id>.img`.
    pub id: u64,
    /// Snapshot name; `None` for the head.
    pub name: Option<String>,
    /// Id of the older layer this one sits on, if any.
    pub parent: Option<u64>,
    /// When the snapshot was taken (for the head: when it was created), RFC 3339 UTC.
    pub created: String,
    /// False for system snapshots (taken by the engine for rebuilds, backups, …).
    pub user_created: bool,
    /// Marked for removal: hidden from reverts and folded away by the next purge.
    pub removed: bool,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Size of the volume when the layer was created; the layer file has this length.
    pub size: u64,
}

/// File name of layer `id`.
pub fn layer_file_name(id: u64) -> String {
    format!("layer-{id}.img")
}

/// The layer id encoded in a file name, if it is a layer file name.
pub fn layer_id_from_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("layer-")?
        .strip_suffix(".img")?
        .parse()
        .ok()
}

/// The current time as RFC 3339 UTC, as stored in `created`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl VolumeMeta {
    /// Metadata of a new volume with one empty head layer (id 1).
    pub fn new(name: &str, size: u64) -> Self {
        VolumeMeta {
            format_version: FORMAT_VERSION,
            name: name.to_owned(),
            size,
            block_size: BLOCK_SIZE,
            head: 1,
            next_layer_id: 2,
            pending_expand: None,
            layers: vec![LayerMeta {
                id: 1,
                name: None,
                parent: None,
                created: now_rfc3339(),
                user_created: false,
                removed: false,
                labels: BTreeMap::new(),
                size,
            }],
        }
    }

    /// Reads and validates the metadata of the volume in `dir`.
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(METADATA_FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::MissingMetadata { path });
            }
            Err(e) => return Err(io_error("reading metadata", &path, e)),
        };
        let corrupt = |reason: String| StoreError::CorruptMetadata {
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        let version = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| corrupt("no numeric format_version field".into()))?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(StoreError::UnsupportedVersion {
                path,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let meta: VolumeMeta = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        meta.validate().map_err(corrupt)?;
        Ok(meta)
    }

    /// Writes the metadata atomically: temp file, fsync, rename over the old file, fsync
    /// of the directory. A crash leaves either the old or the new version in place.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        debug_assert_eq!(self.validate(), Ok(()));
        let temp = dir.join(METADATA_TEMP_FILE);
        let path = dir.join(METADATA_FILE);
        let mut text =
            serde_json::to_vec_pretty(self).map_err(|e| StoreError::CorruptMetadata {
                path: path.clone(),
                reason: format!("cannot encode: {e}"),
            })?;
        text.push(b'\n');
        replace_file(dir, &temp, &path, &text)
    }

    /// Checks every rule of the format; the error says which one is broken.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_size != BLOCK_SIZE {
            return Err(format!(
                "block_size is {}, expected {BLOCK_SIZE}",
                self.block_size
            ));
        }
        validate_name(&self.name).map_err(|e| e.to_string())?;
        check_size(self.size).map_err(|e| format!("volume size: {e}"))?;
        if let Some(target) = self.pending_expand {
            if target <= self.size || check_size(target).is_err() {
                return Err(format!(
                    "pending_expand {target} is not a valid larger size"
                ));
            }
        }
        let by_id: HashMap<u64, &LayerMeta> = self.layers.iter().map(|l| (l.id, l)).collect();
        if by_id.len() != self.layers.len() {
            return Err("two layers share an id".into());
        }
        if !by_id.contains_key(&self.head) {
            return Err(format!("head layer {} is not among the layers", self.head));
        }
        let mut names = HashSet::new();
        for layer in &self.layers {
            if layer.id == 0 || layer.id >= self.next_layer_id {
                return Err(format!(
                    "layer id {} is outside 1..{}",
                    layer.id, self.next_layer_id
                ));
            }
            match (&layer.name, layer.id == self.head) {
                (None, true) => {
                    if layer.removed {
                        return Err("the head is marked removed".into());
                    }
                    if layer.size != self.size {
                        return Err(format!(
                            "head layer {} has size {}, volume has {}",
                            layer.id, layer.size, self.size
                        ));
                    }
                }
                (Some(name), false) => {
                    validate_name(name).map_err(|e| e.to_string())?;
                    if !names.insert(name.as_str()) {
                        return Err(format!("two snapshots are named {name:?}"));
                    }
                }
                (None, false) => return Err(format!("layer {} has no name", layer.id)),
                (Some(_), true) => return Err("the head layer has a name".into()),
            }
            check_size(layer.size).map_err(|e| format!("layer {}: {e}", layer.id))?;
            if layer.size > self.size {
                return Err(format!("layer {} is larger than the volume", layer.id));
            }
            if let Some(parent) = layer.parent {
                let parent = by_id
                    .get(&parent)
                    .ok_or_else(|| format!("layer {} has unknown parent {parent}", layer.id))?;
                if parent.id == self.head {
                    return Err(format!("layer {} sits on the head", layer.id));
                }
                if parent.size > layer.size {
                    return Err(format!("layer {} is smaller than its parent", layer.id));
                }
            }
        }
        // Parents always have smaller ids (layers are created on top of older ones), which
        // rules out cycles.
        for layer in &self.layers {
            if layer.parent.is_some_and(|p| p >= layer.id) {
                return Err(format!("layer {} has a newer parent", layer.id));
            }
        }
        Ok(())
    }

    /// The layer with id `id`.
    pub fn layer(&self, id: u64) -> Option<&LayerMeta> {
        self.layers.iter().find(|l| l.id == id)
    }

    /// The layer with id `id`, mutable.
    pub fn layer_mut(&mut self, id: u64) -> Option<&mut LayerMeta> {
        self.layers.iter_mut().find(|l| l.id == id)
    }

    /// The snapshot named `name`.
    pub fn snapshot(&self, name: &str) -> Option<&LayerMeta> {
        self.layers.iter().find(|l| l.name.as_deref() == Some(name))
    }

    /// Ids of the active chain, oldest first, ending with the head.
    pub fn chain(&self) -> Vec<u64> {
        let mut chain = Vec::new();
        let mut next = Some(self.head);
        while let Some(id) = next {
            chain.push(id);
            next = self.layer(id).and_then(|l| l.parent);
        }
        chain.reverse();
        chain
    }

    /// Ids of the layers whose parent is `id`.
    pub fn children(&self, id: u64) -> Vec<u64> {
        self.layers
            .iter()
            .filter(|l| l.parent == Some(id))
            .map(|l| l.id)
            .collect()
    }
}

/// Checks a volume size: non-zero, a multiple of the block size, within the maximum.
pub fn check_size(size: u64) -> Result<(), StoreError> {
    let reason = if size == 0 {
        "the size must be greater than zero".to_owned()
    } else if size % BLOCK_SIZE != 0 {
        format!("the size must be a multiple of {BLOCK_SIZE} bytes")
    } else if size > MAX_VOLUME_SIZE {
        format!("the largest volume is {MAX_VOLUME_SIZE} bytes")
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidSize { size, reason })
}

/// Replaces `path` in `dir` with `text` atomically: written to `temp`, fsynced, renamed
/// over `path`, then the directory fsynced. A crash leaves the old or the new content.
pub fn replace_file(dir: &Path, temp: &Path, path: &Path, text: &[u8]) -> Result<(), StoreError> {
    let mut file = File::create(temp).map_err(|e| io_error("creating", temp, e))?;
    file.write_all(text)
        .map_err(|e| io_error("writing", temp, e))?;
    file.sync_all().map_err(|e| io_error("syncing", temp, e))?;
    drop(file);
    fail::fail_point!(crate::fail_points::META_BEFORE_RENAME, |_| Err(
        StoreError::Injected(crate::fail_points::META_BEFORE_RENAME)
    ));
    fs::rename(temp, path).map_err(|e| io_error("renaming into", path, e))?;
    fail::fail_point!(crate::fail_points::META_BEFORE_DIR_SYNC, |_| Err(
        StoreError::Injected(crate::fail_points::META_BEFORE_DIR_SYNC)
    ));
    sync_dir(dir)
}

/// Makes the directory entries of `dir` (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing directory", dir, e))
}

/// Path of layer `id`'s file in `dir`.
pub fn layer_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(layer_file_name(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_file_names_round_trip() {
        assert_eq!(layer_id_from_file_name(&layer_file_name(42)), Some(42));
        assert_eq!(layer_id_from_file_name("layer-x.img"), None);
        assert_eq!(layer_id_from_file_name("volume.json"), None);
    }

    #[test]
    fn validate_catches_broken_trees() {
        let mut meta = VolumeMeta::new("vol", 1 << 20);
        assert_eq!(meta.validate(), Ok(()));
        meta.layers[0].parent = Some(7);
        assert!(meta.validate().is_err());
        let mut meta = VolumeMeta::new("vol", 1 << 20);
        meta.layers[0].size = 4096;
        assert!(meta.validate().unwrap_err().contains("head layer"));
        let mut meta = VolumeMeta::new("vol", 1 << 20);
        meta.head = 5;
        assert!(meta.validate().is_err());
    }

    #[test]
    fn sizes_must_be_whole_blocks() {
        assert!(check_size(0).is_err());
        assert!(check_size(4095).is_err());
        assert!(check_size(MAX_VOLUME_SIZE + BLOCK_SIZE).is_err());
        assert!(check_size(1 << 40).is_ok());
    }
}
