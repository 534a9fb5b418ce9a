//! The one in-memory [`BlockDevice`] of Shorthorn's tests and fuzz targets (feature
//! `testing`): bytes plus a per-4-KiB allocation map, so block status reports data and
//! holes like a sparse store, with the fault hooks the frontends' and the wire's tests
//! need and counters of what reached it.
//!
//! Hooks fixed at construction (a failing offset, a stalling read, per-request delays)
//! are builder methods; hooks a test flips while requests run (`fail_io`,
//! `fail_writes`, `panic_on_flush`, `stall_flush`) are public atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::{
    BLOCK_SIZE, BlockDevice, BlockError, BlockResult, Extent, ExtentKind, WriteFlags, ZeroMode,
    check_range,
};

/// An in-memory device of a fixed size; see the module documentation.
pub struct MemDevice {
    size: u64,
    state: Mutex<State>,
    /// Every request waits a pseudo-random time up to this first, so concurrent requests
    /// complete in another order than they started.
    max_delay: Duration,
    /// A read starting at this offset never completes.
    stall_read_at: Option<u64>,
    /// A read starting at this offset panics.
    panic_read_at: Option<u64>,
    /// Any request touching this offset fails with an I/O error.
    fail_at: Option<u64>,
    /// Block status answers with its first extent only (a valid prefix reply).
    status_prefix_only: bool,
    /// The size `size()` reports, if not the real one (to provoke out-of-range errors
    /// from the device rather than from a client's own check).
    advertised_size: Option<u64>,
    /// Every request fails with `BlockError::Io`.
    pub fail_io: AtomicBool,
    /// Every request that changes data (write, write-zeroes, trim) fails.
    pub fail_writes: AtomicBool,
    /// Flushes panic (a panicking device must not hang its clients).
    pub panic_on_flush: AtomicBool,
    /// Flushes never complete (for shutdown grace periods).
    pub stall_flush: AtomicBool,
    /// Flushes completed.
    pub flushes: AtomicU64,
    /// Writes and write-zeroes with FUA seen.
    pub fua_writes: AtomicU64,
    /// Write-zeroes with `ZeroMode::Allocate` seen.
    pub allocating_zeroes: AtomicU64,
    started: AtomicU64,
    completions: Mutex<Vec<u64>>,
}

struct State {
    data: Vec<u8>,
    allocated: Vec<bool>,
}

/// `n` as an index: test devices live in memory, so their offsets fit.
fn idx(n: u64) -> usize {
    usize::try_from(n).expect("in-memory device offsets fit in usize")
}

/// Locks `mutex`, also after a test's injected panic poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The byte [`MemDevice::fill_pattern`] puts at `offset`.
#[must_use]
pub fn pattern(offset: u64) -> u8 {
    let low = u8::try_from(offset % 251).expect("below 251");
    low ^ (offset >> 12).to_le_bytes()[0]
}

impl MemDevice {
    /// A device of `size` bytes, all zero and unallocated, with no faults.
    #[must_use]
    pub fn new(size: u64) -> Self {
        MemDevice {
            size,
            state: Mutex::new(State {
                data: vec![0; idx(size)],
                allocated: vec![false; idx(size.div_ceil(BLOCK_SIZE))],
            }),
            max_delay: Duration::ZERO,
            stall_read_at: None,
            panic_read_at: None,
            fail_at: None,
            status_prefix_only: false,
            advertised_size: None,
            fail_io: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            panic_on_flush: AtomicBool::new(false),
            stall_flush: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            fua_writes: AtomicU64::new(0),
            allocating_zeroes: AtomicU64::new(0),
            started: AtomicU64::new(0),
            completions: Mutex::new(Vec::new()),
        }
    }

    /// Every request first waits a pseudo-random time up to `max_delay`.
    #[must_use]
    pub fn with_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// A read starting at `offset` never completes.
    #[must_use]
    pub fn stalling_reads_at(mut self, offset: u64) -> Self {
        self.stall_read_at = Some(offset);
        self
    }

    /// A read starting at `offset` panics.
    #[must_use]
    pub fn panicking_on_read_at(mut self, offset: u64) -> Self {
        self.panic_read_at = Some(offset);
        self
    }

    /// Any request touching `offset` fails with an I/O error.
    #[must_use]
    pub fn failing_at(mut self, offset: u64) -> Self {
        self.fail_at = Some(offset);
        self
    }

    /// Block status answers with its first extent only.
    #[must_use]
    pub fn with_prefix_status(mut self) -> Self {
        self.status_prefix_only = true;
        self
    }

    /// `size()` reports `size` instead of the real size.
    #[must_use]
    pub fn advertising_size(mut self, size: u64) -> Self {
        self.advertised_size = Some(size);
        self
    }

    /// Fills the whole device with [`pattern`], every block allocated.
    pub fn fill_pattern(&self) {
        let mut state = lock(&self.state);
        for (offset, byte) in (0..).zip(state.data.iter_mut()) {
            *byte = pattern(offset);
        }
        state.allocated.fill(true);
    }

    /// A copy of `len` bytes at `offset`, read without going through a request.
    #[must_use]
    pub fn snapshot(&self, offset: u64, len: usize) -> Vec<u8> {
        let start = idx(offset);
        lock(&self.state).data[start..start + len].to_vec()
    }

    /// Requests that have reached the device.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The start sequence numbers of completed requests, in completion order.
    pub fn completions(&self) -> Vec<u64> {
        lock(&self.completions).clone()
    }

    /// Counts the request, yields once (as a real device's request would), waits its
    /// delay, and applies the faults every request kind shares.
    async fn enter(&self, offset: u64, len: u64, changes_data: bool) -> BlockResult<u64> {
        let seq = self.started.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if !self.max_delay.is_zero() {
            // A splitmix64 step of the sequence number: spread without an RNG.
            let mut x = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            let max = u64::try_from(self.max_delay.as_micros()).unwrap_or(u64::MAX);
            tokio::time::sleep(Duration::from_micros(x % max.saturating_add(1))).await;
        }
        if self.fail_io.load(Ordering::SeqCst) {
            return Err(BlockError::Io("injected failure".into()));
        }
        if changes_data && self.fail_writes.load(Ordering::SeqCst) {
            return Err(BlockError::Io("injected write failure".into()));
        }
        if let Some(bad) = self.fail_at
            && offset <= bad
            && bad < offset.saturating_add(len.max(1))
        {
            return Err(BlockError::Io(format!("injected failure at {bad}")));
        }
        check_range(offset, len, self.size)?;
        Ok(seq)
    }

    fn leave(&self, seq: u64) {
        lock(&self.completions).push(seq);
    }

    /// Copies `src` (or zeros) to `offset`; allocates the touched blocks, or deallocates
    /// the blocks wholly covered when `allocate` is false.
    fn fill(&self, offset: u64, len: u64, src: Option<&[u8]>, allocate: bool) {
        if len == 0 {
            return;
        }
        let mut state = lock(&self.state);
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
        self.advertised_size.unwrap_or(self.size)
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        if self.stall_read_at == Some(offset) {
            self.started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        assert_ne!(self.panic_read_at, Some(offset), "injected panic");
        let seq = self.enter(offset, len, false).await?;
        let data = Bytes::copy_from_slice(&lock(&self.state).data[idx(offset)..idx(offset + len)]);
        self.leave(seq);
        Ok(data)
    }

    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        let seq = self.enter(offset, data.len() as u64, true).await?;
        if flags.fua {
            self.fua_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.fill(offset, data.len() as u64, Some(&data), true);
        self.leave(seq);
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
        let seq = self.enter(0, 0, false).await?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.leave(seq);
        Ok(())
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        let seq = self.enter(offset, len, true).await?;
        if mode == ZeroMode::Allocate {
            self.allocating_zeroes.fetch_add(1, Ordering::SeqCst);
        }
        if flags.fua {
            self.fua_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.fill(offset, len, None, mode == ZeroMode::Allocate);
        self.leave(seq);
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        let seq = self.enter(offset, len, true).await?;
        self.fill(offset, len, None, false);
        self.leave(seq);
        Ok(())
    }

    /// Allocated 4 KiB blocks are data, the others zero; merged, and cut to the first
    /// extent with [`MemDevice::with_prefix_status`].
    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        let seq = self.enter(offset, len, false).await?;
        let mut out = Vec::new();
        {
            let state = lock(&self.state);
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
        }
        if self.status_prefix_only {
            out.truncate(1);
        }
        self.leave(seq);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_allocate_trims_free_whole_blocks_and_zeroes_may_allocate() {
        let device = MemDevice::new(4 * BLOCK_SIZE);
        device
            .write(
                BLOCK_SIZE + 1,
                Bytes::from_static(b"ab"),
                WriteFlags::default(),
            )
            .await
            .unwrap();
        device
            .write_zeroes(
                3 * BLOCK_SIZE,
                BLOCK_SIZE,
                ZeroMode::Allocate,
                WriteFlags { fua: true },
            )
            .await
            .unwrap();
        let kinds = |extents: Vec<Extent>| -> Vec<(u64, u64, ExtentKind)> {
            extents.iter().map(|e| (e.offset, e.len, e.kind)).collect()
        };
        let status = device.block_status(0, 4 * BLOCK_SIZE).await.unwrap();
        assert_eq!(
            kinds(status),
            vec![
                (0, BLOCK_SIZE, ExtentKind::Zero),
                (BLOCK_SIZE, BLOCK_SIZE, ExtentKind::Data),
                (2 * BLOCK_SIZE, BLOCK_SIZE, ExtentKind::Zero),
                (3 * BLOCK_SIZE, BLOCK_SIZE, ExtentKind::Data),
            ]
        );
        assert_eq!(device.read(BLOCK_SIZE, 3).await.unwrap(), &b"\0ab"[..]);
        // A trim of part of a block zeroes it but keeps it allocated.
        device.trim(BLOCK_SIZE + 1, 1).await.unwrap();
        assert_eq!(device.snapshot(BLOCK_SIZE, 3), b"\0\0b");
        device.trim(BLOCK_SIZE, BLOCK_SIZE).await.unwrap();
        let status = device.block_status(0, 2 * BLOCK_SIZE).await.unwrap();
        assert_eq!(kinds(status), vec![(0, 2 * BLOCK_SIZE, ExtentKind::Zero)]);
        assert_eq!(device.allocating_zeroes.load(Ordering::SeqCst), 1);
        assert_eq!(device.fua_writes.load(Ordering::SeqCst), 1);
        assert_eq!(device.started(), 7);
        assert_eq!(device.completions(), (0..7).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn faults_fail_the_requests_they_name_and_nothing_else() {
        let device = MemDevice::new(1 << 16)
            .failing_at(5000)
            .advertising_size(1 << 20);
        assert_eq!(device.size(), 1 << 20);
        assert!(matches!(
            device.read(4096, 4096).await,
            Err(BlockError::Io(m)) if m.contains("5000")
        ));
        device.read(0, 4096).await.unwrap();
        assert!(matches!(
            device.read(1 << 17, 1).await,
            Err(BlockError::OutOfRange { .. })
        ));
        device.fail_writes.store(true, Ordering::SeqCst);
        assert!(device.trim(0, 1).await.is_err());
        device.read(0, 1).await.unwrap();
        device.fail_writes.store(false, Ordering::SeqCst);
        device.fail_io.store(true, Ordering::SeqCst);
        assert!(device.flush().await.is_err());
        device.fail_io.store(false, Ordering::SeqCst);
        device.flush().await.unwrap();
        assert_eq!(device.flushes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn fill_pattern_puts_the_pattern_everywhere() {
        let device = MemDevice::new(3 * BLOCK_SIZE);
        device.fill_pattern();
        let copy = device.snapshot(0, 3 * 4096);
        assert!(
            (0..)
                .zip(copy)
                .all(|(offset, byte)| byte == pattern(offset))
        );
        assert_ne!(pattern(1), pattern(4097));
    }
}
