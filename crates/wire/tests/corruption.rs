#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]
//! Malformed frames: the server closes that connection and keeps serving everyone else;
//! the client fails instead of trusting a corrupted reply.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{MemDevice, bounded, options, start_tcp};
use shorthorn_block::{BlockDevice, WriteFlags};
use shorthorn_wire::frame::{HEADER_LEN, MAGIC, RawHeader, VERSION, decode_frame};
use shorthorn_wire::{Frame, Kind, ReplicaAddr, Request, WireClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame.encode(&mut out).unwrap();
    out
}

fn write_frame() -> BytesMut {
    encode(
        &Request::Write {
            offset: 0,
            data: Bytes::from_static(b"corrupt me"),
            flags: WriteFlags::default(),
        }
        .into_frame(1),
    )
}

/// Sends `bytes` on a fresh connection and checks the server closes it (EOF or reset)
/// without sending any reply.
async fn server_closes_after(addr: &ReplicaAddr, bytes: &[u8]) {
    let ReplicaAddr::Tcp { host, port } = addr else {
        unreachable!()
    };
    let mut socket = TcpStream::connect((host.as_str(), *port)).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    let outcome = bounded(
        Duration::from_secs(5),
        "server closing the connection",
        socket.read_to_end(&mut received),
    )
    .await;
    // A reset is as good as an orderly close; what matters is the connection ends.
    if outcome.is_ok() {
        assert!(
            received.is_empty(),
            "server replied to a bad frame: {received:?}"
        );
    }
}

/// The server still works for a well-behaved client.
async fn server_still_serves(addr: &ReplicaAddr) {
    let client = WireClient::connect(addr, options(2, Duration::from_secs(5), Duration::ZERO))
        .await
        .unwrap();
    client
        .write(100, Bytes::from_static(b"fine"), WriteFlags { fua: true })
        .await
        .unwrap();
    assert_eq!(&client.read(100, 4).await.unwrap()[..], b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payload_checksum_closes_the_connection() {
    let device = Arc::new(MemDevice::new(1 << 20));
    let server = start_tcp(device.clone()).await;
    let mut frame = write_frame();
    let last = frame.len() - 1;
    frame[last] ^= 0x01;
    server_closes_after(&server.addr, &frame).await;
    assert_eq!(
        device.started(),
        0,
        "the corrupted write must not reach the device"
    );
    server_still_serves(&server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_magic_closes_the_connection() {
    let server = start_tcp(Arc::new(MemDevice::new(1 << 20))).await;
    server_closes_after(&server.addr, b"GET / HTTP/1.1\r\nHost: replica\r\n\r\n").await;
    let mut frame = write_frame();
    frame[0] = b'X';
    server_closes_after(&server.addr, &frame).await;
    server_still_serves(&server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_lengths_close_the_connection_without_waiting_for_the_payload() {
    let server = start_tcp(Arc::new(MemDevice::new(1 << 20))).await;
    // Valid magic, version and header checksum, but a 4 GiB payload: rejected from the
    // header alone (the test never sends a payload, so waiting for it would hang).
    let header = RawHeader {
        magic: MAGIC,
        version: VERSION,
        kind: Kind::Write as u8,
        flags: 0,
        request_id: 7,
        offset: 0,
        length: u64::from(u32::MAX),
        payload_len: u32::MAX,
        status: 0,
        payload_crc: 0,
    };
    server_closes_after(&server.addr, &header.to_bytes()).await;
    let huge_read = RawHeader {
        kind: Kind::Read as u8,
        length: 1 << 40,
        payload_len: 0,
        ..header
    };
    server_closes_after(&server.addr, &huge_read.to_bytes()).await;
    server_still_serves(&server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_header_checksum_unknown_kind_and_reply_frames_close_the_connection() {
    let server = start_tcp(Arc::new(MemDevice::new(1 << 20))).await;
    let mut frame = write_frame();
    frame[20] ^= 0x80; // inside the offset field
    server_closes_after(&server.addr, &frame).await;

    let unknown = RawHeader {
        magic: MAGIC,
        version: VERSION,
        kind: 0x33,
        flags: 0,
        request_id: 1,
        offset: 0,
        length: 0,
        payload_len: 0,
        status: 0,
        payload_crc: 0,
    };
    server_closes_after(&server.addr, &unknown.to_bytes()).await;

    let ping = Request::Ping.into_frame(1);
    let reply = encode(&Frame::ok_reply(&ping, Bytes::new()));
    server_closes_after(&server.addr, &reply).await;
    assert_eq!(reply.len(), HEADER_LEN);
    server_still_serves(&server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_reply_fails_the_client() {
    // A fake replica that answers Info correctly but flips a bit in every read reply.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ReplicaAddr::from(listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while socket.read_buf(&mut buf).await.unwrap_or(0) > 0 {
                    while let Ok(Some(frame)) = decode_frame(&mut buf) {
                        let mut out = match frame.kind {
                            Kind::Info => encode(&Frame::info_reply(&frame, 1 << 20)),
                            _ => {
                                let data = Bytes::from(vec![7u8; frame.length as usize]);
                                encode(&Frame::ok_reply(&frame, data))
                            }
                        };
                        if frame.kind == Kind::Read {
                            let last = out.len() - 1;
                            out[last] ^= 0x10;
                        }
                        socket.write_all(&out).await.unwrap();
                    }
                }
            });
        }
    });
    let client = WireClient::connect(&addr, options(1, Duration::from_secs(5), Duration::ZERO))
        .await
        .unwrap();
    let err = bounded(Duration::from_secs(5), "corrupted read", client.read(0, 64))
        .await
        .unwrap_err();
    let reason = client.failed().expect("client failed on a corrupted reply");
    assert!(reason.contains("payload checksum mismatch"), "{reason}");
    assert!(err.to_string().contains("checksum"), "{err}");
}
