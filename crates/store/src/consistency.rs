//! The replica's consistency record (`consistency.json` beside `volume.json`): the
//! replica's identity and what the last engine persisted about which replicas are in
//! sync (epoch, members) and which regions may differ between them (dirty regions).
//! The engine rewrites it at membership changes and at flush boundaries, never on every
//! write; docs/consistency.md explains how it is used.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shorthorn_block::ConsistencyRecord;

use crate::error::{StoreError, io_error};
use crate::meta::replace_file;

/// File name of the record inside a replica directory.
pub const CONSISTENCY_FILE: &str = "consistency.json";
const CONSISTENCY_TEMP_FILE: &str = "consistency.json.tmp";
const CONSISTENCY_FORMAT_VERSION: u32 = 1;

/// How `consistency.json` holds a [`ConsistencyRecord`]: the record's fields beside the
/// layout version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    /// Always 1 for this layout.
    format_version: u32,
    replica_id: String,
    epoch: u64,
    members: Vec<String>,
    region_size: u64,
    dirty_regions: Vec<u64>,
    clean: bool,
}

/// Reading and writing a replica directory's consistency record.
pub trait ConsistencyFile: Sized {
    /// Reads the record in `dir`, or writes a fresh one with a new random identity if
    /// there is none yet (a new replica, or one made before records existed).
    fn load_or_init(dir: &Path) -> Result<Self, StoreError>;

    /// Writes the record atomically: temp file, fsync, rename, fsync of the directory.
    fn save(&self, dir: &Path) -> Result<(), StoreError>;
}

impl ConsistencyFile for ConsistencyRecord {
    fn load_or_init(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(CONSISTENCY_FILE);
        match fs::read(&path) {
            Ok(text) => {
                let file: RecordFile =
                    serde_json::from_slice(&text).map_err(|e| StoreError::CorruptMetadata {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.format_version != CONSISTENCY_FORMAT_VERSION {
                    return Err(StoreError::CorruptMetadata {
                        path,
                        reason: format!(
                            "format_version {} is not supported (this build reads {})",
                            file.format_version, CONSISTENCY_FORMAT_VERSION
                        ),
                    });
                }
                Ok(ConsistencyRecord {
                    replica_id: file.replica_id,
                    epoch: file.epoch,
                    members: file.members,
                    region_size: file.region_size,
                    dirty_regions: file.dirty_regions,
                    clean: file.clean,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let record = ConsistencyRecord {
                    replica_id: format!("{:032x}", rand::random::<u128>()),
                    clean: true,
                    ..ConsistencyRecord::default()
                };
                record.save(dir)?;
                Ok(record)
            }
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let temp = dir.join(CONSISTENCY_TEMP_FILE);
        let path = dir.join(CONSISTENCY_FILE);
        let file = RecordFile {
            format_version: CONSISTENCY_FORMAT_VERSION,
            replica_id: self.replica_id.clone(),
            epoch: self.epoch,
            members: self.members.clone(),
            region_size: self.region_size,
            dirty_regions: self.dirty_regions.clone(),
            clean: self.clean,
        };
        let mut text = serde_json::to_vec(&file).map_err(|e| StoreError::CorruptMetadata {
            path: path.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        text.push(b'\n');
        replace_file(dir, &temp, &path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_an_identity_that_survives_reopen_and_updates() {
        let dir = tempfile::tempdir().unwrap();
        let first = ConsistencyRecord::load_or_init(dir.path()).unwrap();
        assert_eq!(first.replica_id.len(), 32);
        let mut changed = first.clone();
        changed.epoch = 7;
        changed.dirty_regions = vec![1, 5];
        changed.clean = false;
        changed.save(dir.path()).unwrap();
        assert_eq!(
            ConsistencyRecord::load_or_init(dir.path()).unwrap(),
            changed
        );
        let other = tempfile::tempdir().unwrap();
        let second = ConsistencyRecord::load_or_init(other.path()).unwrap();
        assert_ne!(first.replica_id, second.replica_id);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONSISTENCY_FILE), b"{not json").unwrap();
        let error = ConsistencyRecord::load_or_init(dir.path()).unwrap_err();
        assert!(error.to_string().contains(CONSISTENCY_FILE), "{error}");
    }
}
