#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]
//! Block status replies may describe only a prefix of the range; the client asks again for
//! the rest and returns one merged, gap-free list covering the whole range.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{MemDevice, options, start_tcp};
use shorthorn_block::{BlockDevice, Extent, ExtentKind, WriteFlags};
use shorthorn_wire::WireClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_replies_are_continued_until_the_range_is_covered() {
    // The device answers every block-status request with its first extent only.
    let device = Arc::new(MemDevice::new(1 << 20).with_prefix_status());
    let server = start_tcp(device.clone()).await;
    let client = WireClient::connect(
        &server.addr,
        options(2, Duration::from_secs(5), Duration::ZERO),
    )
    .await
    .unwrap();
    for block in [1u64, 2, 5, 6, 7, 200] {
        client
            .write(
                block * 4096 + 1,
                Bytes::from_static(b"x"),
                WriteFlags::default(),
            )
            .await
            .unwrap();
    }
    let started = device.started();
    let status = client.block_status(100, (1 << 20) - 200).await.unwrap();
    let zero = |offset, len| Extent {
        offset,
        len,
        kind: ExtentKind::Zero,
    };
    let data = |offset, len| Extent {
        offset,
        len,
        kind: ExtentKind::Data,
    };
    assert_eq!(
        status,
        vec![
            zero(100, 4096 - 100),
            data(4096, 2 * 4096),
            zero(3 * 4096, 2 * 4096),
            data(5 * 4096, 3 * 4096),
            zero(8 * 4096, 192 * 4096),
            data(200 * 4096, 4096),
            zero(201 * 4096, (1 << 20) - 100 - 201 * 4096),
        ]
    );
    // One request per unmerged extent reported by the device.
    assert_eq!(device.started() - started, 7);
}
