//! Growing a volume. Older layers keep their length and read as zeros past it.

use std::path::Path;

use crate::error::StoreError;
use crate::meta::check_size;
use crate::store::Store;

impl Store {
    /// Grows the volume to `new_size` bytes (a multiple of 4096). The new range reads as
    /// zeros. Growing to the current size does nothing; shrinking is refused.
    ///
    /// Crash safety: an intent (`pending_expand`) is committed first, then the head file
    /// is grown, then the new size is committed. An open that finds the intent finishes
    /// the expansion.
    pub fn expand(&self, new_size: u64) -> Result<(), StoreError> {
        check_size(new_size)?;
        let _op = self.ops.lock();
        let mut state = self.state.write();
        self.check_healthy()?;
        let size = state.meta.size;
        if new_size == size {
            return Ok(());
        }
        if new_size < size {
            return Err(StoreError::InvalidSize {
                size: new_size,
                reason: format!("volumes only grow; the current size is {size} bytes"),
            });
        }
        check_file_size_fits(&self.dir, new_size)?;
        let mut meta = state.meta.clone();
        meta.pending_expand = Some(new_size);
        self.commit(&mut state, meta)?;
        if let Err(e) = state.finish_expand(&self.dir, new_size) {
            // The intent is on disk and the head may have grown: only a reopen can finish.
            self.poison(&e);
            return Err(e);
        }
        tracing::info!(dir = %self.dir.display(), size = new_size, "expanded");
        Ok(())
    }
}

/// Refuses a size the directory's filesystem cannot hold in one file (ext4: 16 TiB)
/// before the intent is committed: an intent that cannot be finished would keep the
/// store from opening. Probed with a sparse scratch file; nothing is allocated.
fn check_file_size_fits(dir: &Path, size: u64) -> Result<(), StoreError> {
    let probe = dir.join(".expand-probe");
    let result = std::fs::File::create(&probe).and_then(|file| file.set_len(size));
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::FBIG.raw_os_error()) => {
            Err(StoreError::InvalidSize {
                size,
                reason: format!(
                    "the filesystem under {} cannot hold a file that large",
                    dir.display()
                ),
            })
        }
        Err(e) => Err(crate::error::io_error("probing the new size", &probe, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_the_filesystem_cannot_hold_is_refused_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), "vol", 1 << 20).unwrap();
        // Past ext4's and tmpfs's largest file; within what the store accepts.
        let huge = 1u64 << 50;
        match store.expand(huge) {
            Err(refused) => assert!(refused.to_string().contains("cannot hold"), "{refused}"),
            // A filesystem with larger files (XFS, btrfs) holds it: nothing to refuse.
            Ok(()) => return,
        }
        // Nothing half done: still healthy, reopens at the old size, grows normally.
        store.expand(2 << 20).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.size(), 2 << 20);
        assert!(!dir.path().join(".expand-probe").exists());
    }
}
