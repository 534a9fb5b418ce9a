#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]
//! The replica goes away mid-stream: every pending request fails at once (not at its
//! timeout), and the client reports the failure.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{MemDevice, bounded, options, start_tcp};
use shorthorn_block::{BlockDevice, WriteFlags};
use shorthorn_wire::WireClient;

/// Far longer than any test waits: requests must fail because of the disconnect.
const TIMEOUT: Duration = Duration::from_secs(30);

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    bounded(Duration::from_secs(5), what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_the_server_fails_every_pending_request_promptly() {
    let device = Arc::new(MemDevice::new(1 << 20).with_delay(Duration::from_secs(20)));
    let server = start_tcp(device.clone()).await;
    let client = Arc::new(
        WireClient::connect(&server.addr, options(3, TIMEOUT, Duration::ZERO))
            .await
            .unwrap(),
    );
    let mut pending = Vec::new();
    for i in 0..12u64 {
        let client = client.clone();
        pending.push(tokio::spawn(async move {
            if i % 2 == 0 {
                client.read(i * 4096, 4096).await.map(drop)
            } else {
                client
                    .write(i * 4096, Bytes::from_static(b"data"), WriteFlags::default())
                    .await
            }
        }));
    }
    wait_until("requests reaching the device", || device.started() == 12).await;
    assert_eq!(client.failed(), None);

    let aborted = Instant::now();
    server.task.abort();
    for request in pending {
        let err = bounded(Duration::from_secs(2), "pending request", request)
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("closed by the replica"), "{err}");
    }
    assert!(aborted.elapsed() < Duration::from_secs(2));
    let reason = bounded(Duration::from_secs(1), "wait_failed", client.wait_failed()).await;
    assert!(reason.contains("closed by the replica"), "{reason}");
    assert_eq!(client.failed(), Some(reason));
    assert!(client.read(0, 1).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_notices_the_server_going_away() {
    let device = Arc::new(MemDevice::new(1 << 20));
    let server = start_tcp(device).await;
    let client = WireClient::connect(&server.addr, options(2, TIMEOUT, Duration::ZERO))
        .await
        .unwrap();
    client.ping().await.unwrap();
    server.task.abort();
    let reason = bounded(Duration::from_secs(2), "wait_failed", client.wait_failed()).await;
    assert!(reason.contains("closed by the replica"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_in_flight_requests_then_closes() {
    let device = Arc::new(MemDevice::new(1 << 20).with_delay(Duration::from_millis(300)));
    let mut server = start_tcp(device.clone()).await;
    // One connection: with several, the first one the server closes fails the client and
    // with it the requests still waiting on the others (see docs/wire-protocol.md).
    let client = Arc::new(
        WireClient::connect(&server.addr, options(1, TIMEOUT, Duration::ZERO))
            .await
            .unwrap(),
    );
    let mut pending = Vec::new();
    for i in 0..6u64 {
        let client = client.clone();
        pending.push(tokio::spawn(async move {
            client
                .write(
                    i * 100,
                    Bytes::from(vec![i as u8 + 1; 100]),
                    WriteFlags::default(),
                )
                .await
        }));
    }
    wait_until("requests reaching the device", || device.started() == 6).await;
    server.shutdown();
    for request in pending {
        bounded(Duration::from_secs(5), "in-flight write", request)
            .await
            .unwrap()
            .unwrap();
    }
    for i in 0..6u64 {
        assert_eq!(device.snapshot(i * 100, 100), vec![i as u8 + 1; 100]);
    }
    bounded(Duration::from_secs(5), "server shutdown", server.task)
        .await
        .unwrap();
    let reason = bounded(Duration::from_secs(2), "wait_failed", client.wait_failed()).await;
    assert!(reason.contains("closed by the replica"), "{reason}");
    // The listener is gone too.
    assert!(
        WireClient::connect(&server.addr, options(1, TIMEOUT, Duration::ZERO))
            .await
            .is_err()
    );
}
