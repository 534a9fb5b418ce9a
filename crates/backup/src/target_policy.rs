//! Which backup targets a daemon running as root may open for its callers.
//!
//! `shorthorn backup …` run by hand opens whatever its user names: that user chose it.
//! The manager and its agents open targets that an API caller named, as root, so a
//! `file://` URL would let any holder of the user token have root write backup objects
//! (or read a "backupstore") anywhere, and an `nfs://` URL mount any host's export. Those
//! daemons take a [`TargetPolicy`] from their command line instead: `file://` only at or
//! under the directories it lists (after symlinks are resolved), `nfs://` only from the
//! hosts it lists. `s3://` reaches a bucket over the network with its own credentials and
//! is always allowed.

use std::path::{Component, Path, PathBuf};

use crate::error::{PolicyError, TargetError};

/// The `file://` roots and `nfs://` hosts a daemon may open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Canonical directories under which `file://` targets may live.
    file_roots: Vec<PathBuf>,
    /// Hosts whose NFS exports may be mounted.
    nfs_hosts: Vec<String>,
}

impl TargetPolicy {
    /// A policy allowing `file://` targets under `file_roots` (each created if missing,
    /// then resolved) and `nfs://` targets on `nfs_hosts`.
    pub fn new(file_roots: &[PathBuf], nfs_hosts: &[String]) -> Result<TargetPolicy, PolicyError> {
        let mut canonical = Vec::with_capacity(file_roots.len());
        for root in file_roots {
            let root_error = |op| {
                move |source| PolicyError::Root {
                    op,
                    root: root.clone(),
                    source,
                }
            };
            std::fs::create_dir_all(root).map_err(root_error("creating"))?;
            let resolved = root.canonicalize().map_err(root_error("resolving"))?;
            if resolved == Path::new("/") {
                return Err(PolicyError::SlashRoot { root: root.clone() });
            }
            canonical.push(resolved);
        }
        Ok(TargetPolicy {
            file_roots: canonical,
            nfs_hosts: nfs_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        })
    }

    /// The `file://` roots, resolved.
    pub fn file_roots(&self) -> &[PathBuf] {
        &self.file_roots
    }

    /// Refuses a target URL this policy does not allow, saying which flag would.
    pub fn check(&self, url: &str) -> Result<(), PolicyError> {
        crate::Target::check_url(url)?;
        let parsed = url::Url::parse(url).map_err(|source| TargetError::NotAUrl {
            url: url.to_string(),
            source,
        })?;
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| PolicyError::NotLocalPath {
                        url: url.to_string(),
                    })?;
                let resolved = resolve_existing_prefix(url, &path)?;
                if self
                    .file_roots
                    .iter()
                    .any(|root| resolved.starts_with(root))
                {
                    return Ok(());
                }
                Err(PolicyError::FileNotAllowed {
                    url: url.to_string(),
                    resolved,
                    roots: self.describe_roots(),
                })
            }
            "nfs" => {
                let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
                if self.nfs_hosts.contains(&host) {
                    return Ok(());
                }
                Err(PolicyError::NfsNotAllowed {
                    url: url.to_string(),
                    host,
                })
            }
            _ => Ok(()),
        }
    }

    fn describe_roots(&self) -> String {
        if self.file_roots.is_empty() {
            return "none".into();
        }
        let roots: Vec<String> = self
            .file_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        roots.join(", ")
    }
}

/// `path` (of target `url`) with symlinks resolved as far as it exists; the missing rest
/// (a target a first backup will create) appended as written. `..` in the missing rest
/// is refused: it cannot be resolved without the directories it climbs out of.
fn resolve_existing_prefix(url: &str, path: &Path) -> Result<PathBuf, PolicyError> {
    let no_directory = || PolicyError::NoExistingDirectory {
        url: url.to_string(),
        path: path.to_path_buf(),
    };
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    while !existing.exists() {
        let name = existing
            .file_name()
            .ok_or_else(no_directory)?
            .to_os_string();
        missing.push(name);
        if !existing.pop() {
            return Err(no_directory());
        }
    }
    let mut resolved = existing
        .canonicalize()
        .map_err(|source| PolicyError::Resolve {
            url: url.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
    for name in missing.into_iter().rev() {
        let name = PathBuf::from(name);
        if name
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(PolicyError::ClimbsOut {
                url: url.to_string(),
                path: path.to_path_buf(),
            });
        }
        resolved.push(name);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Chain;

    fn policy(dir: &Path) -> TargetPolicy {
        TargetPolicy::new(&[dir.join("backups")], &["nfs.example".into()]).unwrap()
    }

    #[test]
    fn file_targets_must_resolve_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy(dir.path());
        let root = dir.path().join("backups");
        let root = root.display();
        for allowed in [
            format!("file://{root}"),
            format!("file://{root}/a/not/yet/made"),
        ] {
            policy.check(&allowed).unwrap();
        }
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("backups/link"))
            .unwrap();
        for refused in [
            "file:///etc".to_string(),
            "file:///".to_string(),
            format!("file://{}/outside", dir.path().display()),
            format!("file://{root}/../outside"),
            format!("file://{root}/%2e%2e/outside"),
            format!("file://{root}/link/deeper"),
            format!("file://{root}-sibling"),
        ] {
            let err = policy.check(&refused).unwrap_err();
            assert!(
                Chain(&err).to_string().contains("--file-target-root"),
                "{refused}: {err:#}"
            );
        }
    }

    #[test]
    fn nfs_hosts_must_be_listed_and_s3_is_always_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy(dir.path());
        policy.check("nfs://NFS.example:/export").unwrap();
        let err = policy.check("nfs://10.0.0.1:/export").unwrap_err();
        assert!(
            Chain(&err)
                .to_string()
                .contains("--nfs-target-host 10.0.0.1"),
            "{err:#}"
        );
        policy.check("s3://bucket@us-east-1/prefix").unwrap();
        assert!(policy.check("ftp://x/y").is_err());
    }

    #[test]
    fn an_empty_policy_allows_no_local_target_and_slash_is_no_root() {
        let err = TargetPolicy::default().check("file:///tmp").unwrap_err();
        assert!(Chain(&err).to_string().contains("(none)"), "{err:#}");
        assert!(TargetPolicy::new(&[PathBuf::from("/")], &[]).is_err());
    }
}
