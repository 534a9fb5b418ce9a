//! Growing a volume. Older layers keep their length and read as zeros past it.

use std::path::Path;

use crate::error::StoreError;
use crate::meta::check_size;
use crate::store::{State, Store};

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
        let mut meta = state.meta.clone();
        meta.pending_expand = Some(new_size);
        self.commit(&mut state, meta)?;
        if let Err(e) = finish_expand(&self.dir, &mut state, new_size) {
            // The intent is on disk and the head may have grown: only a reopen can finish.
            self.poison(&e);
            return Err(e);
        }
        tracing::info!(dir = %self.dir.display(), size = new_size, "expanded");
        Ok(())
    }
}

/// Grows the head file to `target` and commits the new size, clearing the intent.
pub(crate) fn finish_expand(dir: &Path, state: &mut State, target: u64) -> Result<(), StoreError> {
    fail::fail_point!("store::expand::after-intent", |_| Err(
        StoreError::Injected("store::expand::after-intent")
    ));
    let head = state.head().clone();
    head.file.set_len(target)?;
    head.file.sync_all()?;
    fail::fail_point!("store::expand::after-resize", |_| Err(
        StoreError::Injected("store::expand::after-resize")
    ));
    let mut meta = state.meta.clone();
    meta.size = target;
    meta.pending_expand = None;
    if let Some(layer) = meta.layer_mut(head.id) {
        layer.size = target;
    }
    meta.save(dir)?;
    state.meta = meta;
    Ok(())
}
