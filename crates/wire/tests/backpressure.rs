#![allow(clippy::unwrap_used, reason = "test code")]
//! A connection runs at most `ServerOptions::max_in_flight` requests at once: the rest
//! wait in the socket (the server stops reading), and other connections are not held up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MemDevice, bounded, options, start_tcp_with};
use shorthorn_block::BlockDevice;
use shorthorn_wire::{ServerOptions, WireClient};

const STALL_AT: u64 = 8192;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_runs_at_most_max_in_flight_requests_and_others_go_on() {
    let device = Arc::new(MemDevice::new(1 << 20).stalling_reads_at(STALL_AT));
    let limits = ServerOptions {
        max_in_flight: 2,
        ..ServerOptions::default()
    };
    let mut server = start_tcp_with(device.clone(), limits).await;
    let timeout = Duration::from_secs(30);
    let client = Arc::new(
        WireClient::connect(&server.addr, options(1, timeout, Duration::ZERO))
            .await
            .unwrap(),
    );
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let client = client.clone();
        stalled.push(tokio::spawn(
            async move { client.read(STALL_AT, 512).await },
        ));
    }
    bounded(
        Duration::from_secs(10),
        "two reads reaching the device",
        async {
            while device.started() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await;
    // Long enough for the other three to arrive if the server were still reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        device.started(),
        2,
        "only max_in_flight requests reach the device"
    );

    let other = WireClient::connect(&server.addr, options(1, timeout, Duration::ZERO))
        .await
        .unwrap();
    let data = bounded(
        Duration::from_secs(10),
        "a read on another connection",
        other.read(0, 512),
    )
    .await
    .unwrap();
    assert_eq!(data.len(), 512);
    assert_eq!(device.started(), 3);
    assert!(stalled.iter().all(|task| !task.is_finished()));

    server.task.abort();
    for task in stalled {
        let result = bounded(
            Duration::from_secs(10),
            "a stalled read after the abort",
            task,
        )
        .await
        .unwrap();
        assert!(
            result.is_err(),
            "a stalled read fails when the server goes away"
        );
    }
    server.shutdown();
}
