//! [`MeteredDevice`]: a [`BlockDevice`] wrapper that records every request it passes on.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shorthorn_block::{BlockDevice, BlockResult, Extent, WriteFlags, ZeroMode};

use super::{Metrics, OpKind};

/// A [`BlockDevice`] that times every request on `inner` and records it in `metrics`.
/// `size` and `block_status` pass through unrecorded. A request whose future is dropped
/// before it completes is not recorded.
pub struct MeteredDevice<D> {
    inner: Arc<D>,
    metrics: Arc<Metrics>,
}

impl<D> MeteredDevice<D> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: Arc<D>, metrics: Arc<Metrics>) -> Self {
        MeteredDevice { inner, metrics }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &Arc<D> {
        &self.inner
    }

    /// Where requests are recorded.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    async fn timed<T>(
        &self,
        kind: OpKind,
        bytes: u64,
        request: impl Future<Output = BlockResult<T>>,
    ) -> BlockResult<T> {
        let start = Instant::now();
        let result = request.await;
        let end = Instant::now();
        self.metrics.record_at(
            end,
            kind,
            bytes,
            end.saturating_duration_since(start),
            result.is_ok(),
        );
        result
    }
}

impl<D> Clone for MeteredDevice<D> {
    fn clone(&self) -> Self {
        MeteredDevice {
            inner: self.inner.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<D> fmt::Debug for MeteredDevice<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredDevice")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl<D: BlockDevice> BlockDevice for MeteredDevice<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        self.timed(OpKind::Read, len, self.inner.read(offset, len))
            .await
    }

    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        let len = data.len() as u64;
        self.timed(OpKind::Write, len, self.inner.write(offset, data, flags))
            .await
    }

    async fn flush(&self) -> BlockResult<()> {
        self.timed(OpKind::Flush, 0, self.inner.flush()).await
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        self.timed(
            OpKind::WriteZeroes,
            len,
            self.inner.write_zeroes(offset, len, mode, flags),
        )
        .await
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.timed(OpKind::Trim, len, self.inner.trim(offset, len))
            .await
    }

    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        self.inner.block_status(offset, len).await
    }
}
