//! The NBD targets.
//!
//! The handshake and transmission loops of `shorthorn-nbd` are crate-private, so they are
//! driven through the public API: `NbdServer::serve_stream` on one end of a
//! `tokio::io::duplex` pipe, the fuzzer's bytes written to the other end (then EOF) while
//! everything the server sends is drained. The pure decoders that *are* public
//! (`shorthorn_nbd::proto`) are also called directly and round-tripped.
//!
//! * `nbd_handshake`: the input is the client's side of the connection from the start
//!   (client flags, then options).
//! * `nbd_transmission`: the first byte picks one of several fixed, valid handshakes
//!   ([`Setup`]); the rest is the client's transmission-phase traffic (request headers
//!   and write payloads).

use std::sync::Arc;
use std::time::Duration;

use shorthorn_nbd::proto::{
    self, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, IHAVEOPT, MAX_BLOCK_SIZE, MAX_STRING_LEN,
    OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT,
    OPT_STRUCTURED_REPLY, OPTION_HEADER_LEN, QueryMatch, REQUEST_HEADER_LEN,
};
use shorthorn_nbd::{Export, NbdServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mem::{FuzzDevice, HugeDevice, MemDevice};
use crate::replies;

/// Size of the writable export: more than the 64 KiB from which structured reads look
/// for holes, and not a multiple of the 4 KiB block, so tails are exercised.
const VOL_SIZE: u64 = (192 << 10) + 512;
/// Size of the read-only export.
const RO_SIZE: u64 = 8192 + 100;
/// Virtual time after which a connection that has not finished counts as hung. The
/// clock is paused and only advances while every task is idle, so this costs no real
/// time; the server's own handshake timeout is set far beyond it.
const HANG_LIMIT: Duration = Duration::from_secs(600);

/// Which fixed handshake precedes the fuzzed transmission traffic, and the server limits.
/// Decoded from the first input byte of `nbd_transmission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// Negotiate structured replies (`NBD_OPT_STRUCTURED_REPLY`).
    pub structured: bool,
    /// Select `base:allocation` (`NBD_OPT_SET_META_CONTEXT`), enabling block status.
    pub meta_context: bool,
    /// Finish with `NBD_OPT_GO` (otherwise the old `NBD_OPT_EXPORT_NAME`).
    pub go: bool,
    /// Use the read-only export instead of the writable one.
    pub read_only: bool,
    /// Set `NBD_FLAG_C_NO_ZEROES`.
    pub no_zeroes: bool,
    /// `ServerConfig::sparse_reads`.
    pub sparse_reads: bool,
    /// One request in flight at a time and the smallest byte budget, to exercise the
    /// limiter.
    pub tight_limits: bool,
    /// The writable export is a [`HugeDevice`] of `u64::MAX` bytes instead of a small
    /// in-memory one, so requests can reach the end of the 64-bit offset range.
    pub huge: bool,
}

impl Setup {
    /// The setup a selector byte stands for (every bit is one field).
    pub fn from_byte(b: u8) -> Setup {
        Setup {
            structured: b & 0x01 != 0,
            meta_context: b & 0x02 != 0,
            go: b & 0x04 != 0,
            read_only: b & 0x08 != 0,
            no_zeroes: b & 0x10 != 0,
            sparse_reads: b & 0x20 == 0,
            tight_limits: b & 0x40 != 0,
            huge: b & 0x80 != 0,
        }
    }

    /// The selector byte for this setup.
    pub fn to_byte(self) -> u8 {
        u8::from(self.structured)
            | u8::from(self.meta_context) << 1
            | u8::from(self.go) << 2
            | u8::from(self.read_only) << 3
            | u8::from(self.no_zeroes) << 4
            | u8::from(!self.sparse_reads) << 5
            | u8::from(self.tight_limits) << 6
            | u8::from(self.huge) << 7
    }

    fn export_name(self) -> &'static str {
        if self.read_only { "ro" } else { "vol" }
    }

    fn config(self) -> ServerConfig {
        ServerConfig {
            max_in_flight: if self.tight_limits { 1 } else { 8 },
            max_in_flight_bytes: if self.tight_limits { 0 } else { 64 << 20 },
            handshake_timeout: HANG_LIMIT * 10,
            max_options: 64,
            sparse_reads: self.sparse_reads,
            ..ServerConfig::default()
        }
    }
}

/// The `nbd_handshake` fuzz target.
pub fn nbd_handshake(data: &[u8]) {
    check_option_stream(data);
    // The option payload parsers on raw bytes too (cheap, and reach deeper than through
    // a stream the fuzzer first has to frame correctly).
    check_info(data);
    check_meta(data, true);
    run_server(Setup::from_byte(0), data);
}

/// The `nbd_transmission` fuzz target.
pub fn nbd_transmission(data: &[u8]) {
    static HARNESS: std::sync::Once = std::sync::Once::new();
    HARNESS.call_once(check_setups);
    let Some((&selector, requests)) = data.split_first() else {
        return;
    };
    let setup = Setup::from_byte(selector);
    check_request_stream(requests);
    // Replies are matched to requests by handle, so make handles distinct if they are not.
    let distinct = replies::with_distinct_handles(requests);
    let requests = distinct.as_deref().unwrap_or(requests);
    let mut stream = handshake_prefix(setup);
    stream.extend_from_slice(requests);
    let (out, total) = exchange(setup, &stream, REPLY_CAP);
    let handshake = handshake_output(setup);
    assert!(
        out.starts_with(&handshake),
        "handshake replies differ from those of the bare handshake"
    );
    if total <= REPLY_CAP {
        replies::check(
            &replies::requests_read(requests),
            setup.structured,
            &out[handshake.len()..],
        );
    }
}

/// Checks that the harness still does what it means to: every [`Setup`]'s handshake is
/// accepted and reaches the transmission phase, where a 16-byte read succeeds. Run once
/// at the start of `nbd_transmission` (so a server change that makes the fixed
/// handshakes fail stops fuzzing at once instead of silently fuzzing only the refusal).
pub fn check_setups() {
    for selector in 0..=u8::MAX {
        let setup = Setup::from_byte(selector);
        assert_eq!(setup.to_byte(), selector);
        let mut input = handshake_prefix(setup);
        let handle = 0x1234_5678_9abc_def0;
        input.extend_from_slice(&proto::encode_request(&proto::Request {
            flags: 0,
            kind: proto::CMD_READ,
            handle,
            offset: 0,
            len: 16,
        }));
        let (out, _) = exchange(setup, &input, 1 << 20);
        // The read's reply is the last thing sent. Simple: magic, error, handle, data.
        // Structured: magic, flags, type, handle, length, then offset and data.
        let (magic, reply_len) = if setup.structured {
            (proto::STRUCTURED_REPLY_MAGIC, 20 + 8 + 16)
        } else {
            (proto::SIMPLE_REPLY_MAGIC, 16 + 16)
        };
        assert!(
            out.len() > reply_len,
            "{setup:?}: the handshake no longer reaches transmission ({} bytes sent)",
            out.len()
        );
        let reply = &out[out.len() - reply_len..];
        assert_eq!(reply[..4], magic.to_be_bytes(), "{setup:?}: no read reply");
        assert_eq!(
            reply[8..16],
            handle.to_be_bytes(),
            "{setup:?}: wrong handle"
        );
        if !setup.structured {
            assert_eq!(reply[4..8], [0; 4], "{setup:?}: the read failed");
        }
        assert_eq!(
            &reply[reply_len - 16..],
            &[0u8; 16],
            "{setup:?}: zeros read"
        );
    }
}

/// Most server output kept for checking replies (longer exchanges are not checked).
const REPLY_CAP: usize = 4 << 20;

/// What the server sends for the bare handshake of `setup` (computed once per setup).
fn handshake_output(setup: Setup) -> Vec<u8> {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<u8, Vec<u8>>> =
            Default::default();
    }
    CACHE.with(|cache| {
        cache
            .borrow_mut()
            .entry(setup.to_byte())
            .or_insert_with(|| exchange(setup, &handshake_prefix(setup), REPLY_CAP).0)
            .clone()
    })
}

/// The client's side of a valid handshake for `setup`, up to the transmission phase.
pub fn handshake_prefix(setup: Setup) -> Vec<u8> {
    let mut flags = FLAG_C_FIXED_NEWSTYLE;
    if setup.no_zeroes {
        flags |= FLAG_C_NO_ZEROES;
    }
    let mut out = flags.to_be_bytes().to_vec();
    let name = setup.export_name();
    if setup.structured {
        push_option(&mut out, OPT_STRUCTURED_REPLY, &[]);
    }
    if setup.meta_context {
        let request = proto::MetaContextRequest {
            name: name.to_owned(),
            queries: vec![proto::BASE_ALLOCATION.to_owned()],
        };
        push_option(&mut out, OPT_SET_META_CONTEXT, &encode_meta(&request));
    }
    if setup.go {
        let request = proto::InfoRequest {
            name: name.to_owned(),
            requests: vec![proto::INFO_NAME, proto::INFO_DESCRIPTION],
        };
        push_option(&mut out, OPT_GO, &encode_info(&request));
    } else {
        push_option(&mut out, OPT_EXPORT_NAME, name.as_bytes());
    }
    out
}

fn push_option(out: &mut Vec<u8>, option: u32, data: &[u8]) {
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&proto::len_u32(data.len()).to_be_bytes());
    out.extend_from_slice(data);
}

// ---------------------------------------------------------------------------------------
// Encoders for the option payloads, written from the protocol document (the crate has
// parsers for them but, being a server, no encoders).
// ---------------------------------------------------------------------------------------

fn push_string32(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&proto::len_u32(s.len()).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `NBD_OPT_INFO` / `NBD_OPT_GO` payload: name, u16 count, u16 information requests.
fn encode_info(request: &proto::InfoRequest) -> Vec<u8> {
    let mut out = Vec::new();
    push_string32(&mut out, &request.name);
    let count = u16::try_from(request.requests.len()).expect("at most u16::MAX requests");
    out.extend_from_slice(&count.to_be_bytes());
    for r in &request.requests {
        out.extend_from_slice(&r.to_be_bytes());
    }
    out
}

/// Meta context payload: name, u32 count, then each query as u32 length and string.
fn encode_meta(request: &proto::MetaContextRequest) -> Vec<u8> {
    let mut out = Vec::new();
    push_string32(&mut out, &request.name);
    out.extend_from_slice(&proto::len_u32(request.queries.len()).to_be_bytes());
    for q in &request.queries {
        push_string32(&mut out, q);
    }
    out
}

fn check_string(s: &str) {
    assert!(
        s.len() <= MAX_STRING_LEN,
        "string of {} bytes accepted",
        s.len()
    );
    assert!(!s.contains('\0'), "string with a NUL accepted");
}

/// `parse_info_request`: whatever parses re-encodes to exactly the input.
fn check_info(data: &[u8]) {
    if let Ok(request) = proto::parse_info_request(data) {
        check_string(&request.name);
        let encoded = encode_info(&request);
        assert_eq!(
            encoded, data,
            "info request {request:?} does not round-trip"
        );
        assert_eq!(proto::parse_info_request(&encoded), Ok(request));
    }
}

/// `parse_meta_context_request` (exact round trip) and `match_query` on its queries.
fn check_meta(data: &[u8], listing: bool) {
    let Ok(request) = proto::parse_meta_context_request(data) else {
        return;
    };
    check_string(&request.name);
    let encoded = encode_meta(&request);
    assert_eq!(
        encoded, data,
        "meta context request {request:?} does not round-trip"
    );
    assert_eq!(
        proto::parse_meta_context_request(&encoded),
        Ok(request.clone())
    );
    for query in &request.queries {
        check_string(query);
        match proto::match_query(query, listing) {
            Err(_) => assert!(!query.contains(':'), "query {query:?} with a colon refused"),
            Ok(QueryMatch::BaseAllocation) => {
                assert!(query == "base:allocation" || (listing && query == "base:"));
            }
            Ok(QueryMatch::Nothing) => {
                assert!(query != "base:allocation" && !(listing && query == "base:"));
            }
        }
    }
}

/// Walks a handshake stream the way the server frames it (client flags, then options)
/// and checks the option header decoder and the payload parsers on each option.
fn check_option_stream(data: &[u8]) {
    let Some(mut rest) = data.get(4..) else {
        return;
    };
    while let Some(header_bytes) = rest.first_chunk::<OPTION_HEADER_LEN>() {
        let Ok(header) = proto::decode_option_header(header_bytes) else {
            assert_ne!(
                &header_bytes[..8],
                &IHAVEOPT.to_be_bytes(),
                "IHAVEOPT refused"
            );
            return;
        };
        let mut reencoded = Vec::new();
        push_option(&mut reencoded, header.option, &[]);
        reencoded[12..16].copy_from_slice(&header.len.to_be_bytes());
        assert_eq!(
            &reencoded[..],
            &header_bytes[..],
            "option header does not round-trip"
        );
        rest = &rest[OPTION_HEADER_LEN..];
        let Some(payload) = rest.get(..header.len as usize) else {
            return;
        };
        match header.option {
            OPT_INFO | OPT_GO => check_info(payload),
            OPT_LIST_META_CONTEXT => check_meta(payload, true),
            OPT_SET_META_CONTEXT => check_meta(payload, false),
            _ => {}
        }
        rest = &rest[payload.len()..];
    }
}

/// Walks transmission traffic the way the server frames it (request headers, write
/// payloads) and checks that every header decodes and re-encodes exactly.
fn check_request_stream(mut rest: &[u8]) {
    while let Some(header_bytes) = rest.first_chunk::<REQUEST_HEADER_LEN>() {
        let Ok(request) = proto::decode_request(header_bytes) else {
            assert_ne!(header_bytes[..4], proto::REQUEST_MAGIC.to_be_bytes());
            return;
        };
        assert_eq!(
            &proto::encode_request(&request),
            header_bytes,
            "request header does not round-trip"
        );
        let _ = proto::command_name(request.kind);
        rest = &rest[REQUEST_HEADER_LEN..];
        if request.kind == proto::CMD_DISC {
            return;
        }
        if request.kind == proto::CMD_WRITE {
            if request.len > MAX_BLOCK_SIZE {
                return;
            }
            let Some(tail) = rest.get(request.len as usize..) else {
                return;
            };
            rest = tail;
        }
    }
}

/// Serves one connection whose client sends `input` and then closes its sending side.
/// Panics (through the panic hook: also inside server tasks) on a server panic, and if
/// the connection is still open once every task is idle.
fn run_server(setup: Setup, input: &[u8]) {
    let (head, _) = exchange(setup, input, 16);
    assert!(
        head.starts_with(b"NBDMAGICIHAVEOPT"),
        "server did not start with the greeting"
    );
}

/// Runs one connection like the targets do; returns the first `keep` bytes the server
/// sent, and how many it sent in all.
pub fn exchange(setup: Setup, input: &[u8], keep: usize) -> (Vec<u8>, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let vol = if setup.huge {
            FuzzDevice::Huge(HugeDevice::new(u64::MAX))
        } else {
            FuzzDevice::Mem(MemDevice::new(VOL_SIZE))
        };
        let ro = FuzzDevice::Mem(MemDevice::new(RO_SIZE));
        let exports = vec![
            Export::new("vol", Arc::new(vol))
                .with_description("fuzz volume")
                .with_multi_conn(true),
            Export::new("ro", Arc::new(ro)).with_read_only(true),
        ];
        let server = NbdServer::with_config(exports, setup.config()).expect("valid config");
        let (client, server_end) = tokio::io::duplex(1 << 20);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let serve = server.serve_stream(server_end, "fuzz");
        let feed = async {
            // The server may close first (refused handshake, protocol error): fine.
            if to_server.write_all(input).await.is_ok() {
                let _ = to_server.shutdown().await;
            }
        };
        let drain = async {
            let mut kept = Vec::new();
            let mut total = 0;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match from_server.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n;
                        let room = keep.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            (kept, total)
        };
        let connection = async { tokio::join!(serve, feed, drain) };
        let Ok(((), (), kept)) = tokio::time::timeout(HANG_LIMIT, connection).await else {
            panic!(
                "NBD server hung: connection still open with every task idle ({setup:?}, \
                 {} input bytes)",
                input.len()
            );
        };
        kept
    })
}
