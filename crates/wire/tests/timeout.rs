#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]
//! A replica that stops answering: the request times out, the client fails for good, and
//! everything after fails fast. A silent peer is found by pings alone.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{MemDevice, bounded, options, start_tcp};
use shorthorn_block::{BlockDevice, WriteFlags};
use shorthorn_wire::frame::decode_frame;
use shorthorn_wire::{ClientError, Frame, Kind, ReplicaAddr, WireClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_millis(200);
const STALL_AT: u64 = 8192;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_request_times_out_fails_the_client_and_later_requests_fail_fast() {
    let device = Arc::new(MemDevice::new(1 << 20).stalling_reads_at(STALL_AT));
    let server = start_tcp(device.clone()).await;
    let client = Arc::new(
        WireClient::connect(&server.addr, options(2, TIMEOUT, Duration::ZERO))
            .await
            .unwrap(),
    );
    client
        .write(0, Bytes::from_static(b"before"), WriteFlags::default())
        .await
        .unwrap();
    assert_eq!(client.failed(), None);

    // A second caller waits on the other connection; it must fail together with the first.
    let bystander = {
        let client = client.clone();
        tokio::spawn(async move { client.read(STALL_AT, 10).await })
    };
    let started = Instant::now();
    let err = bounded(
        Duration::from_secs(5),
        "stalled read",
        client.read(STALL_AT, 10),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= TIMEOUT,
        "failed after {elapsed:?}, before the timeout"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let text = err.to_string();
    assert!(text.contains("no reply within 200ms"), "{text}");
    assert!(text.contains(&server.addr.to_string()), "{text}");
    assert!(text.contains(&format!("offset {STALL_AT}")), "{text}");

    let reason = client.failed().expect("client is failed after a timeout");
    assert!(reason.contains("read request"), "{reason}");
    assert_eq!(
        bounded(Duration::from_secs(1), "wait_failed", client.wait_failed()).await,
        reason
    );
    assert!(
        bounded(Duration::from_secs(1), "bystander", bystander)
            .await
            .unwrap()
            .is_err()
    );

    // Everything afterwards fails at once, without touching the network.
    for _ in 0..3 {
        let started = Instant::now();
        let err = client.read(0, 6).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "not fast: {:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains(&reason), "{err}");
        let started = Instant::now();
        assert!(matches!(
            client.ping().await,
            Err(ClientError::Failed { .. })
        ));
        assert!(
            client
                .write(0, Bytes::from_static(b"x"), WriteFlags::default())
                .await
                .is_err()
        );
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "not fast: {:?}",
            started.elapsed()
        );
    }
    // The first reason sticks.
    client.close("engine gave up");
    assert_eq!(client.failed(), Some(reason));
}

/// A fake replica that answers the Info handshake, then reads and ignores everything.
async fn silent_replica() -> ReplicaAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ReplicaAddr::from(listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = bytes::BytesMut::new();
                loop {
                    if socket.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    while let Ok(Some(frame)) = decode_frame(&mut buf) {
                        if frame.kind == Kind::Info {
                            let mut out = bytes::BytesMut::new();
                            Frame::info_reply(&frame, 1 << 20).encode(&mut out).unwrap();
                            socket.write_all(&out).await.unwrap();
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_detected_by_pings_without_any_request() {
    let addr = silent_replica().await;
    let started = Instant::now();
    let client = WireClient::connect(&addr, options(2, TIMEOUT, Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(client.size(), 1 << 20);
    let reason = bounded(Duration::from_secs(5), "ping failure", client.wait_failed()).await;
    let elapsed = started.elapsed();
    assert!(reason.contains("ping request"), "{reason}");
    assert!(reason.contains("no reply within 200ms"), "{reason}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert!(client.read(0, 1).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_waiting_still_fails_the_client_on_timeout() {
    let device = Arc::new(MemDevice::new(1 << 20).stalling_reads_at(STALL_AT));
    let server = start_tcp(device).await;
    let client = WireClient::connect(&server.addr, options(1, TIMEOUT, Duration::ZERO))
        .await
        .unwrap();
    // The caller gives up after 20 ms; the replica has still not answered at 200 ms.
    let gave_up = tokio::time::timeout(Duration::from_millis(20), client.read(STALL_AT, 1)).await;
    assert!(gave_up.is_err());
    assert_eq!(client.failed(), None);
    let reason = bounded(
        Duration::from_secs(2),
        "abandoned timeout",
        client.wait_failed(),
    )
    .await;
    assert!(reason.contains("stopped waiting"), "{reason}");
}
