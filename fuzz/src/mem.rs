//! A small, correct in-memory [`BlockDevice`] for the NBD targets: bytes plus a
//! per-4-KiB allocation map, so block status reports both data and holes.

use std::sync::Mutex;

use bytes::Bytes;
use shorthorn_block::{
    BLOCK_SIZE, BlockDevice, BlockError, BlockResult, Extent, ExtentKind, WriteFlags, ZeroMode,
    check_range,
};

/// An in-memory device of a fixed size.
pub struct MemDevice {
    size: u64,
    state: Mutex<State>,
}

struct State {
    data: Vec<u8>,
    allocated: Vec<bool>,
}

fn idx(n: u64) -> usize {
    usize::try_from(n).expect("in-memory device offsets fit in usize")
}

impl MemDevice {
    /// A device of `size` bytes, all zero and unallocated.
    pub fn new(size: u64) -> Self {
        MemDevice {
            size,
            state: Mutex::new(State {
                data: vec![0; idx(size)],
                allocated: vec![false; idx(size.div_ceil(BLOCK_SIZE))],
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies `src` (or zeros) to `offset`; allocates touched blocks, or deallocates the
    /// blocks wholly covered when `allocate` is false.
    fn fill(&self, offset: u64, len: u64, src: Option<&[u8]>, allocate: bool) {
        if len == 0 {
            return;
        }
        let mut state = self.state();
        let range = idx(offset)..idx(offset + len);
        match src {
            Some(src) => state.data[range].copy_from_slice(src),
            None => state.data[range].fill(0),
        }
        for block in offset / BLOCK_SIZE..=(offset + len - 1) / BLOCK_SIZE {
            let start = block * BLOCK_SIZE;
            let whole = start >= offset && start + BLOCK_SIZE <= offset + len;
            if allocate {
                state.allocated[idx(block)] = true;
            } else if whole {
                state.allocated[idx(block)] = false;
            }
        }
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        check_range(offset, len, self.size)?;
        let state = self.state();
        Ok(Bytes::copy_from_slice(
            &state.data[idx(offset)..idx(offset + len)],
        ))
    }

    async fn write(&self, offset: u64, data: Bytes, _flags: WriteFlags) -> BlockResult<()> {
        check_range(offset, data.len() as u64, self.size)?;
        self.fill(offset, data.len() as u64, Some(&data), true);
        Ok(())
    }

    async fn flush(&self) -> BlockResult<()> {
        Ok(())
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        _flags: WriteFlags,
    ) -> BlockResult<()> {
        check_range(offset, len, self.size)?;
        self.fill(offset, len, None, mode == ZeroMode::Allocate);
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        check_range(offset, len, self.size)?;
        self.fill(offset, len, None, false);
        Ok(())
    }

    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        check_range(offset, len, self.size)?;
        if len == 0 {
            return Err(BlockError::InvalidArgument(
                "block status of zero bytes".into(),
            ));
        }
        let state = self.state();
        let mut out = Vec::new();
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let block = at / BLOCK_SIZE;
            let stop = ((block + 1) * BLOCK_SIZE).min(end);
            let kind = if state.allocated[idx(block)] {
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
