//! The rules a frame must keep, applied alike when one is encoded and when one is
//! decoded: lengths against the protocol limits, error messages, extent lists, and the
//! payload checksum.

use shorthorn_block::Extent;

use super::{
    Flags, Frame, FrameError, Kind, MAX_ERROR_MESSAGE, MAX_EXTENTS, MAX_PAYLOAD, MAX_RANGE_LEN,
    Status,
};

pub(super) fn payload_crc(payload: &[u8]) -> u32 {
    if payload.is_empty() {
        0
    } else {
        crc32c::crc32c(payload)
    }
}

pub(super) fn check_message(frame: &Frame, message: &[u8]) -> Result<(), FrameError> {
    if message.len() > MAX_ERROR_MESSAGE {
        return Err(frame.malformed(format!(
            "error message of {} bytes exceeds {MAX_ERROR_MESSAGE}",
            message.len()
        )));
    }
    if std::str::from_utf8(message).is_err() {
        return Err(frame.malformed("error message is not UTF-8".into()));
    }
    Ok(())
}

/// Checks that `extents` describe a prefix of `len` bytes at `offset`: sorted, gap-free,
/// starting at `offset`, no empty extent, none past the end, at least one when `len > 0`,
/// and at most [`MAX_EXTENTS`]. Returns what is wrong otherwise.
pub fn check_extents(offset: u64, len: u64, extents: &[Extent]) -> Result<(), String> {
    let end = offset
        .checked_add(len)
        .ok_or_else(|| format!("range {offset}+{len} overflows"))?;
    if extents.len() > MAX_EXTENTS as usize {
        return Err(format!(
            "{} extents exceed the limit of {MAX_EXTENTS}",
            extents.len()
        ));
    }
    if len > 0 && extents.is_empty() {
        return Err("no extents for a non-empty range".into());
    }
    let mut next = offset;
    for extent in extents {
        if extent.offset != next {
            return Err(format!(
                "extent at {} where {next} was expected (gap or overlap)",
                extent.offset
            ));
        }
        if extent.len == 0 {
            return Err(format!("empty extent at {}", extent.offset));
        }
        next = match extent.offset.checked_add(extent.len) {
            Some(e) if e <= end => e,
            _ => {
                return Err(format!(
                    "extent {}+{} reaches past the end of the range at {end}",
                    extent.offset, extent.len
                ));
            }
        };
    }
    Ok(())
}

/// The header rules of the format, given the payload length announced.
pub(super) fn check_header(frame: &Frame, payload_len: u64) -> Result<(), FrameError> {
    let Frame {
        kind,
        response,
        flags,
        request_id,
        offset,
        length,
        status,
        ..
    } = *frame;
    if payload_len > u64::from(MAX_PAYLOAD) {
        return Err(FrameError::PayloadTooLarge {
            kind,
            len: payload_len,
            limit: u64::from(MAX_PAYLOAD),
            request_id,
        });
    }
    let range_limit = match kind {
        Kind::Read | Kind::Write => u64::from(MAX_PAYLOAD),
        Kind::WriteZeroes | Kind::Trim | Kind::BlockStatus => MAX_RANGE_LEN,
        Kind::Flush | Kind::Ping | Kind::Info => 0,
    };
    // An Info reply's length is the device size, not a range.
    let is_info_reply = kind == Kind::Info && response;
    if !is_info_reply && length > range_limit {
        return Err(FrameError::RangeTooLarge {
            kind,
            offset,
            len: length,
            limit: range_limit,
            request_id,
        });
    }
    let malformed = |reason: String| FrameError::Malformed {
        kind,
        request_id,
        offset,
        reason,
    };
    if range_limit == 0 && offset != 0 {
        return Err(malformed(format!("{kind} must have offset 0")));
    }
    if response {
        if flags != Flags::NONE {
            return Err(FrameError::BadFlags {
                kind,
                flags: flags.0,
                request_id,
            });
        }
        match status {
            Status::Ok => {
                let expected = match kind {
                    Kind::Read => Some(length),
                    Kind::BlockStatus => None,
                    _ => Some(0),
                };
                if let Some(expected) = expected {
                    if payload_len != expected {
                        return Err(malformed(format!(
                            "successful reply needs a {expected}-byte payload, got {payload_len}"
                        )));
                    }
                }
                if kind == Kind::BlockStatus && payload_len < 4 {
                    return Err(malformed(
                        "block-status reply shorter than its count".into(),
                    ));
                }
            }
            _ => {
                let limit = MAX_ERROR_MESSAGE as u64 + 8;
                if payload_len > limit {
                    return Err(FrameError::PayloadTooLarge {
                        kind,
                        len: payload_len,
                        limit,
                        request_id,
                    });
                }
            }
        }
    } else {
        if flags.0 & !kind.allowed_flags() != 0 {
            return Err(FrameError::BadFlags {
                kind,
                flags: flags.0,
                request_id,
            });
        }
        if status != Status::Ok {
            return Err(FrameError::BadStatus {
                kind,
                found: status as u32,
                request_id,
            });
        }
        let expected = if kind == Kind::Write { length } else { 0 };
        if payload_len != expected {
            return Err(malformed(format!(
                "request needs a {expected}-byte payload, got {payload_len}"
            )));
        }
    }
    Ok(())
}
