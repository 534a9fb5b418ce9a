#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]
//! The connection fence: an engine that takes a replica over closes the connections of
//! an earlier session, so frames still in flight on them (TCP retransmits after a cut
//! link) can never be applied afterwards. Connections made after the fence serve on.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{MemDevice, bounded, options};
use shorthorn_block::{BlockDevice, WriteFlags};
use shorthorn_wire::{ConnectionFence, ReplicaAddr, WireClient, WireServer};
use tokio::net::TcpListener;

#[tokio::test]
async fn fenced_connections_end_and_later_ones_serve() {
    let device = Arc::new(MemDevice::new(1 << 20));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ReplicaAddr::from(listener.local_addr().unwrap());
    let fence = ConnectionFence::default();
    let server = tokio::spawn(
        WireServer::new(device.clone())
            .fence(fence.clone())
            .serve(listener, std::future::pending()),
    );
    let opts = options(2, Duration::from_secs(5), Duration::from_secs(60));
    let old = WireClient::connect(&addr, opts).await.unwrap();
    old.write(0, Bytes::from_static(b"old session"), WriteFlags::default())
        .await
        .unwrap();

    let closed = bounded(Duration::from_secs(10), "the fence", fence.close_all()).await;
    assert_eq!(closed, 2, "both connections of the old client are fenced");
    // The old session can no longer write.
    let late = old
        .write(
            4096,
            Bytes::from_static(b"late frame"),
            WriteFlags::default(),
        )
        .await;
    assert!(late.is_err(), "a fenced connection accepted a write");
    let landed = device.read(4096, 10).await.unwrap();
    assert_eq!(&landed[..], &[0u8; 10], "nothing of the late write landed");

    // A new session is served as usual; a fence with nothing to close closes nothing.
    let new = WireClient::connect(&addr, opts).await.unwrap();
    new.write(
        4096,
        Bytes::from_static(b"new session"),
        WriteFlags::default(),
    )
    .await
    .unwrap();
    let read = new.read(4096, 11).await.unwrap();
    assert_eq!(&read[..], b"new session");
    server.abort();
}
