//! Decoding a frame from a byte buffer, and the `tokio_util` codec both ends use.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::checks::{check_header, payload_crc};
use super::{
    Flags, Frame, FrameError, HEADER_LEN, Kind, MAGIC, RESPONSE_BIT, RawHeader, Status, VERSION,
};

/// [`tokio_util::codec`] encoder and decoder for [`Frame`]s.
///
/// The decoder consumes nothing until a whole frame is buffered (it returns `Ok(None)`
/// for a partial frame), reserves room for the rest of a frame only after its header has
/// been checked, and reports any format violation as a [`FrameError`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        decode_frame(src)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.encode(dst)
    }
}

/// Decodes one frame from the front of `src`, if a whole one is there. See [`FrameCodec`].
pub fn decode_frame(src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    // Check the magic as soon as it is there, so a peer speaking something else is
    // rejected without waiting for a whole header.
    let magic_len = src.len().min(MAGIC.len());
    if src[..magic_len] != MAGIC[..magic_len] {
        let mut found = [0u8; 4];
        found[..magic_len].copy_from_slice(&src[..magic_len]);
        return Err(FrameError::BadMagic { found });
    }
    let Some(header_bytes) = src.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(header_bytes);
    let raw = RawHeader::parse(&header)?;
    if raw.version != VERSION {
        return Err(FrameError::UnsupportedVersion { found: raw.version });
    }
    let kind = Kind::from_wire(raw.kind & !RESPONSE_BIT).ok_or(FrameError::UnknownKind {
        found: raw.kind,
        request_id: raw.request_id,
    })?;
    let status = Status::from_wire(raw.status).ok_or(FrameError::BadStatus {
        kind,
        found: raw.status,
        request_id: raw.request_id,
    })?;
    let mut frame = Frame {
        kind,
        response: raw.kind & RESPONSE_BIT != 0,
        flags: Flags(raw.flags),
        request_id: raw.request_id,
        offset: raw.offset,
        length: raw.length,
        status,
        payload: Bytes::new(),
    };
    let payload_len = u64::from(raw.payload_len);
    check_header(&frame, payload_len)?;
    // `check_header` bounded the payload by MAX_PAYLOAD, so this cannot overflow and the
    // reservation below is at most one maximal frame.
    let total = HEADER_LEN + raw.payload_len as usize;
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    frame.payload = src.split_to(raw.payload_len as usize).freeze();
    let computed = payload_crc(&frame.payload);
    if computed != raw.payload_crc {
        return Err(FrameError::PayloadCrc {
            kind,
            request_id: frame.request_id,
            offset: frame.offset,
            stored: raw.payload_crc,
            computed,
        });
    }
    frame.validate()?;
    Ok(Some(frame))
}
