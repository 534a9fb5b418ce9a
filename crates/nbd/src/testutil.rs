//! An in-memory block device for unit tests, with failure injection.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test device sizes fit in memory"
)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use shorthorn_block::{
    BLOCK_SIZE, BlockDevice, BlockError, BlockResult, Extent, ExtentKind, WriteFlags, ZeroMode,
    check_range,
};

/// Bytes in memory plus a per-4-KiB-block allocation map, so block status has holes.
pub(crate) struct MemDevice {
    size: u64,
    state: Mutex<(Vec<u8>, Vec<bool>)>,
    /// Every request fails with `BlockError::Io`.
    pub fail_io: AtomicBool,
    /// Flushes panic (to test that a panicking device does not hang a client).
    pub panic_on_flush: AtomicBool,
    /// Flushes never complete (to test the shutdown grace period).
    pub stall_flush: AtomicBool,
    /// Flushes done so far.
    pub flushes: AtomicU64,
    /// FUA writes seen.
    pub fua_writes: AtomicU64,
    /// Write-zeroes calls with `ZeroMode::Allocate`.
    pub allocating_zeroes: AtomicU64,
}

impl MemDevice {
    pub(crate) fn new(size: u64) -> Self {
        let blocks = size.div_ceil(BLOCK_SIZE) as usize;
        MemDevice {
            size,
            state: Mutex::new((vec![0; size as usize], vec![false; blocks])),
            fail_io: AtomicBool::new(false),
            panic_on_flush: AtomicBool::new(false),
            stall_flush: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            fua_writes: AtomicU64::new(0),
            allocating_zeroes: AtomicU64::new(0),
        }
    }

    fn check(&self, offset: u64, len: u64) -> BlockResult<()> {
        if self.fail_io.load(Ordering::SeqCst) {
            return Err(BlockError::Io("injected failure".into()));
        }
        check_range(offset, len, self.size)
    }

    fn fill(&self, offset: u64, len: u64, byte: Option<&[u8]>, allocate: bool) {
        let mut state = self.state.lock().unwrap();
        let (data, map) = &mut *state;
        let range = offset as usize..(offset + len) as usize;
        match byte {
            Some(src) => data[range].copy_from_slice(src),
            None => data[range].fill(0),
        }
        if len == 0 {
            return;
        }
        let first = offset / BLOCK_SIZE;
        let last = (offset + len - 1) / BLOCK_SIZE;
        for block in first..=last {
            let start = block * BLOCK_SIZE;
            let whole = start >= offset && start + BLOCK_SIZE <= offset + len;
            if allocate {
                map[block as usize] = true;
            } else if whole {
                map[block as usize] = false;
            }
        }
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        self.check(offset, len)?;
        let state = self.state.lock().unwrap();
        Ok(Bytes::copy_from_slice(
            &state.0[offset as usize..(offset + len) as usize],
        ))
    }

    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        self.check(offset, data.len() as u64)?;
        if flags.fua {
            self.fua_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.fill(offset, data.len() as u64, Some(&data), true);
        Ok(())
    }

    async fn flush(&self) -> BlockResult<()> {
        assert!(
            !self.panic_on_flush.load(Ordering::SeqCst),
            "injected flush panic"
        );
        if self.stall_flush.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.check(0, 0)?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        self.check(offset, len)?;
        if mode == ZeroMode::Allocate {
            self.allocating_zeroes.fetch_add(1, Ordering::SeqCst);
        }
        if flags.fua {
            self.fua_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.fill(offset, len, None, mode == ZeroMode::Allocate);
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.check(offset, len)?;
        self.fill(offset, len, None, false);
        Ok(())
    }

    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        self.check(offset, len)?;
        let state = self.state.lock().unwrap();
        let mut out = Vec::new();
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let block = at / BLOCK_SIZE;
            let stop = ((block + 1) * BLOCK_SIZE).min(end);
            let kind = if state.1[block as usize] {
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
