//! Test doubles shared by the integration tests: an in-memory block device with optional
//! random per-request delays and a request that never completes, a listener that counts
//! connections, and a server started on an ephemeral port.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use shorthorn_block::{
    BLOCK_SIZE, BlockDevice, BlockError, BlockResult, Extent, ExtentKind, WriteFlags, ZeroMode,
    align_down, check_range,
};
use shorthorn_wire::{ClientOptions, Listener, ReplicaAddr, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An in-memory device. Every request sleeps a random time up to `max_delay` first (so
/// concurrent requests complete in a different order than they started), and records its
/// start sequence number in `completions` when it finishes.
pub struct MemDevice {
    data: Mutex<Vec<u8>>,
    max_delay: Duration,
    /// A read starting at this offset never completes.
    stall_read_at: Option<u64>,
    /// Block status answers with the first extent only (a valid prefix reply).
    status_prefix_only: bool,
    /// Any request touching this offset fails with an I/O error.
    fail_at: Option<u64>,
    /// A read starting at this offset panics.
    panic_read_at: Option<u64>,
    /// The size reported by `size()`, if not the real one (to provoke out-of-range
    /// errors from the device rather than from the client's own check).
    advertised_size: Option<u64>,
    started: AtomicU64,
    completions: Mutex<Vec<u64>>,
}

impl MemDevice {
    pub fn new(size: usize) -> Self {
        MemDevice {
            data: Mutex::new(vec![0; size]),
            max_delay: Duration::ZERO,
            stall_read_at: None,
            status_prefix_only: false,
            fail_at: None,
            panic_read_at: None,
            advertised_size: None,
            started: AtomicU64::new(0),
            completions: Mutex::new(Vec::new()),
        }
    }

    pub fn with_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    pub fn stalling_reads_at(mut self, offset: u64) -> Self {
        self.stall_read_at = Some(offset);
        self
    }

    pub fn failing_at(mut self, offset: u64) -> Self {
        self.fail_at = Some(offset);
        self
    }

    pub fn panicking_on_read_at(mut self, offset: u64) -> Self {
        self.panic_read_at = Some(offset);
        self
    }

    pub fn advertising_size(mut self, size: u64) -> Self {
        self.advertised_size = Some(size);
        self
    }

    fn check(&self, offset: u64, len: u64) -> BlockResult<()> {
        if let Some(bad) = self.fail_at {
            if offset <= bad && bad < offset + len.max(1) {
                return Err(BlockError::Io(format!("injected failure at {bad}")));
            }
        }
        check_range(offset, len, self.len())
    }

    pub fn with_prefix_status(mut self) -> Self {
        self.status_prefix_only = true;
        self
    }

    /// Fills the device with a pattern derived from each byte's offset.
    pub fn fill_pattern(&self) {
        let mut data = self.data.lock();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = pattern(i as u64);
        }
    }

    /// Requests that have reached the device.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Start sequence numbers in completion order.
    pub fn completions(&self) -> Vec<u64> {
        self.completions.lock().clone()
    }

    pub fn snapshot(&self, offset: u64, len: usize) -> Vec<u8> {
        let start = offset as usize;
        self.data.lock()[start..start + len].to_vec()
    }

    async fn enter(&self) -> u64 {
        let seq = self.started.fetch_add(1, Ordering::SeqCst);
        if !self.max_delay.is_zero() {
            let micros = rand::rng().random_range(0..=self.max_delay.as_micros() as u64);
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
        seq
    }

    fn leave(&self, seq: u64) {
        self.completions.lock().push(seq);
    }

    fn len(&self) -> u64 {
        self.data.lock().len() as u64
    }
}

/// The byte `fill_pattern` puts at `offset`.
pub fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8 ^ (offset >> 12) as u8
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.advertised_size.unwrap_or_else(|| self.len())
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        let seq = self.enter().await;
        if self.stall_read_at == Some(offset) {
            std::future::pending::<()>().await;
        }
        assert_ne!(self.panic_read_at, Some(offset), "injected panic");
        self.check(offset, len)?;
        let data =
            Bytes::copy_from_slice(&self.data.lock()[offset as usize..(offset + len) as usize]);
        self.leave(seq);
        Ok(data)
    }

    async fn write(&self, offset: u64, data: Bytes, _flags: WriteFlags) -> BlockResult<()> {
        let seq = self.enter().await;
        self.check(offset, data.len() as u64)?;
        self.data.lock()[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        self.leave(seq);
        Ok(())
    }

    async fn flush(&self) -> BlockResult<()> {
        let seq = self.enter().await;
        self.leave(seq);
        Ok(())
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        _mode: ZeroMode,
        _flags: WriteFlags,
    ) -> BlockResult<()> {
        self.trim(offset, len).await
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        let seq = self.enter().await;
        self.check(offset, len)?;
        self.data.lock()[offset as usize..(offset + len) as usize].fill(0);
        self.leave(seq);
        Ok(())
    }

    /// Reports 4 KiB blocks holding any non-zero byte as data, the rest as zero.
    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        let seq = self.enter().await;
        self.check(offset, len)?;
        let data = self.data.lock();
        let end = offset + len;
        let mut extents = Vec::new();
        let mut at = offset;
        while at < end {
            let block_end = (align_down(at, BLOCK_SIZE) + BLOCK_SIZE).min(end);
            let block = &data[align_down(at, BLOCK_SIZE) as usize..block_end as usize];
            let kind = if block.iter().any(|b| *b != 0) {
                ExtentKind::Data
            } else {
                ExtentKind::Zero
            };
            Extent::push_merged(
                &mut extents,
                Extent {
                    offset: at,
                    len: block_end - at,
                    kind,
                },
            );
            at = block_end;
        }
        drop(data);
        if self.status_prefix_only {
            extents.truncate(1);
        }
        self.leave(seq);
        Ok(extents)
    }
}

/// A listener that counts the connections it accepts.
pub struct CountingListener<L> {
    pub inner: L,
    pub accepted: Arc<AtomicUsize>,
}

impl<L: Listener> Listener for CountingListener<L> {
    type Stream = L::Stream;

    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send {
        let accepted = self.accepted.clone();
        let inner = self.inner.accept();
        async move {
            let result = inner.await;
            if result.is_ok() {
                accepted.fetch_add(1, Ordering::SeqCst);
            }
            result
        }
    }
}

/// A server running [`serve`] in a task.
pub struct TestServer {
    pub addr: ReplicaAddr,
    pub task: JoinHandle<()>,
    pub accepted: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Asks the server to shut down gracefully.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts serving `device` on an ephemeral localhost TCP port.
pub async fn start_tcp<D: BlockDevice + 'static>(device: Arc<D>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ReplicaAddr::from(listener.local_addr().unwrap());
    start_on(listener, addr, device)
}

/// Starts serving `device` on `listener`, reachable at `addr`.
pub fn start_on<L: Listener, D: BlockDevice + 'static>(
    listener: L,
    addr: ReplicaAddr,
    device: Arc<D>,
) -> TestServer {
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = CountingListener {
        inner: listener,
        accepted: accepted.clone(),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, device, async move {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        task,
        accepted,
        shutdown: Some(tx),
    }
}

/// Client options with explicit connection count, timeout and ping interval.
pub fn options(connections: usize, timeout: Duration, ping_interval: Duration) -> ClientOptions {
    ClientOptions {
        connections,
        request_timeout: timeout,
        ping_interval,
    }
}

/// Fails the test instead of hanging when `future` takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}
