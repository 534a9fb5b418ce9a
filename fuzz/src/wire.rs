//! The `wire_frame` target: `shorthorn_wire::frame::decode_frame` and the functions that
//! interpret a decoded frame.
//!
//! The first input byte picks how the rest is used (`mode % 3`):
//!
//! * 0: the rest is a raw byte stream, decoded frame after frame (mostly exercises the
//!   magic and checksum rejections, since random bytes rarely carry a valid CRC32C);
//! * 1: the rest describes one or more frames field by field ([`build_frame`]); they are
//!   serialised with correct checksums (unless asked to corrupt them), so fuzzing reaches
//!   the per-kind header rules and the payload checks;
//! * 2: the rest describes a block-status reply as a list of extents, so fuzzing reaches
//!   `Frame::extents` and `check_extents` with mostly well-formed lists.
//!
//! Invariants checked, besides "no panic":
//!
//! * a decoded frame passes `Frame::validate` and re-encodes to exactly the bytes it was
//!   decoded from, which decode to an equal frame;
//! * every strict prefix of a frame decodes to `Ok(None)` without consuming anything
//!   (so a frame split across reads is never misread);
//! * for a frame built from valid field values, the decoder accepts it exactly when the
//!   encoder's `Frame::validate` does, and returns the same frame;
//! * `Request::from_frame` succeeds on exactly the request frames and
//!   `Request::into_frame` rebuilds the same frame; `Frame::extents` succeeds on every
//!   successful block-status reply and `Frame::block_status_reply` rebuilds it;
//!   `Frame::error` is `Some` exactly for error replies, with the same status, and the
//!   error reply built from that error is itself valid.

use bytes::{BufMut, Bytes, BytesMut};
use shorthorn_block::ExtentKind;
use shorthorn_wire::frame::{
    self, Flags, Frame, HEADER_LEN, Kind, MAGIC, MAX_RANGE_LEN, RESPONSE_BIT, RawHeader, Request,
    Status, VERSION, decode_frame,
};

/// Most frames decoded or built from one input, to keep executions fast.
const MAX_FRAMES: usize = 16;

/// The `wire_frame` fuzz target.
pub fn wire_frame(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        check_stream(data);
        return;
    };
    match mode % 3 {
        0 => check_stream(rest),
        1 => check_built(rest),
        _ => check_built_block_status(rest),
    }
}

/// Reads fixed-size little-endian fields from the fuzzer's bytes, zeros once exhausted.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// What decoding a built frame must give.
#[derive(Debug)]
enum Expect {
    /// Exactly this frame.
    Frame(Frame),
    /// An error (a checksum, version, kind, status or format violation).
    Error,
    /// Not predicted (the header announces a payload length other than what follows).
    Unknown,
}

fn payload_crc(payload: &[u8]) -> u32 {
    if payload.is_empty() {
        0
    } else {
        crc32c::crc32c(payload)
    }
}

/// Builds one frame from field values taken from `fields`; appends its bytes to `out` and
/// returns what decoding them must give. Layout of the fields: a selector byte (which
/// fields are taken raw rather than steered towards valid values, and which checksums to
/// corrupt), then kind u8, flags u16, request id u64, offset u64, length u64, status u32,
/// announced payload length u32, version u8, payload length u16, payload.
fn build_one(fields: &mut Fields<'_>, out: &mut Vec<u8>) -> Expect {
    let sel = fields.u8();
    let kind_byte = fields.u8();
    let kind_byte = if sel & 0x01 != 0 {
        kind_byte
    } else {
        // Steer towards the eight defined kinds (valid values map to themselves).
        let low = kind_byte & !RESPONSE_BIT;
        let low = if (1..=8).contains(&low) {
            low
        } else {
            low % 8 + 1
        };
        low | (kind_byte & RESPONSE_BIT)
    };
    let flags = fields.u16();
    let flags = if sel & 0x02 != 0 { flags } else { flags & 3 };
    let request_id = fields.u64();
    let offset = fields.u64();
    let length = fields.u64();
    let status = fields.u32();
    let status = if sel & 0x04 != 0 { status } else { status % 6 };
    let announced = fields.u32();
    let version = fields.u8();
    let version = if sel & 0x80 != 0 { version } else { VERSION };
    let payload_len = usize::from(fields.u16());
    let payload = fields.take(payload_len);
    let length = if sel & 0x08 != 0 {
        length
    } else {
        payload.len() as u64
    };
    let payload_len_field = if sel & 0x10 != 0 {
        announced
    } else {
        u32::try_from(payload.len()).expect("payload is at most 64 KiB")
    };
    let raw = RawHeader {
        magic: MAGIC,
        version,
        kind: kind_byte,
        flags,
        request_id,
        offset,
        length,
        payload_len: payload_len_field,
        status,
        payload_crc: payload_crc(payload) ^ u32::from(sel & 0x40 != 0),
    };
    let mut header = raw.to_bytes();
    if sel & 0x20 != 0 {
        header[HEADER_LEN - 1] ^= 0x5a;
    }
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);

    if payload_len_field as usize != payload.len() {
        return Expect::Unknown;
    }
    if sel & 0x60 != 0 || version != VERSION {
        return Expect::Error;
    }
    let (Some(kind), Some(status)) = (
        Kind::from_wire(kind_byte & !RESPONSE_BIT),
        Status::from_wire(status),
    ) else {
        return Expect::Error;
    };
    let frame = Frame {
        kind,
        response: kind_byte & RESPONSE_BIT != 0,
        flags: Flags(flags),
        request_id,
        offset,
        length,
        status,
        payload: Bytes::copy_from_slice(payload),
    };
    match frame.validate() {
        Ok(()) => Expect::Frame(frame),
        Err(_) => Expect::Error,
    }
}

/// Mode 1: frames built field by field, concatenated.
fn check_built(data: &[u8]) {
    let mut fields = Fields { data };
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    while !fields.is_empty() && expected.len() < MAX_FRAMES {
        expected.push(build_one(&mut fields, &mut wire));
    }
    check_expected(&wire, expected);
    check_stream(&wire);
}

/// Mode 2: a successful block-status reply whose payload is a list of extents built from
/// the input: request id u64, offset u64, a selector byte, a count, then per extent a
/// length u16, a kind byte and (if selected) a gap byte. The selector can make the list
/// lie about its count, leave gaps, use unknown kinds or give the range any length.
///
/// Whether the reply is valid is also computed here, independently, from the rules of
/// `docs/wire-protocol.md` (count matches, kinds 0/1, extents non-empty, contiguous from
/// the offset, inside the range, at least one for a non-empty range, range at most
/// 4 GiB and not overflowing), and must agree with `Frame::validate` and the decoder.
fn check_built_block_status(data: &[u8]) {
    let mut fields = Fields { data };
    let request_id = fields.u64();
    let offset = fields.u64();
    let sel = fields.u8();
    let count = usize::from(fields.u8() % 64);
    let announced = match sel & 0x03 {
        0 | 1 => count as u32,
        2 => (count as u32).wrapping_add(1),
        _ => fields.u32(),
    };
    let mut payload = BytesMut::new();
    payload.put_u32_le(announced);
    let mut records = Vec::with_capacity(count);
    let mut at = offset;
    for _ in 0..count {
        let len = u64::from(fields.u16());
        let kind = fields.u8();
        let kind = if sel & 0x04 != 0 {
            u32::from(kind)
        } else {
            u32::from(kind & 1)
        };
        let gap = if sel & 0x08 != 0 {
            u64::from(fields.u8())
        } else {
            0
        };
        let start = at.wrapping_add(gap);
        payload.put_u64_le(start);
        payload.put_u64_le(len);
        payload.put_u32_le(kind);
        records.push((start, len, kind));
        at = start.wrapping_add(len);
    }
    let covered = at.wrapping_sub(offset);
    let length = if sel & 0x10 != 0 {
        fields.u64()
    } else if sel & 0x20 != 0 {
        covered.wrapping_add(u64::from(fields.u16()))
    } else {
        covered
    };

    // The model.
    let model_ok = (|| {
        if length > MAX_RANGE_LEN || announced as usize != count || (length > 0 && count == 0) {
            return false;
        }
        let Some(end) = offset.checked_add(length) else {
            return false;
        };
        let mut next = offset;
        for &(start, len, kind) in &records {
            if kind > 1 || len == 0 || start != next {
                return false;
            }
            match start.checked_add(len) {
                Some(e) if e <= end => next = e,
                _ => return false,
            }
        }
        true
    })();

    let frame = Frame {
        kind: Kind::BlockStatus,
        response: true,
        flags: Flags::NONE,
        request_id,
        offset,
        length,
        status: Status::Ok,
        payload: payload.freeze(),
    };
    let validated = frame.validate();
    assert_eq!(
        validated.is_ok(),
        model_ok,
        "Frame::validate disagrees with the extent rules ({validated:?}) on {records:?} \
         for {offset}+{length}, count {announced}"
    );
    if model_ok {
        let extents = frame.extents().expect("validated");
        assert_eq!(extents.len(), count);
        for (e, &(start, len, kind)) in extents.iter().zip(&records) {
            assert_eq!((e.offset, e.len), (start, len));
            let model_kind = if kind == 0 {
                ExtentKind::Data
            } else {
                ExtentKind::Zero
            };
            assert_eq!(e.kind, model_kind);
        }
    }
    let expect = if model_ok {
        Expect::Frame(frame.clone())
    } else {
        Expect::Error
    };
    let mut wire = Vec::new();
    wire.extend_from_slice(&frame.raw_header().to_bytes());
    wire.extend_from_slice(&frame.payload);
    check_expected(&wire, vec![expect]);
    check_stream(&wire);
}

/// Decodes `wire` frame by frame and compares with what the builder predicted.
fn check_expected(wire: &[u8], expected: Vec<Expect>) {
    let mut buf = BytesMut::from(wire);
    for (i, expect) in expected.into_iter().enumerate() {
        let got = decode_frame(&mut buf);
        match expect {
            Expect::Frame(frame) => match got {
                Ok(Some(decoded)) => assert_eq!(decoded, frame, "frame {i} decoded differently"),
                other => panic!(
                    "frame {i} passes Frame::validate but the decoder gave {other:?}: {frame:?}"
                ),
            },
            Expect::Error => {
                assert!(
                    got.is_err(),
                    "frame {i} breaks a rule (Frame::validate or checksums) but the decoder \
                     gave {got:?}"
                );
                return;
            }
            Expect::Unknown => return,
        }
    }
    assert!(buf.is_empty(), "decoder left bytes after the built frames");
}

/// Decodes a byte stream frame after frame, checking every decoded frame.
fn check_stream(input: &[u8]) {
    let mut buf = BytesMut::from(input);
    for _ in 0..MAX_FRAMES {
        let before = buf.clone();
        match decode_frame(&mut buf) {
            Ok(Some(frame)) => {
                let used = before.len() - buf.len();
                assert!(used >= HEADER_LEN, "a frame is at least a header");
                check_frame(&frame, &before[..used]);
                check_prefixes(&before[..used]);
            }
            Ok(None) => {
                assert_eq!(buf, before, "an incomplete frame must not be consumed");
                break;
            }
            Err(_) => break,
        }
    }
}

/// Every strict prefix of a whole frame is incomplete: `Ok(None)`, nothing consumed.
fn check_prefixes(wire: &[u8]) {
    let total = wire.len();
    let cuts = [
        0,
        1,
        3,
        4,
        5,
        HEADER_LEN - 1,
        HEADER_LEN,
        total / 2,
        total - 1,
    ];
    for &cut in cuts.iter().filter(|&&cut| cut < total) {
        let mut buf = BytesMut::from(&wire[..cut]);
        match decode_frame(&mut buf) {
            Ok(None) => assert_eq!(&buf[..], &wire[..cut], "prefix {cut} was consumed"),
            other => panic!("prefix of {cut}/{total} bytes of a valid frame gave {other:?}"),
        }
    }
}

/// The invariants of one decoded frame, `wire` being the bytes it was decoded from.
fn check_frame(frame: &Frame, wire: &[u8]) {
    frame
        .validate()
        .unwrap_or_else(|e| panic!("decoded frame fails Frame::validate: {e}: {frame:?}"));

    // Exact re-encoding, and decoding that again.
    let mut encoded = BytesMut::new();
    frame
        .encode(&mut encoded)
        .unwrap_or_else(|e| panic!("decoded frame cannot be encoded: {e}: {frame:?}"));
    assert_eq!(
        &encoded[..],
        wire,
        "re-encoding differs from the decoded bytes"
    );
    assert_eq!(frame.raw_header().to_bytes()[..], wire[..HEADER_LEN]);
    let mut again = encoded.clone();
    match decode_frame(&mut again) {
        Ok(Some(decoded)) => assert_eq!(&decoded, frame, "round trip changed the frame"),
        other => panic!("re-encoded frame does not decode: {other:?}"),
    }
    assert!(again.is_empty());

    // Requests: from_frame / into_frame round trip.
    match Request::from_frame(frame.clone()) {
        Ok(request) => {
            assert!(!frame.response, "from_frame accepted a reply");
            assert_eq!(request.kind(), frame.kind);
            let rebuilt = request.clone().into_frame(frame.request_id);
            assert_eq!(
                &rebuilt, frame,
                "Request {request:?} does not rebuild its frame"
            );
        }
        Err(e) => assert!(frame.response, "from_frame rejected a valid request: {e}"),
    }

    // Block-status replies: extents and the reply built from them.
    let is_block_status_ok =
        frame.kind == Kind::BlockStatus && frame.response && frame.status == Status::Ok;
    match frame.extents() {
        Ok(extents) => {
            assert!(is_block_status_ok, "extents() accepted a {frame:?}");
            frame::check_extents(frame.offset, frame.length, &extents)
                .unwrap_or_else(|e| panic!("extents() returned a bad list: {e}"));
            let request = Frame {
                response: false,
                payload: Bytes::new(),
                ..frame.clone()
            };
            let rebuilt = Frame::block_status_reply(&request, &extents);
            assert_eq!(
                &rebuilt, frame,
                "block_status_reply does not rebuild the reply"
            );
        }
        Err(e) => assert!(
            !is_block_status_ok,
            "extents() rejected a decoded block-status reply: {e}"
        ),
    }

    // Error replies: the error, and the reply that reports it again.
    match frame.error("fuzz") {
        None => assert_eq!(frame.status, Status::Ok, "error() missed a failed reply"),
        Some(error) => {
            assert_ne!(frame.status, Status::Ok, "error() on a successful frame");
            assert_eq!(Status::of(&error), frame.status);
            let _ = error.to_string();
            if frame.response {
                let request = Frame {
                    response: false,
                    status: Status::Ok,
                    payload: Bytes::new(),
                    ..frame.clone()
                };
                let reply = Frame::error_reply(&request, &error);
                reply.validate().unwrap_or_else(|e| {
                    panic!("error_reply for {error:?} is invalid: {e}: {reply:?}")
                });
            }
        }
    }
}

/// The mode-1 field description of `frame` (the inverse of what mode 1 builds; used by
/// the corpus generator): prepend the mode byte `1` to get a `wire_frame` input.
pub fn build_frame(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame
        .encode(&mut BytesMut::new())
        .expect("seed frames are valid");
    out.push(0x08); // selector: length taken as given, other fields steered, checksums intact
    out.push(frame.kind as u8 | if frame.response { RESPONSE_BIT } else { 0 });
    out.extend_from_slice(&frame.flags.0.to_le_bytes());
    out.extend_from_slice(&frame.request_id.to_le_bytes());
    out.extend_from_slice(&frame.offset.to_le_bytes());
    out.extend_from_slice(&frame.length.to_le_bytes());
    out.extend_from_slice(&(frame.status as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(VERSION);
    let len = u16::try_from(frame.payload.len()).expect("seed payloads are small");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame.payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_frame_reproduces_the_encoding() {
        let read = Request::Read {
            offset: 4096,
            len: 512,
        }
        .into_frame(3);
        let frames = [
            read.clone(),
            Frame::ok_reply(&read, Bytes::from(vec![7u8; 512])),
            Request::Flush.into_frame(1),
        ];
        for frame in frames {
            let mut wire = Vec::new();
            let input = build_frame(&frame);
            let expect = build_one(&mut Fields { data: &input }, &mut wire);
            let mut encoded = BytesMut::new();
            frame.encode(&mut encoded).unwrap();
            assert_eq!(wire, &encoded[..]);
            assert!(matches!(expect, Expect::Frame(f) if f == frame));
        }
    }
}
