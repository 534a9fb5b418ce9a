#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]
//! Errors raised by the replica's device travel back as the same `BlockError` variant,
//! with the replica and request named, and do not fail the client: only the transport
//! failing does. (The engine decides what a device error means for the replica.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{MemDevice, options, start_tcp};
use shorthorn_block::{BlockDevice, BlockError, WriteFlags};
use shorthorn_wire::WireClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_errors_keep_their_variant_and_context_and_leave_the_client_healthy() {
    let device = Arc::new(
        MemDevice::new(1 << 20)
            .failing_at(40_000)
            .panicking_on_read_at(80_000)
            .advertising_size(2 << 20),
    );
    let server = start_tcp(device).await;
    let client = WireClient::connect(
        &server.addr,
        options(2, Duration::from_secs(5), Duration::ZERO),
    )
    .await
    .unwrap();
    assert_eq!(client.size(), 2 << 20);

    let err = client
        .write(39_999, Bytes::from_static(b"abc"), WriteFlags::default())
        .await
        .unwrap_err();
    let BlockError::Io(message) = &err else {
        panic!("expected an I/O error, got {err}");
    };
    assert!(message.contains("injected failure at 40000"), "{message}");
    assert!(message.contains(&server.addr.to_string()), "{message}");
    assert!(message.contains("write request"), "{message}");
    assert!(message.contains("offset 39999"), "{message}");

    // The client believes the device is 2 MiB, the device knows it is 1 MiB: the
    // device's out-of-range error comes back with the device's own size.
    let err = client.read((1 << 20) + 10, 5).await.unwrap_err();
    match err {
        BlockError::OutOfRange { offset, len, size } => {
            assert_eq!((offset, len, size), ((1 << 20) + 10, 5, 1 << 20));
        }
        other => panic!("expected out of range, got {other}"),
    }

    // A device that panics still gets its request answered (with an I/O error) instead of
    // leaving the client to time out.
    let err = client.read(80_000, 10).await.unwrap_err();
    assert!(matches!(err, BlockError::Io(_)), "{err}");
    assert!(err.to_string().contains("failed unexpectedly"), "{err}");

    assert_eq!(client.failed(), None);
    client
        .write(0, Bytes::from_static(b"still fine"), WriteFlags::default())
        .await
        .unwrap();
    assert_eq!(&client.read(0, 10).await.unwrap()[..], b"still fine");
}
