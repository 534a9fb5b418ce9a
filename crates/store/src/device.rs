//! A store served as a [`BlockDevice`], so a frontend can export a local volume directly.
//!
//! Reads, writes, zeroing and trims run inline on the calling task: they are buffered
//! I/O that normally completes in the page cache within microseconds, and a hop to the
//! blocking pool per request (two thread switches) cost more than the I/O itself in the
//! replica benchmarks. Flush (fdatasync, milliseconds) runs on the blocking pool, so it
//! never stalls other requests on the same runtime thread.

use std::sync::Arc;

use bytes::Bytes;
use shorthorn_block::{BlockDevice, BlockError, BlockResult, Extent, WriteFlags, ZeroMode};

use crate::error::StoreError;
use crate::store::{Store, to_usize};

/// A shared store behind the async [`BlockDevice`] interface.
#[derive(Clone)]
pub struct StoreDevice {
    store: Arc<Store>,
}

impl StoreDevice {
    /// Wraps an open store.
    pub fn new(store: Arc<Store>) -> Self {
        StoreDevice { store }
    }

    /// Runs `work` on the blocking pool: for calls that wait on the disk.
    async fn run_blocking<T, F>(&self, work: F) -> BlockResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| BlockError::Io(format!("store task failed: {e}")))?
            .map_err(BlockError::from)
    }

    /// Runs `work` here: for calls that normally complete in the page cache.
    fn run_inline<T>(&self, work: impl FnOnce(&Store) -> Result<T, StoreError>) -> BlockResult<T> {
        work(&self.store).map_err(BlockError::from)
    }
}

impl BlockDevice for StoreDevice {
    fn size(&self) -> u64 {
        self.store.size()
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        self.run_inline(|store| {
            let size = store.size();
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(StoreError::OutOfRange { offset, len, size });
            }
            let mut buf = vec![0; to_usize(len)];
            store.read(offset, &mut buf)?;
            Ok(Bytes::from(buf))
        })
    }

    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        self.run_inline(|store| store.write(offset, &data))?;
        if flags.fua {
            self.flush().await
        } else {
            Ok(())
        }
    }

    async fn flush(&self) -> BlockResult<()> {
        self.run_blocking(Store::flush).await
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        self.run_inline(|store| store.write_zeroes(offset, len, mode))?;
        if flags.fua {
            self.flush().await
        } else {
            Ok(())
        }
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.run_inline(|store| store.trim(offset, len))
    }

    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        self.run_inline(|store| store.block_status(offset, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_reads_writes_and_status_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::create(dir.path(), "vol", 1 << 20).unwrap());
        let device = StoreDevice::new(store);
        device
            .write(100, Bytes::from_static(b"hello"), WriteFlags { fua: true })
            .await
            .unwrap();
        assert_eq!(&device.read(100, 5).await.unwrap()[..], b"hello");
        let status = device.block_status(0, 1 << 20).await.unwrap();
        assert_eq!(status[0].kind, shorthorn_block::ExtentKind::Data);
        assert_eq!(status[0].len, 4096);
        for (offset, len) in [((1 << 20) - 1, 2), (0, u64::MAX), (u64::MAX, 1)] {
            let err = device.read(offset, len).await.unwrap_err();
            assert!(matches!(err, BlockError::OutOfRange { .. }), "{err}");
        }
    }
}
