//! The benchmark's scratch directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};

/// A fresh directory for one run's files, removed (with everything in it) when dropped.
pub struct WorkDir {
    /// Absolute path of the directory.
    pub path: PathBuf,
}

impl WorkDir {
    /// Creates a new directory `run-<pid>-<nanos>` inside `base` (created if missing).
    pub fn create(base: &Path) -> Result<Self> {
        fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = base.join(format!("run-{}-{nanos:09}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let path =
            fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// Removes `paths` (files, or directories with everything in them) from up to 16 threads
/// at once. Freeing many scattered extents is slow on a filesystem mounted with online
/// discard (each freed extent waits for a discard), and the waits of different files
/// overlap.
pub fn remove_in_parallel(paths: &[PathBuf]) -> Result<()> {
    let per_thread = paths.len().div_ceil(16).max(1);
    std::thread::scope(|scope| {
        let removers: Vec<_> = paths
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || -> Result<()> {
                    for path in chunk {
                        let removed = if path.is_dir() {
                            fs::remove_dir_all(path)
                        } else {
                            fs::remove_file(path)
                        };
                        removed.with_context(|| format!("removing {}", path.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for r in removers {
            r.join()
                .map_err(|_| anyhow!("a removing thread panicked"))??;
        }
        Ok(())
    })
}
