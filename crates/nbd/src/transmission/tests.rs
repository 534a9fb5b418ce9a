#![allow(clippy::cast_possible_truncation, reason = "test lengths are small")]

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::task::JoinHandle;

use super::*;
use shorthorn_block::testing::MemDevice;

const SIZE: u64 = 1 << 20;

struct Harness {
    client: DuplexStream,
    task: JoinHandle<Summary>,
    device: Arc<MemDevice>,
    cancel: CancellationToken,
}

#[derive(Debug)]
struct Chunk {
    flags: u16,
    kind: u16,
    handle: u64,
    payload: Vec<u8>,
}

/// One reply: a simple reply (error, handle) or a list of structured chunks.
#[derive(Debug)]
enum Reply {
    Simple { error: u32, handle: u64 },
    Structured(Vec<Chunk>),
}

impl Reply {
    fn handle(&self) -> u64 {
        match self {
            Reply::Simple { handle, .. } => *handle,
            Reply::Structured(chunks) => chunks[0].handle,
        }
    }

    /// The error code: from a simple reply or an error chunk (0 for success).
    fn error(&self) -> u32 {
        match self {
            Reply::Simple { error, .. } => *error,
            Reply::Structured(chunks) => {
                chunks.iter().find(|c| c.kind & 0x8000 != 0).map_or(0, |c| {
                    u32::from_be_bytes(c.payload[..4].try_into().unwrap())
                })
            }
        }
    }
}

fn start(structured: bool, base_allocation: bool, read_only: bool) -> Harness {
    start_with(
        Arc::new(MemDevice::new(SIZE)),
        structured,
        base_allocation,
        read_only,
        ServerConfig::default(),
    )
}

fn start_with(
    device: Arc<MemDevice>,
    structured: bool,
    base_allocation: bool,
    read_only: bool,
    config: ServerConfig,
) -> Harness {
    let (client, server) = tokio::io::duplex(4 << 20);
    let negotiated = Negotiated {
        export: 0,
        size: device.size(),
        flags: 0,
        structured,
        base_allocation: base_allocation.then_some(BASE_ALLOCATION_ID),
    };
    let cancel = CancellationToken::new();
    let dev = device.clone();
    let token = cancel.clone();
    let task = tokio::spawn(async move {
        let (r, w) = tokio::io::split(server);
        serve(
            WireReader::new(r),
            w,
            dev,
            read_only,
            &negotiated,
            &config,
            token,
            "test",
        )
        .await
    });
    Harness {
        client,
        task,
        device,
        cancel,
    }
}

impl Harness {
    async fn send(&mut self, kind: u16, flags: u16, handle: u64, offset: u64, len: u32) {
        let req = Request {
            flags,
            kind,
            handle,
            offset,
            len,
        };
        self.client.write_all(&encode_request(&req)).await.unwrap();
    }

    async fn write(&mut self, handle: u64, offset: u64, data: &[u8], flags: u16) {
        self.send(CMD_WRITE, flags, handle, offset, len_u32(data.len()))
            .await;
        self.client.write_all(data).await.unwrap();
    }

    async fn u32(&mut self) -> u32 {
        self.client.read_u32().await.unwrap()
    }

    /// Reads the next reply; `simple_read_len` is the payload length to expect after a
    /// successful simple reply (the protocol gives no length for it).
    async fn reply(&mut self, simple_read_len: usize) -> (Reply, Vec<u8>) {
        let magic = self.u32().await;
        if magic == SIMPLE_REPLY_MAGIC {
            let error = self.u32().await;
            let handle = self.client.read_u64().await.unwrap();
            let mut data = vec![0; if error == 0 { simple_read_len } else { 0 }];
            self.client.read_exact(&mut data).await.unwrap();
            return (Reply::Simple { error, handle }, data);
        }
        assert_eq!(magic, STRUCTURED_REPLY_MAGIC, "reply magic");
        let mut chunks = Vec::new();
        loop {
            if !chunks.is_empty() {
                assert_eq!(self.u32().await, STRUCTURED_REPLY_MAGIC);
            }
            let flags = self.client.read_u16().await.unwrap();
            let kind = self.client.read_u16().await.unwrap();
            let handle = self.client.read_u64().await.unwrap();
            let len = self.u32().await;
            let mut payload = vec![0; len as usize];
            self.client.read_exact(&mut payload).await.unwrap();
            let done = flags & REPLY_FLAG_DONE != 0;
            chunks.push(Chunk {
                flags,
                kind,
                handle,
                payload,
            });
            if done {
                break;
            }
        }
        (Reply::Structured(chunks), Vec::new())
    }

    async fn finish(mut self) -> Summary {
        self.send(CMD_DISC, 0, 0, 0, 0).await;
        let summary = self.task.await.unwrap();
        let mut rest = Vec::new();
        self.client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "no bytes after DISC: {rest:?}");
        summary
    }
}

/// Reassembles the data of a structured read reply of `len` bytes at `offset`.
fn assemble(chunks: &[Chunk], offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0xeeu8; len];
    let mut covered = 0;
    for c in chunks {
        match c.kind {
            REPLY_TYPE_OFFSET_DATA => {
                let at = u64::from_be_bytes(c.payload[..8].try_into().unwrap()) - offset;
                let data = &c.payload[8..];
                out[at as usize..at as usize + data.len()].copy_from_slice(data);
                covered += data.len();
            }
            REPLY_TYPE_OFFSET_HOLE => {
                let at = u64::from_be_bytes(c.payload[..8].try_into().unwrap()) - offset;
                let n = u32::from_be_bytes(c.payload[8..12].try_into().unwrap()) as usize;
                out[at as usize..at as usize + n].fill(0);
                covered += n;
            }
            REPLY_TYPE_NONE => {}
            other => panic!("unexpected chunk type {other:#x}"),
        }
    }
    assert_eq!(covered, len, "chunks cover the read exactly");
    out
}

#[tokio::test]
async fn simple_replies_round_trip_data_and_map_errors() {
    let mut h = start(false, false, false);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    h.write(1, 1000, &data, 0).await;
    let (r, _) = h.reply(0).await;
    assert_eq!((r.handle(), r.error()), (1, 0));

    h.send(CMD_READ, 0, 2, 1000, len_u32(data.len())).await;
    let (r, got) = h.reply(data.len()).await;
    assert_eq!((r.handle(), r.error()), (2, 0));
    assert_eq!(got, data);

    h.send(CMD_FLUSH, 0, 3, 0, 0).await;
    assert_eq!(h.reply(0).await.0.error(), 0);
    assert_eq!(h.device.flushes.load(Ordering::SeqCst), 1);

    // Out of range: read and trim → EINVAL, write and write-zeroes → ENOSPC.
    h.send(CMD_READ, 0, 4, SIZE - 1, 2).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.send(CMD_TRIM, 0, 5, SIZE, 1).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.write(6, SIZE - 2, b"abc", 0).await;
    assert_eq!(h.reply(0).await.0.error(), ENOSPC);
    h.send(CMD_WRITE_ZEROES, 0, 7, u64::MAX - 1, 4).await;
    assert_eq!(h.reply(0).await.0.error(), ENOSPC);

    // Unknown command, flags not valid for the command, DF without structured replies,
    // block status without a context: EINVAL.
    h.send(CMD_CACHE, 0, 8, 0, 4096).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.send(42, 0, 9, 0, 0).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.send(CMD_TRIM, CMD_FLAG_NO_HOLE, 10, 0, 4096).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.send(CMD_READ, CMD_FLAG_DF, 11, 0, 4096).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.send(CMD_BLOCK_STATUS, 0, 12, 0, 4096).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.send(CMD_READ, 0, 13, 0, MAX_BLOCK_SIZE + 1).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);

    // Zero-length read: an empty success.
    h.send(CMD_READ, 0, 14, 0, 0).await;
    assert_eq!(h.reply(0).await.0.error(), 0);

    // Device failures map to EIO.
    h.device.fail_io.store(true, Ordering::SeqCst);
    h.send(CMD_READ, 0, 15, 0, 512).await;
    assert_eq!(h.reply(0).await.0.error(), EIO);
    h.device.fail_io.store(false, Ordering::SeqCst);

    let summary = h.finish().await;
    assert!(matches!(summary.end, End::Disconnect), "{}", summary.end);
    assert_eq!(summary.requests, 16);
}

#[tokio::test]
async fn trim_zeroes_and_fua_reach_the_device() {
    let mut h = start(false, false, false);
    h.write(1, 0, &[0xab; 16384], CMD_FLAG_FUA).await;
    assert_eq!(h.reply(0).await.0.error(), 0);
    assert_eq!(h.device.fua_writes.load(Ordering::SeqCst), 1);

    h.send(CMD_TRIM, CMD_FLAG_FUA, 2, 0, 4096).await;
    assert_eq!(h.reply(0).await.0.error(), 0);
    assert_eq!(
        h.device.flushes.load(Ordering::SeqCst),
        1,
        "FUA trim flushes"
    );

    h.send(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 3, 4096, 4096)
        .await;
    assert_eq!(h.reply(0).await.0.error(), 0);
    assert_eq!(h.device.allocating_zeroes.load(Ordering::SeqCst), 1);
    h.send(CMD_WRITE_ZEROES, 0, 4, 8192, 100).await;
    assert_eq!(h.reply(0).await.0.error(), 0);
    assert_eq!(h.device.allocating_zeroes.load(Ordering::SeqCst), 1);

    h.send(CMD_READ, 0, 5, 0, 16384).await;
    let (_, got) = h.reply(16384).await;
    assert!(got[..8292].iter().all(|&b| b == 0));
    assert!(got[8292..].iter().all(|&b| b == 0xab));
    h.finish().await;
}

#[tokio::test]
async fn whole_device_write_zeroes_is_split_and_fua_flushes_once() {
    let size: u32 = 96 << 20;
    let device = Arc::new(MemDevice::new(u64::from(size)));
    let mut h = start_with(device, false, false, false, ServerConfig::default());
    h.write(1, u64::from(size) - 4096, &[5; 4096], 0).await;
    assert_eq!(h.reply(0).await.0.error(), 0);
    h.send(CMD_WRITE_ZEROES, CMD_FLAG_FUA, 2, 0, size).await;
    assert_eq!(h.reply(0).await.0.error(), 0);
    assert_eq!(
        h.device.flushes.load(Ordering::SeqCst),
        1,
        "one flush after the pieces"
    );
    assert_eq!(h.device.fua_writes.load(Ordering::SeqCst), 0);
    h.send(CMD_READ, 0, 3, u64::from(size) - 4096, 4096).await;
    let (_, got) = h.reply(4096).await;
    assert_eq!(got, vec![0; 4096]);
    // A small FUA write-zeroes is one device call carrying FUA.
    h.send(CMD_WRITE_ZEROES, CMD_FLAG_FUA, 4, 0, 4096).await;
    assert_eq!(h.reply(0).await.0.error(), 0);
    assert_eq!(h.device.fua_writes.load(Ordering::SeqCst), 1);
    h.finish().await;
}

#[tokio::test]
async fn read_only_exports_refuse_writes_with_eperm() {
    let mut h = start(false, false, true);
    h.write(1, 0, b"data", 0).await;
    assert_eq!(h.reply(0).await.0.error(), EPERM);
    h.send(CMD_TRIM, 0, 2, 0, 4096).await;
    assert_eq!(h.reply(0).await.0.error(), EPERM);
    h.send(CMD_WRITE_ZEROES, 0, 3, 0, 4096).await;
    assert_eq!(h.reply(0).await.0.error(), EPERM);
    h.send(CMD_READ, 0, 4, 0, 4).await;
    let (r, got) = h.reply(4).await;
    assert_eq!((r.error(), got), (0, vec![0; 4]));
    h.finish().await;
}

#[tokio::test]
async fn structured_reads_send_data_and_holes() {
    let mut h = start(true, true, false);
    h.write(1, 8192, &[7; 8192], 0).await;
    assert_eq!(h.reply(0).await.0.error(), 0);

    // Small read: one data chunk, final.
    h.send(CMD_READ, 0, 2, 8190, 4).await;
    let (Reply::Structured(chunks), _) = h.reply(0).await else {
        panic!("structured reply expected")
    };
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].kind, REPLY_TYPE_OFFSET_DATA);
    assert_eq!(assemble(&chunks, 8190, 4), vec![0, 0, 7, 7]);

    // Large read over holes and data: hole, data, hole chunks.
    h.send(CMD_READ, 0, 3, 0, 128 << 10).await;
    let (Reply::Structured(chunks), _) = h.reply(0).await else {
        panic!("structured reply expected")
    };
    let kinds: Vec<u16> = chunks.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            REPLY_TYPE_OFFSET_HOLE,
            REPLY_TYPE_OFFSET_DATA,
            REPLY_TYPE_OFFSET_HOLE
        ]
    );
    assert!(chunks[..2].iter().all(|c| c.flags & REPLY_FLAG_DONE == 0));
    let got = assemble(&chunks, 0, 128 << 10);
    assert!(got[8192..16384].iter().all(|&b| b == 7));
    assert!(got[..8192].iter().chain(&got[16384..]).all(|&b| b == 0));

    h.finish().await;

    // With sparse reads off, the same read is one data chunk.
    let config = ServerConfig {
        sparse_reads: false,
        ..ServerConfig::default()
    };
    let device = Arc::new(MemDevice::new(SIZE));
    device
        .write(8192, Bytes::from(vec![7; 8192]), WriteFlags::default())
        .await
        .unwrap();
    let mut h = start_with(device, true, true, false, config);
    h.send(CMD_READ, 0, 3, 0, 128 << 10).await;
    let (Reply::Structured(chunks), _) = h.reply(0).await else {
        panic!("structured reply expected")
    };
    assert_eq!(chunks.len(), 1);
    assert_eq!(assemble(&chunks, 0, 128 << 10), got);

    // DF: exactly one content chunk even over holes.
    h.send(CMD_READ, CMD_FLAG_DF, 4, 0, 128 << 10).await;
    let (Reply::Structured(chunks), _) = h.reply(0).await else {
        panic!("structured reply expected")
    };
    assert_eq!(chunks.len(), 1);
    assert_eq!(assemble(&chunks, 0, 128 << 10), got);

    // Zero-length read: a lone NONE chunk.
    h.send(CMD_READ, 0, 5, 0, 0).await;
    let (Reply::Structured(chunks), _) = h.reply(0).await else {
        panic!("structured reply expected")
    };
    assert_eq!((chunks.len(), chunks[0].kind), (1, REPLY_TYPE_NONE));

    // Errors come as error chunks with a message.
    h.send(CMD_READ, 0, 6, SIZE, 1).await;
    let (Reply::Structured(chunks), _) = h.reply(0).await else {
        panic!("structured reply expected")
    };
    assert_eq!(chunks[0].kind, REPLY_TYPE_ERROR);
    assert_eq!(&chunks[0].payload[..4], &EINVAL.to_be_bytes());
    let msg_len = u16::from_be_bytes([chunks[0].payload[4], chunks[0].payload[5]]) as usize;
    let message = std::str::from_utf8(&chunks[0].payload[6..6 + msg_len]).unwrap();
    assert!(message.contains("past the end"), "{message}");
    h.finish().await;
}

fn descriptors(reply: &Reply) -> (u32, Vec<(u32, u32)>) {
    let Reply::Structured(chunks) = reply else {
        panic!("structured reply expected")
    };
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].kind, REPLY_TYPE_BLOCK_STATUS);
    assert_ne!(chunks[0].flags & REPLY_FLAG_DONE, 0);
    let p = &chunks[0].payload;
    let id = u32::from_be_bytes(p[..4].try_into().unwrap());
    let list = p[4..]
        .chunks(8)
        .map(|d| {
            (
                u32::from_be_bytes(d[..4].try_into().unwrap()),
                u32::from_be_bytes(d[4..].try_into().unwrap()),
            )
        })
        .collect();
    (id, list)
}

#[tokio::test]
async fn block_status_reports_holes_and_honours_req_one() {
    let mut h = start(true, true, false);
    h.write(1, 4096, &[1; 4096], 0).await;
    h.reply(0).await;

    h.send(CMD_BLOCK_STATUS, 0, 2, 0, 16384).await;
    let (id, list) = descriptors(&h.reply(0).await.0);
    assert_eq!(id, BASE_ALLOCATION_ID);
    let hole = STATE_HOLE | STATE_ZERO;
    assert_eq!(list, vec![(4096, hole), (4096, 0), (8192, hole)]);

    h.send(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 3, 100, 16384)
        .await;
    let (_, list) = descriptors(&h.reply(0).await.0);
    assert_eq!(list, vec![(3996, hole)]);

    h.send(CMD_BLOCK_STATUS, 0, 4, SIZE - 10, 11).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.send(CMD_BLOCK_STATUS, 0, 5, 0, 0).await;
    assert_eq!(h.reply(0).await.0.error(), EINVAL);
    h.finish().await;
}

#[test]
fn clip_extents_handles_odd_device_answers() {
    let data = |offset, len| Extent {
        offset,
        len,
        kind: ExtentKind::Data,
    };
    let zero = |offset, len| Extent {
        offset,
        len,
        kind: ExtentKind::Zero,
    };
    // Wider than asked: clipped.
    assert_eq!(
        clip_extents(&[data(0, 100), zero(100, 100)], 50, 150),
        vec![data(50, 50), zero(100, 50)]
    );
    // A gap stops the list; stale entries before the range are skipped.
    assert_eq!(
        clip_extents(&[data(0, 10), data(10, 10), zero(40, 10)], 5, 50),
        vec![data(5, 15)]
    );
    assert_eq!(clip_extents(&[zero(0, 10)], 20, 30), vec![]);
    assert_eq!(clip_extents(&[], 0, 30), vec![]);
    assert_eq!(clip_extents(&[data(u64::MAX - 1, 10)], 0, 30), vec![]);
}

#[tokio::test]
async fn pipelined_requests_are_all_answered() {
    let mut h = start(false, false, false);
    for i in 0..200u64 {
        h.write(i, i * 4096, &[u8::try_from(i % 256).unwrap(); 4096], 0)
            .await;
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let (r, _) = h.reply(0).await;
        assert_eq!(r.error(), 0);
        assert!(seen.insert(r.handle()));
    }
    for i in 0..200u64 {
        h.send(CMD_READ, 0, 1000 + i, i * 4096, 4096).await;
    }
    for _ in 0..200 {
        let (r, data) = h.reply(4096).await;
        let i = r.handle() - 1000;
        assert!(data.iter().all(|&b| u64::from(b) == i % 256));
    }
    h.finish().await;
}

#[tokio::test]
async fn bad_magic_closes_the_connection() {
    let mut h = start(false, false, false);
    h.client
        .write_all(&[0x42; REQUEST_HEADER_LEN])
        .await
        .unwrap();
    let summary = h.task.await.unwrap();
    assert!(matches!(summary.end, End::Protocol(_)), "{}", summary.end);
    let mut rest = Vec::new();
    h.client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn oversized_write_is_refused_then_the_connection_closes() {
    let mut h = start(false, false, false);
    h.send(CMD_WRITE, 0, 77, 0, MAX_BLOCK_SIZE + 1).await;
    let (r, _) = h.reply(0).await;
    assert_eq!((r.handle(), r.error()), (77, EINVAL));
    let summary = h.task.await.unwrap();
    assert!(matches!(summary.end, End::Protocol(_)), "{}", summary.end);
}

#[tokio::test]
async fn truncated_write_payload_ends_the_connection() {
    let mut h = start(false, false, false);
    h.send(CMD_WRITE, 0, 1, 0, 4096).await;
    h.client.write_all(&[1; 100]).await.unwrap();
    let Harness { client, task, .. } = h;
    drop(client);
    let summary = task.await.unwrap();
    assert!(matches!(summary.end, End::Truncated), "{}", summary.end);
}

#[tokio::test]
async fn a_panicking_device_drops_the_connection_instead_of_hanging() {
    let mut h = start(false, false, false);
    h.device.panic_on_flush.store(true, Ordering::SeqCst);
    h.send(CMD_FLUSH, 0, 1, 0, 0).await;
    let summary = tokio::time::timeout(Duration::from_secs(10), &mut h.task)
        .await
        .expect("connection must end")
        .unwrap();
    assert!(matches!(summary.end, End::Aborted(_)), "{}", summary.end);
    let mut rest = Vec::new();
    h.client.read_to_end(&mut rest).await.unwrap();
}

#[tokio::test]
async fn shutdown_answers_in_flight_requests_then_closes() {
    let mut h = start(false, false, false);
    h.write(1, 0, &[3; 4096], 0).await;
    let (r, _) = h.reply(0).await;
    assert_eq!(r.error(), 0);
    h.cancel.cancel();
    let summary = h.task.await.unwrap();
    assert!(matches!(summary.end, End::Shutdown), "{}", summary.end);
    let mut rest = Vec::new();
    h.client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn shutdown_drops_connections_whose_requests_outlive_the_grace_period() {
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let device = Arc::new(MemDevice::new(SIZE));
    device.stall_flush.store(true, Ordering::SeqCst);
    let mut h = start_with(device, false, false, false, config);
    h.send(CMD_FLUSH, 0, 1, 0, 0).await;
    h.write(2, 0, b"done", 0).await;
    assert_eq!(
        h.reply(0).await.0.handle(),
        2,
        "the write completes, the flush hangs"
    );
    h.cancel.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), &mut h.task)
        .await
        .expect("shutdown must not wait for the stalled flush")
        .unwrap();
    assert!(matches!(summary.end, End::Shutdown), "{}", summary.end);
    let mut rest = Vec::new();
    h.client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "no reply for the abandoned flush");
}

#[tokio::test]
async fn in_flight_limits_hold_back_reading_without_deadlock() {
    let config = ServerConfig {
        max_in_flight: 2,
        max_in_flight_bytes: 0,
        ..ServerConfig::default()
    };
    let device = Arc::new(MemDevice::new(SIZE));
    let mut h = start_with(device, false, false, false, config);
    let big = vec![9u8; 512 << 10];
    for i in 0..8u64 {
        h.write(i, 0, &big, 0).await;
    }
    for _ in 0..8 {
        assert_eq!(h.reply(0).await.0.error(), 0);
    }
    h.finish().await;
}
