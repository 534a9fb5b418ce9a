//! CSI names and ids and Shorthorn's names: a volume's id is its Shorthorn name; a
//! snapshot's id says where it lives, `snap://VOLUME/NAME` (a snapshot in the replicas)
//! or `bak://VOLUME/BACKUP` (a backup in a target).

use tonic::Status;

/// Longest name a CSI client may give (the spec's limit on strings it passes).
pub const MAX_CSI_NAME: usize = 128;

/// The Shorthorn name for CSI name `name`: the name itself when Shorthorn's rules take it
/// (1–63 letters, digits, `-`, `_`, `.`), else `csi-`, a readable part of it and a hash
/// of all of it, so the same CSI name always gives the same volume (CreateVolume is
/// idempotent by name).
pub fn shorthorn_name(name: &str) -> Result<String, Status> {
    require("name", name)?;
    if name.len() > MAX_CSI_NAME {
        return Err(Status::invalid_argument(format!(
            "name has {} bytes; at most {MAX_CSI_NAME}",
            name.len()
        )));
    }
    if shorthorn_block::validate_name(name).is_ok() {
        return Ok(name.to_string());
    }
    let readable: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let hash = blake3::hash(name.as_bytes()).to_hex();
    Ok(format!("csi-{readable}-{}", &hash[..16]))
}

/// A volume id from a request: required, and NOT_FOUND when it cannot name a volume.
pub fn volume_id(id: &str) -> Result<&str, Status> {
    require("volume_id", id)?;
    if shorthorn_block::validate_name(id).is_err() {
        return Err(Status::not_found(format!("no volume {id:?}")));
    }
    Ok(id)
}

/// INVALID_ARGUMENT unless the request's `field` is given (CSI sends absent fields as
/// empty strings).
pub fn require(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

/// Where a CSI snapshot lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotId {
    /// A snapshot in the volume's replicas (VolumeSnapshotClass `type: snap`).
    Snap {
        /// The volume.
        volume: String,
        /// The snapshot's name.
        name: String,
    },
    /// A backup in a backup target (`type: bak`).
    Bak {
        /// The volume backed up.
        volume: String,
        /// The backup's name.
        backup: String,
    },
}

impl SnapshotId {
    /// Parses an id; NOT_FOUND for one this driver never gave (empty: INVALID_ARGUMENT).
    pub fn parse(id: &str) -> Result<SnapshotId, Status> {
        require("snapshot_id", id)?;
        let unknown = || Status::not_found(format!("no snapshot {id:?}"));
        let (kind, rest) = id.split_once("://").ok_or_else(unknown)?;
        let (volume, name) = rest.split_once('/').ok_or_else(unknown)?;
        let valid = |n: &str| shorthorn_block::validate_name(n).is_ok();
        if !valid(volume) || !valid(name) {
            return Err(unknown());
        }
        let (volume, name) = (volume.to_string(), name.to_string());
        match kind {
            "snap" => Ok(SnapshotId::Snap { volume, name }),
            "bak" => Ok(SnapshotId::Bak {
                volume,
                backup: name,
            }),
            _ => Err(unknown()),
        }
    }

    /// The volume it was taken of.
    pub fn volume(&self) -> &str {
        match self {
            SnapshotId::Snap { volume, .. } | SnapshotId::Bak { volume, .. } => volume,
        }
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotId::Snap { volume, name } => write!(f, "snap://{volume}/{name}"),
            SnapshotId::Bak { volume, backup } => write!(f, "bak://{volume}/{backup}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_name_shorthorn_takes_is_kept_and_others_map_to_the_same_name_each_time() {
        assert_eq!(shorthorn_name("pvc-1234").unwrap(), "pvc-1234");
        let long = "sanity-Controller Service [Controller Server] CreateVolume should work";
        let mapped = shorthorn_name(long).unwrap();
        assert_eq!(mapped, shorthorn_name(long).unwrap());
        assert!(shorthorn_block::validate_name(&mapped).is_ok(), "{mapped}");
        assert_ne!(mapped, shorthorn_name(&format!("{long}!")).unwrap());
        assert_eq!(
            shorthorn_name("").unwrap_err().code(),
            Code::InvalidArgument
        );
        let too_long = "a".repeat(129);
        assert_eq!(
            shorthorn_name(&too_long).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn snapshot_ids_round_trip_and_strangers_are_not_found() {
        for id in ["snap://vol/s1", "bak://vol/backup-1a2b"] {
            assert_eq!(SnapshotId::parse(id).unwrap().to_string(), id);
        }
        for id in [
            "vol/s1",
            "snap://vol",
            "tar://vol/s1",
            "snap://../x",
            "snap://v/a b",
        ] {
            assert_eq!(
                SnapshotId::parse(id).unwrap_err().code(),
                Code::NotFound,
                "{id}"
            );
        }
        assert_eq!(
            SnapshotId::parse("").unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
