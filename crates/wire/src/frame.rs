//! The frame format: a fixed 48-byte little-endian header followed by a payload.
//!
//! Both directions use the same header. Decoding is strict: every field value that
//! version 1 does not define is rejected with a typed [`FrameError`], lengths are checked
//! against the protocol limits before anything is allocated for them, and both the header
//! and the payload are covered by CRC32C so a flipped bit never turns into a wrong read or
//! a write to the wrong offset. The byte-level specification is `docs/wire-protocol.md`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use shorthorn_block::{BlockError, Extent, ExtentKind, WriteFlags, ZeroMode};

mod checks;
mod codec;

pub use checks::check_extents;
use checks::{check_header, check_message, payload_crc};
pub use codec::{FrameCodec, decode_frame};

/// The first four bytes of every frame: ASCII `SHWR`, i.e. `0x5257_4853` read as a
/// little-endian `u32`. Lets a peer that is not speaking this protocol fail at once.
pub const MAGIC: [u8; 4] = *b"SHWR";

/// The protocol version this crate speaks. A frame with any other version is rejected,
/// so incompatible peers fail loudly on their first request instead of misreading data.
pub const VERSION: u8 = 1;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 48;

/// Largest payload a frame may carry (32 MiB). Bounds the memory one frame can make a peer
/// allocate; reads and writes larger than this are split by the client.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Largest range (4 GiB) a WriteZeroes, Trim or BlockStatus request may name. Keeps one
/// request's work bounded and guarantees that the extents of a range tracked at 4 KiB
/// granularity fit in one block-status reply. The client splits larger ranges.
pub const MAX_RANGE_LEN: u64 = 1 << 32;

/// Longest error message (64 KiB) carried by an error reply; servers truncate longer ones.
pub const MAX_ERROR_MESSAGE: usize = 64 << 10;

/// Size of one extent record in a block-status reply: offset u64, length u64, kind u32.
pub const EXTENT_RECORD_LEN: u32 = 20;

/// Most extents one block-status reply may carry, so that the reply fits [`MAX_PAYLOAD`].
/// A server whose device reports more answers with a prefix of the range.
pub const MAX_EXTENTS: u32 = (MAX_PAYLOAD - 4) / EXTENT_RECORD_LEN;

/// Bit set in `kind` for a reply; the low seven bits repeat the request's kind.
pub const RESPONSE_BIT: u8 = 0x80;

/// Offsets of the header fields, shared by the encoder, the decoder and the docs.
mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const FLAGS: usize = 6;
    pub const REQUEST_ID: usize = 8;
    pub const OFFSET: usize = 16;
    pub const LENGTH: usize = 24;
    pub const PAYLOAD_LEN: usize = 32;
    pub const STATUS: usize = 36;
    pub const PAYLOAD_CRC: usize = 40;
    pub const HEADER_CRC: usize = 44;
}

/// What a frame asks for (or, with [`RESPONSE_BIT`], answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Read `length` bytes at `offset`; the reply carries the data.
    Read = 1,
    /// Write the payload at `offset`.
    Write = 2,
    /// Make every acknowledged write durable.
    Flush = 3,
    /// Make `length` bytes at `offset` read as zeros.
    WriteZeroes = 4,
    /// Discard `length` bytes at `offset`.
    Trim = 5,
    /// Describe `length` bytes at `offset` as data and zero extents.
    BlockStatus = 6,
    /// Liveness probe, answered without touching the device.
    Ping = 7,
    /// Ask for the device size (the reply's `length`); the client's handshake.
    Info = 8,
}

impl Kind {
    /// Every kind, in wire order; handy for exhaustive tests.
    pub const ALL: [Kind; 8] = [
        Kind::Read,
        Kind::Write,
        Kind::Flush,
        Kind::WriteZeroes,
        Kind::Trim,
        Kind::BlockStatus,
        Kind::Ping,
        Kind::Info,
    ];

    /// The kind with wire value `value` (without the response bit), if version 1 has one.
    pub fn from_wire(value: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == value)
    }

    /// Lower-case name used in logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Flush => "flush",
            Kind::WriteZeroes => "write-zeroes",
            Kind::Trim => "trim",
            Kind::BlockStatus => "block-status",
            Kind::Ping => "ping",
            Kind::Info => "info",
        }
    }

    /// Flags a request of this kind may carry; anything else is a format error.
    fn allowed_flags(self) -> u16 {
        match self {
            Kind::Write => Flags::FUA.0,
            Kind::WriteZeroes => Flags::FUA.0 | Flags::NO_HOLE.0,
            _ => 0,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Request flags (a `u16` bit set). Replies always carry zero flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// Force unit access: the data is durable before the reply (Write, WriteZeroes).
    pub const FUA: Flags = Flags(1);
    /// The zeroed range must stay allocated (WriteZeroes only), see [`ZeroMode::Allocate`].
    pub const NO_HOLE: Flags = Flags(2);

    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// The outcome carried by a reply. Non-zero codes map one-to-one to [`BlockError`]
/// variants so the client can hand the engine the same error the replica's device raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// Success (and the only status a request may carry).
    Ok = 0,
    /// [`BlockError::OutOfRange`]; the payload starts with the device size (u64).
    OutOfRange = 1,
    /// [`BlockError::InvalidArgument`].
    InvalidArgument = 2,
    /// [`BlockError::NoSpace`].
    NoSpace = 3,
    /// [`BlockError::ReadOnly`].
    ReadOnly = 4,
    /// [`BlockError::Io`].
    Io = 5,
}

impl Status {
    /// Every status, in wire order.
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::OutOfRange,
        Status::InvalidArgument,
        Status::NoSpace,
        Status::ReadOnly,
        Status::Io,
    ];

    /// The status with wire value `value`, if version 1 defines one.
    pub fn from_wire(value: u32) -> Option<Status> {
        Status::ALL.into_iter().find(|s| *s as u32 == value)
    }

    /// The status that reports `error`.
    pub fn of(error: &BlockError) -> Status {
        match error {
            BlockError::OutOfRange { .. } => Status::OutOfRange,
            BlockError::InvalidArgument(_) => Status::InvalidArgument,
            BlockError::NoSpace(_) => Status::NoSpace,
            BlockError::ReadOnly(_) => Status::ReadOnly,
            BlockError::Io(_) => Status::Io,
        }
    }
}

/// Why bytes received from a peer are not a valid frame. Any of these means the stream
/// can no longer be trusted (framing may be lost), so the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame does not start with [`MAGIC`]: the peer speaks another protocol or the
    /// stream lost framing.
    #[error("bad magic {found:02x?} (expected \"SHWR\")")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The header's CRC32C does not match its contents.
    #[error("header checksum mismatch: header says {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum computed over the received header bytes.
        computed: u32,
    },
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {found} (this side speaks {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// The kind byte names no kind of version 1.
    #[error("unknown kind {found:#04x} in request {request_id}")]
    UnknownKind {
        /// The kind byte (response bit included).
        found: u8,
        /// Request id of the frame.
        request_id: u64,
    },
    /// Flags that the frame's kind may not carry.
    #[error("flags {flags:#06x} are not allowed on {kind} request {request_id}")]
    BadFlags {
        /// Kind of the frame.
        kind: Kind,
        /// The flags found.
        flags: u16,
        /// Request id of the frame.
        request_id: u64,
    },
    /// The status field holds no status of version 1, or a request carries a status.
    #[error("bad status {found} on {kind} frame {request_id}")]
    BadStatus {
        /// Kind of the frame.
        kind: Kind,
        /// The status value found.
        found: u32,
        /// Request id of the frame.
        request_id: u64,
    },
    /// The payload is larger than the protocol allows.
    #[error("{kind} frame {request_id} has a {len}-byte payload (limit {limit})")]
    PayloadTooLarge {
        /// Kind of the frame.
        kind: Kind,
        /// Payload length the header announced.
        len: u64,
        /// The limit that applies.
        limit: u64,
        /// Request id of the frame.
        request_id: u64,
    },
    /// The request names a range longer than the protocol allows.
    #[error("{kind} request {request_id} at offset {offset} names {len} bytes (limit {limit})")]
    RangeTooLarge {
        /// Kind of the frame.
        kind: Kind,
        /// First byte of the range.
        offset: u64,
        /// Length the header announced.
        len: u64,
        /// The limit that applies.
        limit: u64,
        /// Request id of the frame.
        request_id: u64,
    },
    /// Header fields that contradict each other or the rules for the frame's kind.
    #[error("malformed {kind} frame {request_id} at offset {offset}: {reason}")]
    Malformed {
        /// Kind of the frame.
        kind: Kind,
        /// Request id of the frame.
        request_id: u64,
        /// Offset field of the frame.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The payload's CRC32C does not match the header.
    #[error(
        "payload checksum mismatch in {kind} frame {request_id} at offset {offset}: \
         header says {stored:#010x}, computed {computed:#010x}"
    )]
    PayloadCrc {
        /// Kind of the frame.
        kind: Kind,
        /// Request id of the frame.
        request_id: u64,
        /// Offset field of the frame.
        offset: u64,
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum computed over the received payload.
        computed: u32,
    },
    /// Reading or writing the stream failed (only produced through the codec traits).
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// The header exactly as it is on the wire, without any validation. [`Frame`] is the
/// validated form; this type exists so tests and tools can build deliberately bad frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    /// Bytes 0..4, [`MAGIC`] in a valid frame.
    pub magic: [u8; 4],
    /// Byte 4, [`VERSION`].
    pub version: u8,
    /// Byte 5, a [`Kind`], with [`RESPONSE_BIT`] on replies.
    pub kind: u8,
    /// Bytes 6..8, [`Flags`].
    pub flags: u16,
    /// Bytes 8..16, chosen by the client, echoed by the reply.
    pub request_id: u64,
    /// Bytes 16..24, first byte of the request's range.
    pub offset: u64,
    /// Bytes 24..32, length of the request's range.
    pub length: u64,
    /// Bytes 32..36, payload length.
    pub payload_len: u32,
    /// Bytes 36..40, a [`Status`].
    pub status: u32,
    /// Bytes 40..44, CRC32C of the payload (0 for an empty payload).
    pub payload_crc: u32,
}

impl RawHeader {
    /// Serializes the header, appending the CRC32C of bytes 0..44 as bytes 44..48.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[field::MAGIC..field::VERSION].copy_from_slice(&self.magic);
        out[field::VERSION] = self.version;
        out[field::KIND] = self.kind;
        out[field::FLAGS..field::REQUEST_ID].copy_from_slice(&self.flags.to_le_bytes());
        out[field::REQUEST_ID..field::OFFSET].copy_from_slice(&self.request_id.to_le_bytes());
        out[field::OFFSET..field::LENGTH].copy_from_slice(&self.offset.to_le_bytes());
        out[field::LENGTH..field::PAYLOAD_LEN].copy_from_slice(&self.length.to_le_bytes());
        out[field::PAYLOAD_LEN..field::STATUS].copy_from_slice(&self.payload_len.to_le_bytes());
        out[field::STATUS..field::PAYLOAD_CRC].copy_from_slice(&self.status.to_le_bytes());
        out[field::PAYLOAD_CRC..field::HEADER_CRC].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&out[..field::HEADER_CRC]);
        out[field::HEADER_CRC..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a header, checking only the magic and the header checksum (in that order,
    /// so garbage is reported as a bad magic, not as a checksum error).
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<RawHeader, FrameError> {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&bytes[field::MAGIC..field::VERSION]);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        let mut rest = &bytes[field::FLAGS..];
        let flags = rest.get_u16_le();
        let request_id = rest.get_u64_le();
        let offset = rest.get_u64_le();
        let length = rest.get_u64_le();
        let payload_len = rest.get_u32_le();
        let status = rest.get_u32_le();
        let payload_crc = rest.get_u32_le();
        let stored = rest.get_u32_le();
        let computed = crc32c::crc32c(&bytes[..field::HEADER_CRC]);
        if stored != computed {
            return Err(FrameError::HeaderCrc { stored, computed });
        }
        Ok(RawHeader {
            magic,
            version: bytes[field::VERSION],
            kind: bytes[field::KIND],
            flags,
            request_id,
            offset,
            length,
            payload_len,
            status,
            payload_crc,
        })
    }
}

/// One validated frame: a request, or a reply to one.
///
/// Field meanings per kind are in `docs/wire-protocol.md`. A `Frame` that came out of
/// [`FrameCodec`] satisfies every rule of the format, so its payload can be interpreted
/// ([`Frame::extents`], [`Frame::error`]) without further checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame asks for or answers.
    pub kind: Kind,
    /// Whether this is a reply.
    pub response: bool,
    /// Request flags (zero on replies).
    pub flags: Flags,
    /// Chosen by the client, unique among its in-flight requests on the connection;
    /// echoed by the reply so replies can arrive in any order.
    pub request_id: u64,
    /// First byte of the request's range (echoed by the reply).
    pub offset: u64,
    /// Length of the request's range (echoed by the reply, except that an Info reply
    /// carries the device size here).
    pub length: u64,
    /// Outcome of a reply; always [`Status::Ok`] on requests.
    pub status: Status,
    /// Write data, read data, block-status records or an error message.
    pub payload: Bytes,
}

/// A request, as the client builds it and the server dispatches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read `len` bytes at `offset`.
    Read {
        /// First byte.
        offset: u64,
        /// Byte count, at most [`MAX_PAYLOAD`].
        len: u64,
    },
    /// Write `data` at `offset`.
    Write {
        /// First byte.
        offset: u64,
        /// The data, at most [`MAX_PAYLOAD`] bytes.
        data: Bytes,
        /// Durability requested for this write.
        flags: WriteFlags,
    },
    /// Make every acknowledged write durable.
    Flush,
    /// Make `len` bytes at `offset` read as zeros.
    WriteZeroes {
        /// First byte.
        offset: u64,
        /// Byte count, at most [`MAX_RANGE_LEN`].
        len: u64,
        /// Whether space may be freed.
        mode: ZeroMode,
        /// Durability requested.
        flags: WriteFlags,
    },
    /// Discard `len` bytes at `offset`.
    Trim {
        /// First byte.
        offset: u64,
        /// Byte count, at most [`MAX_RANGE_LEN`].
        len: u64,
    },
    /// Describe `len` bytes at `offset`.
    BlockStatus {
        /// First byte.
        offset: u64,
        /// Byte count, at most [`MAX_RANGE_LEN`].
        len: u64,
    },
    /// Liveness probe.
    Ping,
    /// Ask for the device size.
    Info,
}

impl Request {
    /// The kind of frame that carries this request.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Read { .. } => Kind::Read,
            Request::Write { .. } => Kind::Write,
            Request::Flush => Kind::Flush,
            Request::WriteZeroes { .. } => Kind::WriteZeroes,
            Request::Trim { .. } => Kind::Trim,
            Request::BlockStatus { .. } => Kind::BlockStatus,
            Request::Ping => Kind::Ping,
            Request::Info => Kind::Info,
        }
    }

    /// The byte range the request names (zero for requests without one).
    pub fn range(&self) -> (u64, u64) {
        match self {
            Request::Read { offset, len }
            | Request::WriteZeroes { offset, len, .. }
            | Request::Trim { offset, len }
            | Request::BlockStatus { offset, len } => (*offset, *len),
            Request::Write { offset, data, .. } => (*offset, data.len() as u64),
            Request::Flush | Request::Ping | Request::Info => (0, 0),
        }
    }

    /// The frame carrying this request with id `request_id`.
    pub fn into_frame(self, request_id: u64) -> Frame {
        let kind = self.kind();
        let (offset, length) = self.range();
        let (flags, payload) = match self {
            Request::Write { data, flags, .. } => (fua(flags), data),
            Request::WriteZeroes { mode, flags, .. } => {
                let no_hole = match mode {
                    ZeroMode::Allocate => Flags::NO_HOLE,
                    ZeroMode::MayUnmap => Flags::NONE,
                };
                (fua(flags) | no_hole, Bytes::new())
            }
            _ => (Flags::NONE, Bytes::new()),
        };
        Frame {
            kind,
            response: false,
            flags,
            request_id,
            offset,
            length,
            status: Status::Ok,
            payload,
        }
    }

    /// The request a (validated) request frame carries.
    pub fn from_frame(frame: Frame) -> Result<Request, FrameError> {
        if frame.response {
            return Err(frame.malformed("expected a request, got a reply".into()));
        }
        let Frame {
            kind,
            flags,
            offset,
            length: len,
            payload,
            ..
        } = frame;
        let write_flags = WriteFlags {
            fua: flags.contains(Flags::FUA),
        };
        Ok(match kind {
            Kind::Read => Request::Read { offset, len },
            Kind::Write => Request::Write {
                offset,
                data: payload,
                flags: write_flags,
            },
            Kind::Flush => Request::Flush,
            Kind::WriteZeroes => Request::WriteZeroes {
                offset,
                len,
                mode: if flags.contains(Flags::NO_HOLE) {
                    ZeroMode::Allocate
                } else {
                    ZeroMode::MayUnmap
                },
                flags: write_flags,
            },
            Kind::Trim => Request::Trim { offset, len },
            Kind::BlockStatus => Request::BlockStatus { offset, len },
            Kind::Ping => Request::Ping,
            Kind::Info => Request::Info,
        })
    }
}

fn fua(flags: WriteFlags) -> Flags {
    if flags.fua { Flags::FUA } else { Flags::NONE }
}

impl Frame {
    /// A successful reply to `request` carrying `payload` (read data, or nothing).
    pub fn ok_reply(request: &Frame, payload: Bytes) -> Frame {
        Frame {
            kind: request.kind,
            response: true,
            flags: Flags::NONE,
            request_id: request.request_id,
            offset: request.offset,
            length: request.length,
            status: Status::Ok,
            payload,
        }
    }

    /// The successful reply to an Info request: the device size travels in `length`.
    pub fn info_reply(request: &Frame, size: u64) -> Frame {
        Frame {
            length: size,
            ..Frame::ok_reply(request, Bytes::new())
        }
    }

    /// The successful reply to a BlockStatus request. `extents` must be a valid prefix
    /// description of the request's range (see [`check_extents`]) of at most
    /// [`MAX_EXTENTS`] records.
    pub fn block_status_reply(request: &Frame, extents: &[Extent]) -> Frame {
        let mut payload = BytesMut::with_capacity(4 + extents.len() * EXTENT_RECORD_LEN as usize);
        payload.put_u32_le(u32::try_from(extents.len()).unwrap_or(u32::MAX));
        for extent in extents {
            payload.put_u64_le(extent.offset);
            payload.put_u64_le(extent.len);
            payload.put_u32_le(match extent.kind {
                ExtentKind::Data => 0,
                ExtentKind::Zero => 1,
            });
        }
        Frame::ok_reply(request, payload.freeze())
    }

    /// The error reply to `request` reporting `error`. The message is cut (at a character
    /// boundary) to [`MAX_ERROR_MESSAGE`] bytes.
    pub fn error_reply(request: &Frame, error: &BlockError) -> Frame {
        let status = Status::of(error);
        let (size, message) = match error {
            BlockError::OutOfRange { size, .. } => (Some(*size), error.to_string()),
            BlockError::InvalidArgument(m)
            | BlockError::NoSpace(m)
            | BlockError::ReadOnly(m)
            | BlockError::Io(m) => (None, m.clone()),
        };
        let mut cut = message.len().min(MAX_ERROR_MESSAGE);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = BytesMut::with_capacity(8 + cut);
        if let Some(size) = size {
            payload.put_u64_le(size);
        }
        payload.put_slice(&message.as_bytes()[..cut]);
        Frame {
            kind: request.kind,
            response: true,
            flags: Flags::NONE,
            request_id: request.request_id,
            offset: request.offset,
            length: request.length,
            status,
            payload: payload.freeze(),
        }
    }

    /// For an error reply, the device's error, with `context` (who answered, which
    /// request) put in front of its message. `None` for successful replies.
    pub fn error(&self, context: &str) -> Option<BlockError> {
        let (offset, len) = (self.offset, self.length);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Some(match self.status {
            Status::Ok => return None,
            Status::OutOfRange => {
                let mut payload = &self.payload[..];
                let size = if payload.len() >= 8 {
                    payload.get_u64_le()
                } else {
                    0
                };
                BlockError::OutOfRange { offset, len, size }
            }
            Status::InvalidArgument => {
                BlockError::InvalidArgument(format!("{context}: {}", text(&self.payload)))
            }
            Status::NoSpace => BlockError::NoSpace(format!("{context}: {}", text(&self.payload))),
            Status::ReadOnly => BlockError::ReadOnly(format!("{context}: {}", text(&self.payload))),
            Status::Io => BlockError::Io(format!("{context}: {}", text(&self.payload))),
        })
    }

    /// The extents of a successful BlockStatus reply.
    pub fn extents(&self) -> Result<Vec<Extent>, FrameError> {
        if self.kind != Kind::BlockStatus || !self.response || self.status != Status::Ok {
            return Err(self.malformed("not a successful block-status reply".into()));
        }
        let mut payload = &self.payload[..];
        if payload.len() < 4 {
            return Err(self.malformed("block-status payload shorter than its count".into()));
        }
        let count = payload.get_u32_le();
        if count > MAX_EXTENTS {
            return Err(
                self.malformed(format!("{count} extents exceed the limit of {MAX_EXTENTS}"))
            );
        }
        if payload.len() != count as usize * EXTENT_RECORD_LEN as usize {
            return Err(self.malformed(format!(
                "{count} extents need {} payload bytes, got {}",
                4 + count as usize * EXTENT_RECORD_LEN as usize,
                self.payload.len()
            )));
        }
        let mut extents = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let offset = payload.get_u64_le();
            let len = payload.get_u64_le();
            let kind = match payload.get_u32_le() {
                0 => ExtentKind::Data,
                1 => ExtentKind::Zero,
                other => {
                    return Err(self.malformed(format!("unknown extent kind {other}")));
                }
            };
            extents.push(Extent { offset, len, kind });
        }
        check_extents(self.offset, self.length, &extents)
            .map_err(|reason| self.malformed(reason))?;
        Ok(extents)
    }

    fn malformed(&self, reason: String) -> FrameError {
        FrameError::Malformed {
            kind: self.kind,
            request_id: self.request_id,
            offset: self.offset,
            reason,
        }
    }

    /// The wire header of this frame (checksums included).
    pub fn raw_header(&self) -> RawHeader {
        RawHeader {
            magic: MAGIC,
            version: VERSION,
            kind: self.kind as u8 | if self.response { RESPONSE_BIT } else { 0 },
            flags: self.flags.0,
            request_id: self.request_id,
            offset: self.offset,
            length: self.length,
            payload_len: u32::try_from(self.payload.len()).unwrap_or(u32::MAX),
            status: self.status as u32,
            payload_crc: payload_crc(&self.payload),
        }
    }

    /// Checks every rule of the format that involves the header (kind, flags, status,
    /// lengths); the same rules the decoder applies, so nothing invalid is ever sent.
    pub fn validate(&self) -> Result<(), FrameError> {
        check_header(self, self.payload.len() as u64)?;
        // The payload's own structure: extents and error messages.
        if self.response {
            match self.status {
                Status::Ok if self.kind == Kind::BlockStatus => {
                    self.extents()?;
                }
                Status::Ok => {}
                Status::OutOfRange => {
                    if self.payload.len() < 8 {
                        return Err(self
                            .malformed("out-of-range reply shorter than its device size".into()));
                    }
                    check_message(self, &self.payload[8..])?;
                }
                _ => check_message(self, &self.payload)?,
            }
        }
        Ok(())
    }

    /// Appends the encoded frame to `dst`, after checking it with [`Frame::validate`].
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.validate()?;
        dst.reserve(HEADER_LEN + self.payload.len());
        dst.put_slice(&self.raw_header().to_bytes());
        dst.put_slice(&self.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
