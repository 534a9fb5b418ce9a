//! The devices behind the NBD targets: shorthorn-block's in-memory `testing::MemDevice`
//! (bytes plus a per-4-KiB allocation map, so block status reports data and holes) and a
//! huge device that stores nothing.

use bytes::Bytes;
pub use shorthorn_block::testing::MemDevice;
use shorthorn_block::{
    BlockDevice, BlockError, BlockResult, Extent, ExtentKind, WriteFlags, ZeroMode, check_range,
};

/// A device of any size (up to `u64::MAX`) that stores nothing: reads return zeros and
/// block status follows a fixed pattern of 1 MiB data and zero regions. Lets the NBD
/// targets reach offsets near the end of the 64-bit range, where overflow bugs live.
pub struct HugeDevice {
    size: u64,
}

/// Granularity of [`HugeDevice`]'s data/zero pattern.
const HUGE_REGION: u64 = 1 << 20;

impl HugeDevice {
    /// A device of `size` bytes.
    pub fn new(size: u64) -> Self {
        HugeDevice { size }
    }
}

impl BlockDevice for HugeDevice {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        check_range(offset, len, self.size)?;
        // Shared zeros: no allocation or zeroing per read (the server caps reads at 32 MiB).
        static ZEROS: [u8; 32 << 20] = [0; 32 << 20];
        let zeros = usize::try_from(len)
            .ok()
            .and_then(|n| ZEROS.get(..n))
            .ok_or_else(|| BlockError::InvalidArgument(format!("read of {len} bytes")))?;
        Ok(Bytes::from_static(zeros))
    }

    async fn write(&self, offset: u64, data: Bytes, _flags: WriteFlags) -> BlockResult<()> {
        check_range(offset, data.len() as u64, self.size)
    }

    async fn flush(&self) -> BlockResult<()> {
        Ok(())
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        _mode: ZeroMode,
        _flags: WriteFlags,
    ) -> BlockResult<()> {
        check_range(offset, len, self.size)
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        check_range(offset, len, self.size)
    }

    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        check_range(offset, len, self.size)?;
        if len == 0 {
            return Err(BlockError::InvalidArgument(
                "block status of zero bytes".into(),
            ));
        }
        let end = offset + len;
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let region = at / HUGE_REGION;
            let stop = region
                .checked_add(1)
                .and_then(|r| r.checked_mul(HUGE_REGION))
                .map_or(end, |s| s.min(end));
            let kind = if region.is_multiple_of(3) {
                ExtentKind::Data
            } else {
                ExtentKind::Zero
            };
            Extent::push_merged(
                &mut out,
                Extent {
                    offset: at,
                    len: stop - at,
                    kind,
                },
            );
            at = stop;
        }
        Ok(out)
    }
}

/// The device behind the fuzzed exports: one type, so one server can export both kinds.
pub enum FuzzDevice {
    /// A small device that keeps its data.
    Mem(MemDevice),
    /// A huge device that keeps nothing.
    Huge(HugeDevice),
}

impl BlockDevice for FuzzDevice {
    fn size(&self) -> u64 {
        match self {
            FuzzDevice::Mem(d) => d.size(),
            FuzzDevice::Huge(d) => d.size(),
        }
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        match self {
            FuzzDevice::Mem(d) => d.read(offset, len).await,
            FuzzDevice::Huge(d) => d.read(offset, len).await,
        }
    }

    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        match self {
            FuzzDevice::Mem(d) => d.write(offset, data, flags).await,
            FuzzDevice::Huge(d) => d.write(offset, data, flags).await,
        }
    }

    async fn flush(&self) -> BlockResult<()> {
        match self {
            FuzzDevice::Mem(d) => d.flush().await,
            FuzzDevice::Huge(d) => d.flush().await,
        }
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        match self {
            FuzzDevice::Mem(d) => d.write_zeroes(offset, len, mode, flags).await,
            FuzzDevice::Huge(d) => d.write_zeroes(offset, len, mode, flags).await,
        }
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        match self {
            FuzzDevice::Mem(d) => d.trim(offset, len).await,
            FuzzDevice::Huge(d) => d.trim(offset, len).await,
        }
    }

    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        match self {
            FuzzDevice::Mem(d) => d.block_status(offset, len).await,
            FuzzDevice::Huge(d) => d.block_status(offset, len).await,
        }
    }
}
