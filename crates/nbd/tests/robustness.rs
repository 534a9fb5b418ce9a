//! Malformed clients on raw sockets: garbage, truncated handshakes, missing fixed
//! newstyle, unknown exports, bad request magic, a 1 GiB READ, a 1 GiB WRITE, silent
//! clients. The server never panics, drops only the offending connection (or answers
//! with an error where the protocol allows), and keeps serving a real client after.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Listen, TestServer, qemu_io};
use shorthorn_nbd::ServerConfig;
use shorthorn_nbd::proto::*;

const MIB: u64 = 1 << 20;

fn connect(server: &TestServer) -> TcpStream {
    let s = TcpStream::connect(server.addr.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes the connection; fails if it stays open.
fn expect_closed(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected the server to close the connection, got {e}"),
        }
    }
}

fn greeting(s: &mut TcpStream) {
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
}

fn option(s: &mut TcpStream, option: u32, data: &[u8]) {
    let mut msg = Vec::new();
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg).unwrap();
}

/// Completes an old-style `NBD_OPT_EXPORT_NAME` handshake; returns the export size.
fn handshake(server: &TestServer) -> (TcpStream, u64) {
    let mut s = connect(server);
    greeting(&mut s);
    s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    option(&mut s, OPT_EXPORT_NAME, common::EXPORT.as_bytes());
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    let size = u64::from_be_bytes(reply[..8].try_into().unwrap());
    let flags = u16::from_be_bytes([reply[8], reply[9]]);
    assert_ne!(flags & FLAG_HAS_FLAGS, 0);
    (s, size)
}

fn request(s: &mut TcpStream, kind: u16, handle: u64, offset: u64, len: u32) {
    let req = Request {
        flags: 0,
        kind,
        handle,
        offset,
        len,
    };
    s.write_all(&encode_request(&req)).unwrap();
}

/// Reads a simple reply header: (error, handle).
fn simple_reply(s: &mut TcpStream) -> (u32, u64) {
    let mut r = [0u8; 16];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
    (
        u32::from_be_bytes(r[4..8].try_into().unwrap()),
        u64::from_be_bytes(r[8..].try_into().unwrap()),
    )
}

fn still_serves(server: &TestServer) {
    qemu_io(
        &server.uri(),
        &["write -P 0x42 4096 4k", "read -P 0x42 4096 4k"],
    );
}

#[test]
fn garbage_instead_of_a_handshake_is_dropped() {
    let server = TestServer::start(4 * MIB);
    let mut s = connect(&server);
    let garbage: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
    // The server may close before reading it all; a failed write is fine.
    let _ = s.write_all(&garbage);
    expect_closed(s);

    // Garbage after a valid greeting exchange, in the option header.
    let mut s = connect(&server);
    greeting(&mut s);
    s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    let _ = s.write_all(&garbage);
    expect_closed(s);
    still_serves(&server);
}

#[test]
fn truncated_handshakes_are_dropped() {
    let server = TestServer::start(4 * MIB);
    // Connect and leave at once.
    drop(connect(&server));
    // Half the client flags.
    let mut s = connect(&server);
    greeting(&mut s);
    s.write_all(&[0, 0]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_closed(s);
    // Half an option header.
    let mut s = connect(&server);
    greeting(&mut s);
    s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    s.write_all(b"IHAVEOPT\0\0").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_closed(s);
    // An option promising more data than it sends.
    let mut s = connect(&server);
    greeting(&mut s);
    s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    let mut msg = Vec::new();
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&OPT_GO.to_be_bytes());
    msg.extend_from_slice(&1000u32.to_be_bytes());
    msg.extend_from_slice(&[0; 10]);
    s.write_all(&msg).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_closed(s);
    still_serves(&server);
}

#[test]
fn clients_without_fixed_newstyle_or_with_unknown_flags_are_dropped() {
    let server = TestServer::start(4 * MIB);
    for flags in [0u32, FLAG_C_FIXED_NEWSTYLE | 0x100] {
        let mut s = connect(&server);
        greeting(&mut s);
        s.write_all(&flags.to_be_bytes()).unwrap();
        expect_closed(s);
    }
    still_serves(&server);
}

#[test]
fn unknown_export_name_and_huge_options_are_dropped() {
    let server = TestServer::start(4 * MIB);
    let mut s = connect(&server);
    greeting(&mut s);
    s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    option(&mut s, OPT_EXPORT_NAME, b"no-such-export");
    expect_closed(s);

    let mut s = connect(&server);
    greeting(&mut s);
    s.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    let mut msg = Vec::new();
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&OPT_INFO.to_be_bytes());
    msg.extend_from_slice(&u32::MAX.to_be_bytes());
    s.write_all(&msg).unwrap();
    expect_closed(s);
    still_serves(&server);
}

#[test]
fn bad_request_magic_closes_only_that_connection() {
    let server = TestServer::start(4 * MIB);
    let (mut bad, size) = handshake(&server);
    assert_eq!(size, 4 * MIB);
    let (mut good, _) = handshake(&server);
    bad.write_all(&[0xde; REQUEST_HEADER_LEN]).unwrap();
    expect_closed(bad);
    // The other connection is unaffected.
    request(&mut good, CMD_READ, 9, 0, 512);
    assert_eq!(simple_reply(&mut good), (0, 9));
    let mut data = vec![1u8; 512];
    good.read_exact(&mut data).unwrap();
    assert_eq!(data, vec![0; 512]);
    request(&mut good, CMD_DISC, 10, 0, 0);
    expect_closed(good);
    still_serves(&server);
}

#[test]
fn a_one_gib_read_is_refused_and_a_one_gib_write_closes_the_connection() {
    let server = TestServer::start(4 * MIB);
    let (mut s, _) = handshake(&server);
    // READ of 1 GiB: EINVAL (over the 32 MiB maximum), no payload, connection usable.
    request(&mut s, CMD_READ, 1, 0, 1 << 30);
    assert_eq!(simple_reply(&mut s), (EINVAL, 1));
    request(&mut s, CMD_READ, 2, 4096, 8);
    assert_eq!(simple_reply(&mut s), (0, 2));
    let mut data = [1u8; 8];
    s.read_exact(&mut data).unwrap();
    assert_eq!(data, [0; 8]);
    // READ past the end of the export: EINVAL.
    request(&mut s, CMD_READ, 3, 4 * MIB - 4, 8);
    assert_eq!(simple_reply(&mut s), (EINVAL, 3));
    // WRITE of 1 GiB: its payload cannot be accepted, so EINVAL and a hard disconnect.
    request(&mut s, CMD_WRITE, 4, 0, 1 << 30);
    let _ = s.write_all(&[0x77; 65536]);
    assert_eq!(simple_reply(&mut s), (EINVAL, 4));
    expect_closed(s);
    // Nothing of the refused write reached the volume.
    assert_eq!(server.read_store(0, 65536), vec![0; 65536]);
    still_serves(&server);
}

#[test]
fn silent_clients_are_dropped_after_the_handshake_timeout() {
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = TestServer::start_with(4 * MIB, Listen::Tcp, config);
    let mut s = connect(&server);
    greeting(&mut s);
    let started = Instant::now();
    expect_closed(s);
    assert!(started.elapsed() < Duration::from_secs(10));
    still_serves(&server);
}

#[test]
fn many_misbehaving_clients_at_once_do_not_disturb_a_real_one() {
    let server = TestServer::start(8 * MIB);
    let addr = server.addr.unwrap();
    let abusers: Vec<_> = (0..16u8)
        .map(|i| {
            std::thread::spawn(move || {
                for round in 0..5u8 {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let junk = vec![i.wrapping_mul(31).wrapping_add(round); 300];
                    let _ = s.write_all(&junk);
                    expect_closed(s);
                }
            })
        })
        .collect();
    qemu_io(
        &server.uri(),
        &["write -P 0x99 0 1M", "read -P 0x99 0 1M", "flush"],
    );
    for a in abusers {
        a.join().unwrap();
    }
    still_serves(&server);
}

#[test]
fn shutdown_closes_connected_clients() {
    let server = TestServer::start(4 * MIB);
    let (mut s, _) = handshake(&server);
    request(&mut s, CMD_FLUSH, 1, 0, 0);
    assert_eq!(simple_reply(&mut s), (0, 1));
    let closer = std::thread::spawn(move || drop(server));
    expect_closed(s);
    closer.join().unwrap();
}

#[test]
fn connections_beyond_the_limit_are_closed_until_one_ends() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let server = TestServer::start_with(MIB, Listen::Tcp, config);
    let (first, size) = handshake(&server);
    assert_eq!(size, MIB);
    let (_second, _) = handshake(&server);
    // The third is closed before any greeting.
    expect_closed(connect(&server));
    drop(first);
    // Once one closes, a new connection is served again (the slot frees when the
    // server notices the close: retried for a bounded time).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(&server);
        let mut magic = [0u8; 8];
        match s.read_exact(&mut magic) {
            Ok(()) => {
                assert_eq!(&magic, b"NBDMAGIC");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "no connection accepted 10 s after one of the two closed: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    qemu_io(&server.uri(), &["read 0 4k"]);
}
