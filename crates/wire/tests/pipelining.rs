#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]
//! Many concurrent requests over several pipelined connections: replies come back out of
//! order and every caller still gets exactly its own result.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{MemDevice, bounded, options, start_tcp};
use rand::{Rng, SeedableRng};
use shorthorn_block::testing::pattern;
use shorthorn_block::{BlockDevice, ExtentKind, WriteFlags, ZeroMode};
use shorthorn_store::{Store, StoreDevice};
use shorthorn_wire::WireClient;
use shorthorn_wire::frame::MAX_PAYLOAD;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_mixed_requests_get_their_own_results_out_of_order() {
    const SIZE: u64 = 4 << 20;
    const PREFILLED: u64 = 2 << 20;
    const SLOT: u64 = 4096;
    let device = Arc::new(MemDevice::new(SIZE).with_delay(Duration::from_millis(3)));
    device.fill_pattern();
    let server = start_tcp(device.clone()).await;
    let client = Arc::new(
        WireClient::connect(
            &server.addr,
            options(3, Duration::from_secs(20), Duration::from_secs(1)),
        )
        .await
        .unwrap(),
    );
    assert_eq!(client.size(), SIZE);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);

    // Even tasks write their own 4 KiB slot in the upper half; odd tasks read a random
    // range of the prefilled lower half and check it against the pattern.
    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i);
            if i % 2 == 0 {
                let slot = PREFILLED + (i / 2) * SLOT;
                let len = rng.random_range(1..=SLOT);
                let offset = slot + rng.random_range(0..=SLOT - len);
                let data: Vec<u8> = (0..len).map(|_| rng.random_range(1..=255)).collect();
                client
                    .write(offset, Bytes::from(data.clone()), WriteFlags::default())
                    .await
                    .unwrap();
                Some((offset, data))
            } else {
                let len = rng.random_range(1..=20_000u64);
                let offset = rng.random_range(0..=PREFILLED - len);
                let got = client.read(offset, len).await.unwrap();
                assert_eq!(got.len() as u64, len);
                for (k, byte) in got.iter().enumerate() {
                    assert_eq!(*byte, pattern(offset + k as u64), "read at {offset}+{k}");
                }
                None
            }
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        if let Some(w) = bounded(LIMIT, "request task", task).await.unwrap() {
            written.push(w);
        }
    }
    assert_eq!(written.len(), 500);
    client.flush().await.unwrap();

    // The device saw requests complete in a different order than they started, so the
    // server must have sent replies out of order.
    let completions = device.completions();
    assert!(completions.len() >= 1000);
    let inversions = completions.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(
        inversions > 50,
        "only {inversions} out-of-order completions"
    );

    for (offset, data) in &written {
        let got = client.read(*offset, data.len() as u64).await.unwrap();
        assert_eq!(&got[..], &data[..], "write at {offset}");
        assert_eq!(device.snapshot(*offset, data.len()), *data);
    }
    assert_eq!(client.failed(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_larger_than_one_frame_are_split_and_reassembled() {
    let device = Arc::new(MemDevice::new(3 * u64::from(MAX_PAYLOAD)));
    let server = start_tcp(device.clone()).await;
    let client = WireClient::connect(
        &server.addr,
        options(2, Duration::from_secs(20), Duration::ZERO),
    )
    .await
    .unwrap();
    let len = MAX_PAYLOAD as usize + MAX_PAYLOAD as usize / 2 + 17;
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8 + 1).collect();
    let offset = 12_345;
    let started = device.started();
    bounded(
        LIMIT,
        "large write",
        client.write(offset, Bytes::from(data.clone()), WriteFlags { fua: true }),
    )
    .await
    .unwrap();
    assert_eq!(
        device.started() - started,
        2,
        "a 48 MiB write is two frames"
    );
    assert_eq!(device.snapshot(offset, len), data);
    let got = bounded(LIMIT, "large read", client.read(offset, len as u64))
        .await
        .unwrap();
    assert_eq!(got.len(), len);
    assert!(got[..] == data[..], "large read differs");

    client
        .write_zeroes(offset, 100, ZeroMode::Allocate, WriteFlags::default())
        .await
        .unwrap();
    assert_eq!(&client.read(offset, 101).await.unwrap()[..100], &[0u8; 100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_then_reads_against_a_real_store() {
    const SIZE: u64 = 16 << 20;
    const SLOT: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::create(dir.path(), "vol", SIZE).unwrap());
    let device = Arc::new(StoreDevice::new(store));
    let server = start_tcp(device.clone()).await;
    let client = Arc::new(
        WireClient::connect(
            &server.addr,
            options(3, Duration::from_secs(20), Duration::from_secs(1)),
        )
        .await
        .unwrap(),
    );
    assert_eq!(client.size(), SIZE);

    // Unaligned writes of assorted sizes into disjoint slots, all at once.
    let mut tasks = Vec::new();
    for slot in 0..(SIZE / SLOT) {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(slot + 1000);
            let len = rng.random_range(1..=20_000u64);
            let offset = slot * SLOT + rng.random_range(0..=SLOT - len);
            let data: Vec<u8> = (0..len).map(|_| rng.random_range(1..=255)).collect();
            let fua = WriteFlags { fua: slot % 7 == 0 };
            client
                .write(offset, Bytes::from(data.clone()), fua)
                .await
                .unwrap();
            (offset, data)
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        written.push(bounded(LIMIT, "write task", task).await.unwrap());
    }
    client.flush().await.unwrap();

    let mut reads = Vec::new();
    for (offset, data) in written.clone() {
        let client = client.clone();
        reads.push(tokio::spawn(async move {
            // Read a little around the write: the margins were never written.
            let start = offset.saturating_sub(10);
            let got = client.read(start, data.len() as u64 + 10).await.unwrap();
            let lead = (offset - start) as usize;
            assert!(
                got[..lead].iter().all(|b| *b == 0),
                "margin before {offset}"
            );
            assert_eq!(
                &got[lead..lead + data.len()],
                &data[..],
                "write at {offset}"
            );
        }));
    }
    for read in reads {
        bounded(LIMIT, "read task", read).await.unwrap();
    }

    // Block status through the wire agrees with the store, and zeroing/trimming works.
    let status = client.block_status(0, SIZE).await.unwrap();
    assert_eq!(status, device.block_status(0, SIZE).await.unwrap());
    let (offset, data) = &written[3];
    assert!(
        status
            .iter()
            .any(|e| e.kind == ExtentKind::Data && e.offset <= *offset && e.end() > *offset)
    );
    client.trim(*offset, data.len() as u64).await.unwrap();
    let got = client.read(*offset, data.len() as u64).await.unwrap();
    assert!(got.iter().all(|b| *b == 0));
    assert_eq!(client.failed(), None);
}
