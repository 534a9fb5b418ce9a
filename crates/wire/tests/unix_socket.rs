#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]
//! The same protocol over a unix socket, as used when engine and replica share a node.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{MemDevice, bounded, options, start_on};
use shorthorn_block::{BlockDevice, Extent, ExtentKind, WriteFlags, ZeroMode};
use shorthorn_store::{Store, StoreDevice};
use shorthorn_wire::{ReplicaAddr, WireClient, WireServer};
use tokio::net::UnixListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_kind_works_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let addr: ReplicaAddr = format!("unix://{}", path.display()).parse().unwrap();
    assert_eq!(addr, ReplicaAddr::unix(&path));
    let device = Arc::new(MemDevice::new(1 << 20));
    let mut server = start_on(listener, addr.clone(), WireServer::new(device.clone()));

    let client = WireClient::connect(
        &addr,
        options(2, Duration::from_secs(5), Duration::from_millis(100)),
    )
    .await
    .unwrap();
    assert_eq!(client.size(), 1 << 20);
    assert_eq!(client.refresh_size().await.unwrap(), 1 << 20);
    assert!(client.ping().await.unwrap() < Duration::from_secs(1));

    client
        .write(
            5000,
            Bytes::from_static(b"over a unix socket"),
            WriteFlags { fua: true },
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        &client.read(5000, 18).await.unwrap()[..],
        b"over a unix socket"
    );
    assert_eq!(
        client.block_status(0, 3 * 4096).await.unwrap(),
        vec![
            Extent {
                offset: 0,
                len: 4096,
                kind: ExtentKind::Zero
            },
            Extent {
                offset: 4096,
                len: 4096,
                kind: ExtentKind::Data
            },
            Extent {
                offset: 8192,
                len: 4096,
                kind: ExtentKind::Zero
            },
        ]
    );
    client
        .write_zeroes(5000, 5, ZeroMode::MayUnmap, WriteFlags::default())
        .await
        .unwrap();
    assert_eq!(
        &client.read(5000, 18).await.unwrap()[..],
        b"\0\0\0\0\0a unix socket"
    );
    client.trim(5000, 18).await.unwrap();
    assert_eq!(device.snapshot(5000, 18), vec![0; 18]);

    // A request past the end is refused by the client itself and leaves it healthy.
    let err = client.read((1 << 20) - 1, 2).await.unwrap_err();
    assert!(
        matches!(err, shorthorn_block::BlockError::OutOfRange { .. }),
        "{err}"
    );
    assert_eq!(client.failed(), None);

    // Several pings pass while idle.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client.failed(), None);

    server.shutdown();
    bounded(Duration::from_secs(5), "server shutdown", server.task)
        .await
        .unwrap();
    let reason = bounded(Duration::from_secs(2), "wait_failed", client.wait_failed()).await;
    assert!(reason.contains("closed by the replica"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_served_over_a_unix_socket_and_reports_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::create(&dir.path().join("vol"), "vol", 1 << 20).unwrap());
    let path = dir.path().join("store.sock");
    let addr = ReplicaAddr::unix(&path);
    let _server = start_on(
        UnixListener::bind(&path).unwrap(),
        addr.clone(),
        WireServer::new(Arc::new(StoreDevice::new(store))),
    );
    let client = WireClient::connect(&addr, options(1, Duration::from_secs(5), Duration::ZERO))
        .await
        .unwrap();
    let data = Bytes::from(vec![0xa5; 10_000]);
    client
        .write(4000, data.clone(), WriteFlags::default())
        .await
        .unwrap();
    assert_eq!(client.read(4000, 10_000).await.unwrap(), data);
    let status = client.block_status(0, 1 << 20).await.unwrap();
    assert_eq!(status.iter().map(|e| e.len).sum::<u64>(), 1 << 20);
    assert!(
        status
            .iter()
            .any(|e| e.kind == ExtentKind::Data && e.offset <= 4000 && e.end() >= 14_000)
    );
    assert_eq!(client.failed(), None);
}
