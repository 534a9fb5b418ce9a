//! An independent checker of the server's transmission-phase output, written from the
//! NBD protocol document: `nbd_transmission` runs it on everything the server sent after
//! the handshake, so the target checks not only "no panic, no hang" but also that every
//! request the server read gets exactly one well-formed reply.

use std::collections::HashMap;

use shorthorn_nbd::proto::{
    self, BASE_ALLOCATION_ID, CMD_BLOCK_STATUS, CMD_DISC, CMD_FLAG_REQ_ONE, CMD_READ, CMD_WRITE,
    EINVAL, EIO, ENOMEM, ENOSPC, ENOTSUP, EOVERFLOW, EPERM, ESHUTDOWN, MAX_BLOCK_SIZE,
    REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR, REPLY_TYPE_NONE,
    REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, REQUEST_HEADER_LEN, SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
};

/// Errors the protocol defines.
const ERRNOS: [u32; 8] = [
    EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN,
];

/// The requests in `stream` that the server reads (and so must answer), framed as the
/// server frames them: headers until a bad magic, `NBD_CMD_DISC` or the end of input;
/// a write's payload follows its header; an oversized write is answered and ends the
/// connection; an incomplete last request is not answered.
pub(crate) fn requests_read(mut stream: &[u8]) -> Vec<proto::Request> {
    let mut out = Vec::new();
    while let Some(header) = stream.first_chunk::<REQUEST_HEADER_LEN>() {
        let Ok(request) = proto::decode_request(header) else {
            break;
        };
        stream = &stream[REQUEST_HEADER_LEN..];
        if request.kind == CMD_DISC {
            break;
        }
        if request.kind == CMD_WRITE {
            if request.len > MAX_BLOCK_SIZE {
                out.push(request);
                break;
            }
            let Some(rest) = stream.get(request.len as usize..) else {
                break;
            };
            stream = rest;
        }
        out.push(request);
    }
    out
}

/// Gives every request in `stream` a distinct handle (the handle is opaque to the
/// server; distinct handles make its replies attributable). Returns `None` when the
/// handles already are distinct.
pub(crate) fn with_distinct_handles(stream: &[u8]) -> Option<Vec<u8>> {
    let requests = requests_read(stream);
    let mut seen = std::collections::HashSet::new();
    if requests.iter().all(|r| seen.insert(r.handle)) {
        return None;
    }
    let mut out = stream.to_vec();
    let mut at = 0;
    for (i, request) in requests.iter().enumerate() {
        out[at + 8..at + 16].copy_from_slice(&(0xf00d_0000_0000_0000 | i as u64).to_be_bytes());
        at += REQUEST_HEADER_LEN;
        if request.kind == CMD_WRITE && request.len <= MAX_BLOCK_SIZE {
            at += request.len as usize;
        }
    }
    Some(out)
}

struct Pending {
    request: proto::Request,
    /// Byte ranges of the read answered so far by data and hole chunks.
    covered: Vec<(u64, u64)>,
    failed: bool,
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b.try_into().expect("2 bytes"))
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().expect("4 bytes"))
}
fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

/// A cursor over the server's output.
struct Out<'a> {
    rest: &'a [u8],
}

impl<'a> Out<'a> {
    fn take(&mut self, n: usize, what: &str) -> &'a [u8] {
        assert!(self.rest.len() >= n, "reply stream ends inside {what}");
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }
}

/// Checks `out`, the server's transmission-phase output, against `requests` (which have
/// distinct handles).
pub(crate) fn check(requests: &[proto::Request], structured: bool, out: &[u8]) {
    let mut pending: HashMap<u64, Pending> = requests
        .iter()
        .map(|&request| {
            (
                request.handle,
                Pending {
                    request,
                    covered: Vec::new(),
                    failed: false,
                },
            )
        })
        .collect();
    let mut out = Out { rest: out };
    let mut replies = 0;
    while !out.rest.is_empty() {
        replies += 1;
        let magic = be_u32(out.take(4, "a reply magic"));
        match magic {
            SIMPLE_REPLY_MAGIC => {
                let error = be_u32(out.take(4, "a simple reply"));
                let handle = be_u64(out.take(8, "a simple reply"));
                let p = pending.remove(&handle).unwrap_or_else(|| {
                    panic!("simple reply {replies} for an unknown or answered handle")
                });
                let req = p.request;
                assert!(error == 0 || ERRNOS.contains(&error), "errno {error}");
                if req.kind == CMD_READ {
                    assert!(
                        !structured,
                        "simple reply to a read with structured replies"
                    );
                    if error == 0 {
                        out.take(req.len as usize, "read data");
                    }
                }
            }
            STRUCTURED_REPLY_MAGIC => {
                assert!(structured, "structured reply without negotiating it");
                let flags = be_u16(out.take(2, "a chunk header"));
                let kind = be_u16(out.take(2, "a chunk header"));
                let handle = be_u64(out.take(8, "a chunk header"));
                let len = be_u32(out.take(4, "a chunk header")) as usize;
                let payload = out.take(len, "a chunk payload");
                let p = pending
                    .get_mut(&handle)
                    .unwrap_or_else(|| panic!("chunk {replies} for an unknown or answered handle"));
                check_chunk(p, kind, payload);
                if flags & REPLY_FLAG_DONE != 0 {
                    let p = pending.remove(&handle).expect("present");
                    if p.request.kind == CMD_READ && !p.failed {
                        check_coverage(&p);
                    }
                }
            }
            other => panic!("garbage {other:#x} where reply {replies} should start"),
        }
    }
    let mut unanswered: Vec<_> = pending.values().map(|p| p.request).collect();
    unanswered.sort_by_key(|r| r.handle);
    assert!(
        unanswered.is_empty(),
        "requests never answered: {unanswered:?}"
    );
}

fn check_chunk(p: &mut Pending, kind: u16, payload: &[u8]) {
    let req = p.request;
    let start = req.offset;
    // Only reads inside the device (so without overflow) may get data chunks.
    let end = req.offset.checked_add(u64::from(req.len));
    match kind {
        REPLY_TYPE_NONE => assert!(payload.is_empty(), "NONE chunk with a payload"),
        REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
            assert_eq!(req.kind, CMD_READ, "data chunk for a non-read");
            assert!(payload.len() >= 8, "short offset chunk");
            let offset = be_u64(&payload[..8]);
            let len = if kind == REPLY_TYPE_OFFSET_DATA {
                (payload.len() - 8) as u64
            } else {
                assert_eq!(payload.len(), 12, "hole chunk of {} bytes", payload.len());
                u64::from(be_u32(&payload[8..]))
            };
            assert!(len > 0, "empty data or hole chunk");
            let end = end.expect("data chunk for a read whose range overflows");
            assert!(
                offset >= start && offset.checked_add(len).is_some_and(|e| e <= end),
                "chunk {offset}+{len} outside the read {start}+{}",
                req.len
            );
            p.covered.push((offset, len));
        }
        REPLY_TYPE_BLOCK_STATUS => {
            assert_eq!(
                req.kind, CMD_BLOCK_STATUS,
                "block status chunk for another command"
            );
            assert!(
                payload.len() >= 12 && (payload.len() - 4).is_multiple_of(8),
                "bad descriptors"
            );
            assert_eq!(
                be_u32(&payload[..4]),
                BASE_ALLOCATION_ID,
                "unknown context id"
            );
            let descriptors: Vec<_> = payload[4..].chunks(8).map(|d| be_u32(&d[..4])).collect();
            assert!(descriptors.iter().all(|&l| l > 0), "empty descriptor");
            let total: u64 = descriptors.iter().map(|&l| u64::from(l)).sum();
            assert!(
                total <= u64::from(req.len),
                "descriptors cover {total} of {}",
                req.len
            );
            if req.flags & CMD_FLAG_REQ_ONE != 0 {
                assert_eq!(
                    descriptors.len(),
                    1,
                    "REQ_ONE answered with several descriptors"
                );
            }
        }
        REPLY_TYPE_ERROR => {
            assert!(payload.len() >= 6, "short error chunk");
            let error = be_u32(&payload[..4]);
            assert!(ERRNOS.contains(&error), "error chunk with errno {error}");
            let msg_len = usize::from(be_u16(&payload[4..6]));
            assert_eq!(payload.len(), 6 + msg_len, "error message length");
            assert!(
                std::str::from_utf8(&payload[6..]).is_ok(),
                "message not UTF-8"
            );
            p.failed = true;
        }
        other => panic!("unknown chunk type {other}"),
    }
}

/// A successful read's data and hole chunks cover its range exactly once.
fn check_coverage(p: &Pending) {
    let req = p.request;
    let mut covered = p.covered.clone();
    covered.sort_unstable();
    let mut at = req.offset;
    for (offset, len) in covered {
        assert_eq!(offset, at, "read chunks leave a gap or overlap at {at}");
        at = at
            .checked_add(len)
            .expect("chunks were checked to lie inside the read");
    }
    assert_eq!(
        Some(at),
        req.offset.checked_add(u64::from(req.len)),
        "read chunks stop short"
    );
}
