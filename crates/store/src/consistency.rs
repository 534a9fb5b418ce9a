//! The replica's consistency record (`consistency.json` beside `volume.json`): the
//! replica's identity and what the last engine persisted about which replicas are in
//! sync (epoch, members) and which regions may differ between them (dirty regions).
//! The engine rewrites it at membership changes and at flush boundaries, never on every
//! write; docs/consistency.md explains how it is used.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{StoreError, io_error};
use crate::meta::replace_file;

/// File name of the record inside a replica directory.
pub const CONSISTENCY_FILE: &str = "consistency.json";
const CONSISTENCY_TEMP_FILE: &str = "consistency.json.tmp";
const CONSISTENCY_FORMAT_VERSION: u32 = 1;

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyRecord {
    /// Always 1 for this layout.
    pub format_version: u32,
    /// Random identity given to the directory when the record was first written.
    pub replica_id: String,
    /// Raised by the engine at every open and every change of `members`; 0: never used.
    pub epoch: u64,
    /// Ids of the replicas that held every acknowledged write as of `epoch`.
    pub members: Vec<String>,
    /// Size of one dirty region in bytes (0 when none was ever recorded).
    pub region_size: u64,
    /// Indexes of regions that may differ between members.
    pub dirty_regions: Vec<u64>,
    /// True when the last engine closed the volume cleanly.
    pub clean: bool,
}

impl ConsistencyRecord {
    /// Reads the record in `dir`, or writes a fresh one with a new random identity if
    /// there is none yet (a new replica, or one made before records existed).
    pub fn load_or_init(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(CONSISTENCY_FILE);
        match fs::read(&path) {
            Ok(text) => {
                let record: ConsistencyRecord =
                    serde_json::from_slice(&text).map_err(|e| StoreError::CorruptMetadata {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if record.format_version != CONSISTENCY_FORMAT_VERSION {
                    return Err(StoreError::CorruptMetadata {
                        path,
                        reason: format!(
                            "format_version {} is not supported (this build reads {})",
                            record.format_version, CONSISTENCY_FORMAT_VERSION
                        ),
                    });
                }
                Ok(record)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let record = ConsistencyRecord {
                    format_version: CONSISTENCY_FORMAT_VERSION,
                    replica_id: format!("{:032x}", rand::random::<u128>()),
                    epoch: 0,
                    members: Vec::new(),
                    region_size: 0,
                    dirty_regions: Vec::new(),
                    clean: true,
                };
                record.save(dir)?;
                Ok(record)
            }
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    /// Writes the record atomically: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let temp = dir.join(CONSISTENCY_TEMP_FILE);
        let path = dir.join(CONSISTENCY_FILE);
        let mut text = serde_json::to_vec(self).map_err(|e| StoreError::CorruptMetadata {
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
