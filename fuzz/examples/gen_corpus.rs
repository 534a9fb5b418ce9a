//! Writes the seed inputs of `corpus/<target>/seed-*` (valid and invalid examples of each
//! protocol). Run from `fuzz/`: `cargo run --release --example gen_corpus`. Seeds are
//! rewritten in place; other corpus files (regressions, `crash-*`) are left alone.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use shorthorn_block::{BlockError, Extent, ExtentKind, WriteFlags, ZeroMode};
use shorthorn_fuzz::{Setup, build_frame, handshake_prefix};
use shorthorn_nbd::proto::{self, *};
use shorthorn_wire::frame::{Frame, Request};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write_all(&root.join("wire_frame"), wire_seeds());
    write_all(&root.join("nbd_handshake"), handshake_seeds());
    write_all(&root.join("nbd_transmission"), transmission_seeds());
}

fn write_all(dir: &Path, seeds: Vec<(String, Vec<u8>)>) {
    fs::create_dir_all(dir).expect("create corpus directory");
    for entry in fs::read_dir(dir).expect("read corpus directory") {
        let path = entry.expect("corpus entry").path();
        let is_seed = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"));
        if is_seed {
            fs::remove_file(&path).expect("remove old seed");
        }
    }
    for (name, bytes) in &seeds {
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

// ---------------------------------------------------------------------------------------
// wire_frame: mode byte 0 = raw stream, 1 = frames field by field, 2 = block-status list
// ---------------------------------------------------------------------------------------

fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(&mut out).expect("seed frames are valid");
    out.to_vec()
}

fn raw(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(bytes);
    out
}

fn requests() -> Vec<(&'static str, Request)> {
    vec![
        (
            "read",
            Request::Read {
                offset: 4096,
                len: 512,
            },
        ),
        (
            "write-fua",
            Request::Write {
                offset: 7,
                data: Bytes::from_static(b"hello wire"),
                flags: WriteFlags { fua: true },
            },
        ),
        ("flush", Request::Flush),
        (
            "write-zeroes-no-hole",
            Request::WriteZeroes {
                offset: 8192,
                len: 1 << 20,
                mode: ZeroMode::Allocate,
                flags: WriteFlags { fua: false },
            },
        ),
        (
            "trim",
            Request::Trim {
                offset: 1 << 40,
                len: 1 << 20,
            },
        ),
        (
            "block-status",
            Request::BlockStatus {
                offset: 100,
                len: 9000,
            },
        ),
        ("ping", Request::Ping),
        ("info", Request::Info),
    ]
}

fn wire_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut all = Vec::new();
    for (name, request) in requests() {
        let frame = request.into_frame(42);
        let bytes = encode(&frame);
        all.extend_from_slice(&bytes);
        seeds.push((format!("raw-request-{name}"), raw(&bytes)));
        let mut built = vec![1u8];
        built.extend(build_frame(&frame));
        seeds.push((format!("built-request-{name}"), built));
    }
    seeds.push(("raw-all-requests".into(), raw(&all)));

    let read = Request::Read { offset: 0, len: 4 }.into_frame(1);
    let info = Request::Info.into_frame(2);
    let status = Request::BlockStatus {
        offset: 4096,
        len: 12288,
    }
    .into_frame(3);
    let extents = [
        Extent {
            offset: 4096,
            len: 4096,
            kind: ExtentKind::Data,
        },
        Extent {
            offset: 8192,
            len: 8192,
            kind: ExtentKind::Zero,
        },
    ];
    let replies = [
        (
            "read-ok",
            Frame::ok_reply(&read, Bytes::from_static(b"data")),
        ),
        ("info-ok", Frame::info_reply(&info, 1 << 30)),
        (
            "block-status-ok",
            Frame::block_status_reply(&status, &extents),
        ),
        (
            "read-out-of-range",
            Frame::error_reply(
                &read,
                &BlockError::OutOfRange {
                    offset: 0,
                    len: 4,
                    size: 2,
                },
            ),
        ),
        (
            "read-io-error",
            Frame::error_reply(&read, &BlockError::Io("disk on fire".into())),
        ),
        (
            "write-no-space",
            Frame::error_reply(&read, &BlockError::NoSpace("full".into())),
        ),
    ];
    for (name, frame) in &replies {
        seeds.push((format!("raw-reply-{name}"), raw(&encode(frame))));
        let mut built = vec![1u8];
        built.extend(build_frame(frame));
        seeds.push((format!("built-reply-{name}"), built));
    }

    // Invalid: bad magic, bad header checksum, bad payload checksum, truncated frames.
    let good = encode(
        &Request::Write {
            offset: 0,
            data: Bytes::from_static(b"payload"),
            flags: WriteFlags::default(),
        }
        .into_frame(9),
    );
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    seeds.push(("raw-bad-magic".into(), raw(&bad_magic)));
    let mut bad_header_crc = good.clone();
    bad_header_crc[20] ^= 1;
    seeds.push(("raw-bad-header-crc".into(), raw(&bad_header_crc)));
    let mut bad_payload_crc = good.clone();
    *bad_payload_crc.last_mut().expect("payload") ^= 1;
    seeds.push(("raw-bad-payload-crc".into(), raw(&bad_payload_crc)));
    seeds.push(("raw-truncated-header".into(), raw(&good[..30])));
    seeds.push(("raw-truncated-payload".into(), raw(&good[..good.len() - 1])));
    seeds.push(("raw-garbage".into(), raw(b"GET / HTTP/1.1\r\n\r\n")));

    // Mode 2: request id, offset, selector, count, then (len u16, kind u8) per extent.
    let mut list = vec![2u8];
    list.extend_from_slice(&7u64.to_le_bytes());
    list.extend_from_slice(&4096u64.to_le_bytes());
    list.push(0); // selector: honest count, no gaps, kinds 0/1, length = sum
    list.push(3);
    for (len, kind) in [(4096u16, 0u8), (512, 1), (100, 0)] {
        list.extend_from_slice(&len.to_le_bytes());
        list.push(kind);
    }
    seeds.push(("extents-valid".into(), list.clone()));
    list[17] = 0x0c; // gaps and raw kinds
    seeds.push(("extents-gaps".into(), list));
    seeds
}

// ---------------------------------------------------------------------------------------
// nbd_handshake: the client's bytes from the start of the connection
// ---------------------------------------------------------------------------------------

fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut out = IHAVEOPT.to_be_bytes().to_vec();
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&len_u32(data.len()).to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut d = len_u32(name.len()).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&u16::try_from(requests.len()).expect("few").to_be_bytes());
    for r in requests {
        d.extend_from_slice(&r.to_be_bytes());
    }
    d
}

fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = len_u32(name.len()).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&len_u32(queries.len()).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&len_u32(q.len()).to_be_bytes());
        d.extend_from_slice(q.as_bytes());
    }
    d
}

fn handshake_seeds() -> Vec<(String, Vec<u8>)> {
    let flags = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    let with = |options: &[Vec<u8>]| {
        let mut out = flags.clone();
        for o in options {
            out.extend_from_slice(o);
        }
        out
    };
    let mut seeds = vec![
        (
            "export-name-vol".into(),
            with(&[option(OPT_EXPORT_NAME, b"vol")]),
        ),
        (
            "export-name-unknown".into(),
            with(&[option(OPT_EXPORT_NAME, b"nope")]),
        ),
        ("abort".into(), with(&[option(OPT_ABORT, &[])])),
        (
            "list-info-go".into(),
            with(&[
                option(OPT_LIST, &[]),
                option(
                    OPT_INFO,
                    &info_data("ro", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]),
                ),
                option(OPT_GO, &info_data("", &[])),
            ]),
        ),
        (
            "structured-meta-go".into(),
            with(&[
                option(OPT_STRUCTURED_REPLY, &[]),
                option(
                    OPT_LIST_META_CONTEXT,
                    &meta_data("vol", &["base:", "qemu:dirty"]),
                ),
                option(OPT_SET_META_CONTEXT, &meta_data("vol", &[BASE_ALLOCATION])),
                option(OPT_GO, &info_data("vol", &[INFO_NAME])),
            ]),
        ),
        (
            "bad-options".into(),
            with(&[
                option(OPT_LIST, b"x"),
                option(OPT_STRUCTURED_REPLY, b"x"),
                option(OPT_SET_META_CONTEXT, &meta_data("vol", &["nocolon"])),
                option(OPT_INFO, &info_data("vol", &[1])[..6]),
                option(OPT_STARTTLS, &[]),
                option(OPT_EXTENDED_HEADERS, &[]),
                option(99, b"whatever"),
                option(OPT_GO, &info_data("missing", &[])),
            ]),
        ),
        ("too-big-option".into(), {
            let mut o = with(&[]);
            o.extend_from_slice(&IHAVEOPT.to_be_bytes());
            o.extend_from_slice(&OPT_LIST.to_be_bytes());
            o.extend_from_slice(&(MAX_OPTION_LEN + 1).to_be_bytes());
            o
        }),
        ("bad-option-magic".into(), {
            let mut o = with(&[option(OPT_LIST, &[])]);
            o[4] = b'X';
            o
        }),
        ("no-fixed-newstyle".into(), 0u32.to_be_bytes().to_vec()),
        (
            "unknown-client-flags".into(),
            0x83u32.to_be_bytes().to_vec(),
        ),
    ];
    for selector in [0x00, 0x07, 0x1f] {
        seeds.push((
            format!("prefix-{selector:02x}"),
            handshake_prefix(Setup::from_byte(selector)),
        ));
    }
    seeds
}

// ---------------------------------------------------------------------------------------
// nbd_transmission: setup byte, then requests
// ---------------------------------------------------------------------------------------

fn request(kind: u16, flags: u16, offset: u64, len: u32) -> Vec<u8> {
    proto::encode_request(&proto::Request {
        flags,
        kind,
        handle: u64::from(kind) << 32 | u64::from(len),
        offset,
        len,
    })
    .to_vec()
}

fn transmission_seeds() -> Vec<(String, Vec<u8>)> {
    let mut write = request(CMD_WRITE, CMD_FLAG_FUA, 4000, 200);
    write.extend_from_slice(&[0xab; 200]);
    let session: Vec<Vec<u8>> = vec![
        write,
        request(CMD_READ, 0, 0, 8192),
        request(CMD_READ, CMD_FLAG_DF, 4000, 200),
        request(CMD_READ, 0, 0, 128 << 10),
        request(CMD_BLOCK_STATUS, 0, 0, 64 << 10),
        request(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 4096, 100),
        request(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 12288),
        request(CMD_WRITE_ZEROES, CMD_FLAG_FUA, 100, 5000),
        request(CMD_TRIM, 0, 4096, 8192),
        request(CMD_FLUSH, 0, 0, 0),
        request(CMD_CACHE, 0, 0, 4096),
        request(CMD_READ, 0, 1 << 40, 4096),
        request(CMD_READ, CMD_FLAG_FAST_ZERO, 0, 1),
        request(CMD_DISC, 0, 0, 0),
    ];
    let all: Vec<u8> = session.concat();
    let mut seeds = Vec::new();
    for selector in [0x00u8, 0x04, 0x05, 0x07, 0x0f, 0x27, 0x47, 0x87] {
        let mut input = vec![selector];
        input.extend_from_slice(&all);
        seeds.push((format!("session-{selector:02x}"), input));
    }
    // The huge (u64::MAX bytes) device: requests at the very end of the offset range.
    let end = u64::MAX;
    let mut end_write = request(CMD_WRITE, 0, end - 100, 100);
    end_write.extend_from_slice(&[1; 100]);
    let at_end: Vec<Vec<u8>> = vec![
        request(CMD_READ, 0, end - 4096, 4096),
        request(CMD_READ, 0, end - (1 << 20) - 100, 1 << 20),
        request(CMD_READ, 0, end - 10, 11),
        end_write,
        request(CMD_BLOCK_STATUS, 0, end - (3 << 20), 3 << 20),
        request(CMD_BLOCK_STATUS, 0, end - 1, 1),
        request(CMD_TRIM, CMD_FLAG_FUA, end - u64::from(u32::MAX), u32::MAX),
        request(CMD_WRITE_ZEROES, 0, end - (64 << 20), 64 << 20),
        request(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, end, 0),
    ];
    let mut input = vec![0x87];
    input.extend_from_slice(&at_end.concat());
    seeds.push(("huge-end-of-range".into(), input));

    let singles = [
        ("read", request(CMD_READ, 0, 512, 1024)),
        ("huge-write", request(CMD_WRITE, 0, 0, MAX_BLOCK_SIZE + 1)),
        ("truncated-write", request(CMD_WRITE, 0, 0, 4096)),
        ("bad-magic", {
            let mut r = request(CMD_READ, 0, 0, 1);
            r[0] ^= 0xff;
            r
        }),
        ("short-header", request(CMD_FLUSH, 0, 0, 0)[..20].to_vec()),
    ];
    for (name, bytes) in singles {
        let mut input = vec![0x07];
        input.extend_from_slice(&bytes);
        seeds.push((name.into(), input));
    }
    seeds
}
