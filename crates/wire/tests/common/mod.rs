//! Test doubles shared by the integration tests: a listener that counts connections and a
//! server started on an ephemeral port. The in-memory device is shorthorn-block's
//! `testing::MemDevice`, re-exported here.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shorthorn_block::BlockDevice;
pub use shorthorn_block::testing::MemDevice;
use shorthorn_wire::{ClientOptions, Listener, ReplicaAddr, ServerOptions, WireServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

/// A [`WireServer`] running in a task.
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
    start_tcp_with(device, ServerOptions::default()).await
}

/// [`start_tcp`] with per-connection limits other than the defaults.
pub async fn start_tcp_with<D: BlockDevice + 'static>(
    device: Arc<D>,
    server_options: ServerOptions,
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ReplicaAddr::from(listener.local_addr().unwrap());
    start_on(
        listener,
        addr,
        WireServer::new(device).options(server_options),
    )
}

/// Starts `server` on `listener`, reachable at `addr`.
pub fn start_on<L: Listener, D: BlockDevice + 'static>(
    listener: L,
    addr: ReplicaAddr,
    server: WireServer<D>,
) -> TestServer {
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = CountingListener {
        inner: listener,
        accepted: accepted.clone(),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
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
