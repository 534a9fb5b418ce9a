//! A replica's data directory on its node. The agent derives where it lives from its own
//! disks and the replica's name (callers never send a path), marks each directory it
//! creates, and removes a directory only when it is strictly under one of its disks and
//! its marker names the replica being removed: the agent runs as root, and a removal is
//! a `remove_dir_all`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::protocol::AgentError;

/// The file in each replica directory saying which replica the agent created it for.
pub const MARKER_FILE: &str = ".shorthorn-replica";
/// Where replica directories go on a disk.
const REPLICAS_DIR: &str = "replicas";

/// What the marker file records (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// The replica the directory was created for.
    pub replica: String,
    /// Its volume.
    pub volume: String,
}

/// `<disk>/replicas/<replica>`: where a replica's data lives on a disk.
pub fn replica_dir(disk_path: &str, replica: &str) -> PathBuf {
    Path::new(disk_path).join(REPLICAS_DIR).join(replica)
}

/// The replica directory of `replica` (of `volume`) on the disk at `disk_path`, created
/// and marked if missing. An existing directory is used when its marker names this
/// replica; one without a marker is adopted only if it is empty (a creation cut short)
/// or holds a replica store (made before markers existed). Anything else is refused.
pub fn prepare(disk_path: &str, replica: &str, volume: &str) -> Result<PathBuf, AgentError> {
    let disk = canonical_disk(disk_path)?;
    let root = disk.join(REPLICAS_DIR);
    fs::create_dir_all(&root)
        .with_context(|| format!("replica {replica}: creating {}", root.display()))?;
    let root = root
        .canonicalize()
        .with_context(|| format!("replica {replica}: resolving {}", root.display()))?;
    if !strictly_under(&root, &disk) {
        return Err(AgentError::Refused(format!(
            "replica {replica}: {} leads to {}, outside disk {}",
            disk.join(REPLICAS_DIR).display(),
            root.display(),
            disk.display()
        )));
    }
    let dir = root.join(replica);
    let wanted = Marker {
        replica: replica.to_string(),
        volume: volume.to_string(),
    };
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(&dir)
                .with_context(|| format!("replica {replica}: creating {}", dir.display()))?;
            write_marker(&dir, &wanted)?;
            tracing::info!(replica, dir = %dir.display(), "replica directory created");
            return Ok(dir);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("replica {replica}: reading {}", dir.display()))
                .into());
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(AgentError::Refused(format!(
                "replica {replica}: {} exists and is not a directory (a symlink or a file); left alone",
                dir.display()
            )));
        }
        Ok(_) => {}
    }
    match read_marker(&dir, replica)? {
        Some(marker) if marker == wanted => Ok(dir),
        Some(marker) => Err(AgentError::Refused(format!(
            "replica {replica}: {} belongs to replica {} of volume {}",
            dir.display(),
            marker.replica,
            marker.volume
        ))),
        None if adoptable(&dir, replica)? => {
            write_marker(&dir, &wanted)?;
            tracing::info!(replica, dir = %dir.display(), "unmarked replica directory adopted");
            Ok(dir)
        }
        None => Err(AgentError::Refused(format!(
            "replica {replica}: {} exists without a {MARKER_FILE} marker and holds no replica; left alone",
            dir.display()
        ))),
    }
}

/// Removes `replica`'s directory from whichever of `disk_paths` holds it, after checking
/// it is this replica's (see [`check_removable`]). Nothing there counts as done (removal
/// is retried until it succeeds). Returns the directories removed.
pub fn remove(disk_paths: &[&str], replica: &str) -> Result<Vec<PathBuf>, AgentError> {
    let mut disks = Vec::new();
    for path in disk_paths {
        match canonical_disk(path) {
            Ok(disk) => disks.push(disk),
            // A missing disk holds no replica to remove.
            Err(e) => tracing::warn!(replica, disk = %path, error = %e, "disk unreadable"),
        }
    }
    let mut removed = Vec::new();
    for disk in &disks {
        let candidate = disk.join(REPLICAS_DIR).join(replica);
        match fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!(
                        "replica {replica}: reading {}",
                        candidate.display()
                    ))
                    .into());
            }
            Ok(_) => {}
        }
        let dir = check_removable(&candidate, replica, &disks)?;
        fs::remove_dir_all(&dir)
            .with_context(|| format!("replica {replica}: removing {}", dir.display()))?;
        tracing::info!(replica, dir = %dir.display(), "replica directory removed");
        removed.push(dir);
    }
    Ok(removed)
}

/// The canonical form of `candidate` if it may be removed as `replica`'s directory: not
/// a symlink, resolving to a directory strictly under one of `disks` (canonical), with a
/// marker naming `replica`. The reason otherwise.
pub fn check_removable(
    candidate: &Path,
    replica: &str,
    disks: &[PathBuf],
) -> Result<PathBuf, AgentError> {
    let refused =
        |why: String| AgentError::Refused(format!("replica {replica}: {why}; not removed"));
    let meta = fs::symlink_metadata(candidate)
        .with_context(|| format!("replica {replica}: reading {}", candidate.display()))?;
    if !meta.is_dir() {
        return Err(refused(format!(
            "{} is not a directory (a symlink or a file)",
            candidate.display()
        )));
    }
    let dir = candidate
        .canonicalize()
        .with_context(|| format!("replica {replica}: resolving {}", candidate.display()))?;
    if !disks.iter().any(|disk| strictly_under(&dir, disk)) {
        return Err(refused(format!(
            "{} is outside every disk of this node",
            dir.display()
        )));
    }
    match read_marker(&dir, replica)? {
        Some(marker) if marker.replica == replica => Ok(dir),
        Some(marker) => Err(refused(format!(
            "the marker in {} names replica {}",
            dir.display(),
            marker.replica
        ))),
        None => Err(refused(format!(
            "{} has no {MARKER_FILE} marker, so the agent did not create it",
            dir.display()
        ))),
    }
}

fn canonical_disk(path: &str) -> Result<PathBuf, AgentError> {
    Path::new(path)
        .canonicalize()
        .with_context(|| format!("disk {path} unreadable"))
        .map_err(AgentError::from)
}

/// Whether `path` is below `base`, not `base` itself (both canonical; by component).
fn strictly_under(path: &Path, base: &Path) -> bool {
    path != base && path.starts_with(base)
}

/// The marker in `dir`; none if there is no marker file. A marker that is a symlink, or
/// unreadable as a marker, is refused.
fn read_marker(dir: &Path, replica: &str) -> Result<Option<Marker>, AgentError> {
    let path = dir.join(MARKER_FILE);
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("replica {replica}: reading {}", path.display()))
                .into());
        }
        Ok(meta) if !meta.is_file() => {
            return Err(AgentError::Refused(format!(
                "replica {replica}: marker {} is not a regular file",
                path.display()
            )));
        }
        Ok(_) => {}
    }
    let text = fs::read(&path)
        .with_context(|| format!("replica {replica}: reading {}", path.display()))?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        AgentError::Refused(format!(
            "replica {replica}: marker {} is not a replica marker: {e}",
            path.display()
        ))
    })
}

/// Written whole (temporary file, fsync, rename): a marker is never half there.
fn write_marker(dir: &Path, marker: &Marker) -> Result<(), AgentError> {
    let path = dir.join(MARKER_FILE);
    let temp = dir.join(format!("{MARKER_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(&serde_json::to_vec(marker)?)?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        fs::File::open(dir)?.sync_all()
    };
    write()
        .with_context(|| format!("replica {}: writing {}", marker.replica, path.display()))
        .map_err(AgentError::from)
}

/// An unmarked directory the agent may take as the replica's: empty, or holding a
/// replica store.
fn adoptable(dir: &Path, replica: &str) -> Result<bool, AgentError> {
    if dir.join(shorthorn_store::METADATA_FILE).is_file() {
        return Ok(true);
    }
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("replica {replica}: listing {}", dir.display()))?;
    Ok(entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICA: &str = "vol-r-0000abcd";
    const VOLUME: &str = "vol";

    /// A temporary directory with a disk in it (`disk`) and room beside it.
    fn setup() -> (tempfile::TempDir, String) {
        let root = tempfile::tempdir().unwrap();
        let disk = root.path().join("disk");
        fs::create_dir(&disk).unwrap();
        let disk = disk.display().to_string();
        (root, disk)
    }

    fn is_refused(result: Result<impl std::fmt::Debug, AgentError>) -> String {
        match result {
            Err(AgentError::Refused(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_prepared_directory_is_marked_and_removed_by_name() {
        let (_root, disk) = setup();
        let dir = prepare(&disk, REPLICA, VOLUME).unwrap();
        assert_eq!(dir, replica_dir(&disk, REPLICA).canonicalize().unwrap());
        let marker: Marker =
            serde_json::from_slice(&fs::read(dir.join(MARKER_FILE)).unwrap()).unwrap();
        assert_eq!(
            marker,
            Marker {
                replica: REPLICA.into(),
                volume: VOLUME.into()
            }
        );
        fs::write(dir.join("volume.json"), b"{}").unwrap();
        // Prepared again (a restart): the same directory, kept.
        assert_eq!(prepare(&disk, REPLICA, VOLUME).unwrap(), dir);
        assert_eq!(remove(&[&disk], REPLICA).unwrap(), vec![dir.clone()]);
        assert!(!dir.exists());
        // Already gone: done, nothing removed.
        assert!(remove(&[&disk], REPLICA).unwrap().is_empty());
    }

    #[test]
    fn a_disk_path_is_canonicalised() {
        let (root, disk) = setup();
        let link = root.path().join("disk-link");
        std::os::unix::fs::symlink(&disk, &link).unwrap();
        let roundabout = format!("{}/../disk/", disk);
        let dir = prepare(&roundabout, REPLICA, VOLUME).unwrap();
        assert!(
            dir.starts_with(Path::new(&disk).canonicalize().unwrap()),
            "{dir:?}"
        );
        assert_eq!(
            remove(&[link.to_str().unwrap()], REPLICA).unwrap(),
            vec![dir.clone()]
        );
        assert!(!dir.exists());
    }

    #[test]
    fn a_directory_without_a_marker_is_not_removed() {
        let (_root, disk) = setup();
        let victim = replica_dir(&disk, REPLICA);
        fs::create_dir_all(&victim).unwrap();
        fs::write(victim.join("precious"), b"data").unwrap();
        let message = is_refused(remove(&[&disk], REPLICA));
        assert!(
            message.contains(REPLICA) && message.contains("marker"),
            "{message}"
        );
        assert!(victim.join("precious").exists());
        // Nor adopted by a start: it holds files but no replica store.
        is_refused(prepare(&disk, REPLICA, VOLUME));
        assert!(!victim.join(MARKER_FILE).exists());
    }

    #[test]
    fn a_marker_of_another_replica_is_refused() {
        let (_root, disk) = setup();
        let other = "vol-r-ffff0000";
        let dir = prepare(&disk, other, VOLUME).unwrap();
        // The other replica's directory renamed to this replica's name.
        let renamed = replica_dir(&disk, REPLICA);
        fs::rename(&dir, &renamed).unwrap();
        let message = is_refused(remove(&[&disk], REPLICA));
        assert!(message.contains(other), "{message}");
        assert!(renamed.join(MARKER_FILE).exists());
        is_refused(prepare(&disk, REPLICA, VOLUME));
    }

    #[test]
    fn a_symlink_out_of_the_disk_is_refused() {
        let (root, disk) = setup();
        let outside = root.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(
            outside.join(MARKER_FILE),
            serde_json::to_vec(&Marker {
                replica: REPLICA.into(),
                volume: VOLUME.into(),
            })
            .unwrap(),
        )
        .unwrap();
        // The replica's own name a symlink to a marked directory outside the disk.
        fs::create_dir(Path::new(&disk).join(REPLICAS_DIR)).unwrap();
        std::os::unix::fs::symlink(&outside, replica_dir(&disk, REPLICA)).unwrap();
        is_refused(remove(&[&disk], REPLICA));
        is_refused(prepare(&disk, REPLICA, VOLUME));
        assert!(outside.join(MARKER_FILE).exists());

        // `replicas` itself a symlink out of the disk.
        let (root, disk) = setup();
        let outside = root.path().join("outside");
        fs::create_dir_all(outside.join(REPLICA)).unwrap();
        fs::write(
            outside.join(REPLICA).join(MARKER_FILE),
            serde_json::to_vec(&Marker {
                replica: REPLICA.into(),
                volume: VOLUME.into(),
            })
            .unwrap(),
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, Path::new(&disk).join(REPLICAS_DIR)).unwrap();
        let message = is_refused(remove(&[&disk], REPLICA));
        assert!(message.contains("outside every disk"), "{message}");
        is_refused(prepare(&disk, REPLICA, VOLUME));
        assert!(outside.join(REPLICA).join(MARKER_FILE).exists());
    }

    #[test]
    fn a_symlinked_marker_is_refused() {
        let (root, disk) = setup();
        let dir = replica_dir(&disk, REPLICA);
        fs::create_dir_all(&dir).unwrap();
        let elsewhere = root.path().join("marker");
        fs::write(
            &elsewhere,
            serde_json::to_vec(&Marker {
                replica: REPLICA.into(),
                volume: VOLUME.into(),
            })
            .unwrap(),
        )
        .unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join(MARKER_FILE)).unwrap();
        is_refused(remove(&[&disk], REPLICA));
        assert!(dir.exists());
    }

    #[test]
    fn an_unmarked_replica_store_or_empty_directory_is_adopted() {
        let (_root, disk) = setup();
        let dir = replica_dir(&disk, REPLICA);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(shorthorn_store::METADATA_FILE), b"{}").unwrap();
        prepare(&disk, REPLICA, VOLUME).unwrap();
        assert!(dir.join(MARKER_FILE).is_file());

        let empty = replica_dir(&disk, "vol-r-00000001");
        fs::create_dir_all(&empty).unwrap();
        prepare(&disk, "vol-r-00000001", VOLUME).unwrap();
        assert!(empty.join(MARKER_FILE).is_file());
    }
}
