//! Wire constants of the NBD protocol and the pure encoders/decoders of its messages.
//!
//! Everything here follows `doc/proto.md` of the NetworkBlockDevice/nbd project. All
//! integers on the wire are big-endian. Nothing in this module does I/O, so every message
//! format is unit-tested on byte buffers.

use bytes::{BufMut, Bytes, BytesMut};

// ---------------------------------------------------------------------------------------
// Magic numbers
// ---------------------------------------------------------------------------------------

/// `NBDMAGIC`: first eight bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second eight bytes of a newstyle greeting, and the start of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic that starts every option reply in fixed newstyle negotiation.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// `NBD_REQUEST_MAGIC`: starts every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC`: starts every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`: starts every structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// ---------------------------------------------------------------------------------------
// Handshake flags
// ---------------------------------------------------------------------------------------

/// Server handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Server handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the client does not want the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;
/// Every client flag this server understands; any other bit closes the connection.
pub const KNOWN_CLIENT_FLAGS: u32 = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

// ---------------------------------------------------------------------------------------
// Transmission flags
// ---------------------------------------------------------------------------------------

/// Always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// The export is read-only.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// The export behaves like a rotational medium (never set by this server).
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
/// `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// `NBD_CMD_WRITE_ZEROES` and `NBD_CMD_FLAG_NO_HOLE` are supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// `NBD_CMD_FLAG_DF` is supported on reads (only with structured replies).
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Flushes are visible across every connection to the export.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// `NBD_CMD_CACHE` is supported (never set by this server).
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
/// `NBD_CMD_FLAG_FAST_ZERO` is supported (never set by this server).
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

/// Choose an export and enter transmission (no way to report errors).
pub const OPT_EXPORT_NAME: u32 = 1;
/// End negotiation.
pub const OPT_ABORT: u32 = 2;
/// List exports.
pub const OPT_LIST: u32 = 3;
/// Upgrade to TLS (not supported).
pub const OPT_STARTTLS: u32 = 5;
/// Describe an export.
pub const OPT_INFO: u32 = 6;
/// Describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Use structured replies in transmission.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// List metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Select metadata contexts for `NBD_CMD_BLOCK_STATUS`.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// 64-bit extended headers (not supported).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// The option was accepted / the list is complete.
pub const REP_ACK: u32 = 1;
/// One export of an `NBD_OPT_LIST` reply.
pub const REP_SERVER: u32 = 2;
/// One information item of an `NBD_OPT_INFO`/`NBD_OPT_GO` reply.
pub const REP_INFO: u32 = 3;
/// One metadata context.
pub const REP_META_CONTEXT: u32 = 4;
const REP_ERR: u32 = 1 << 31;
/// The option is not supported.
pub const REP_ERR_UNSUP: u32 = REP_ERR | 1;
/// The option is refused by policy.
pub const REP_ERR_POLICY: u32 = REP_ERR | 2;
/// The option data is malformed or the option is not valid now.
pub const REP_ERR_INVALID: u32 = REP_ERR | 3;
/// The option is not supported on this platform.
pub const REP_ERR_PLATFORM: u32 = REP_ERR | 4;
/// TLS is required first.
pub const REP_ERR_TLS_REQD: u32 = REP_ERR | 5;
/// The export does not exist.
pub const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
/// The server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_ERR | 7;
/// The client must ask for block size information first.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_ERR | 8;
/// The request or its reply is too large.
pub const REP_ERR_TOO_BIG: u32 = REP_ERR | 9;

/// Information item: export size and transmission flags (mandatory).
pub const INFO_EXPORT: u16 = 0;
/// Information item: canonical export name.
pub const INFO_NAME: u16 = 1;
/// Information item: human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information item: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

// ---------------------------------------------------------------------------------------
// Transmission
// ---------------------------------------------------------------------------------------

/// Read.
pub const CMD_READ: u16 = 0;
/// Write (followed by payload).
pub const CMD_WRITE: u16 = 1;
/// Disconnect.
pub const CMD_DISC: u16 = 2;
/// Flush.
pub const CMD_FLUSH: u16 = 3;
/// Trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Cache hint (not supported).
pub const CMD_CACHE: u16 = 5;
/// Write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Block status query.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Force unit access.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Write zeroes must not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Read reply must be one content chunk.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Block status wants one extent only.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Write zeroes must fail fast if it is slow (not supported).
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag: this is the last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Structured chunk: no payload, only useful as the final chunk.
pub const REPLY_TYPE_NONE: u16 = 0;
/// Structured chunk: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Structured chunk: a range that reads as zeros.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Structured chunk: block status descriptors for one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Structured chunk: an error with a message.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
/// Structured chunk: an error at an offset.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;

/// `base:allocation` flag: the extent is a hole.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: the extent reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

/// Operation not permitted (writes to a read-only export).
pub const EPERM: u32 = 1;
/// Input/output error.
pub const EIO: u32 = 5;
/// Out of memory (never sent by this server).
pub const ENOMEM: u32 = 12;
/// Invalid argument.
pub const EINVAL: u32 = 22;
/// No space left (writes past the end, a full device).
pub const ENOSPC: u32 = 28;
/// Value too large.
pub const EOVERFLOW: u32 = 75;
/// Operation not supported.
pub const ENOTSUP: u32 = 95;
/// Server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// The one metadata context this server knows.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The context id handed out for `base:allocation` by `NBD_OPT_SET_META_CONTEXT`.
pub const BASE_ALLOCATION_ID: u32 = 1;

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

/// Advertised minimum block size: any byte offset works.
pub const MIN_BLOCK_SIZE: u32 = 1;
/// Advertised preferred block size: the stores' allocation unit.
pub const PREFERRED_BLOCK_SIZE: u32 = 4096;
/// Advertised maximum block size, and the largest READ/WRITE payload accepted (32 MiB).
pub const MAX_BLOCK_SIZE: u32 = 32 << 20;
/// Largest option payload read; larger options get `NBD_REP_ERR_TOO_BIG`.
pub const MAX_OPTION_LEN: u32 = 64 << 10;
/// Largest string (export name, query, message) the protocol allows.
pub const MAX_STRING_LEN: usize = 4096;
/// Length of an option header (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of a transmission request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_HEADER_LEN: usize = 16;
/// Length of a structured reply chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;

/// A message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The magic number is wrong: the stream is out of sync or not NBD.
    #[error("bad magic {found:#x}, expected {expected:#x}")]
    BadMagic {
        /// What was received.
        found: u64,
        /// What the protocol requires.
        expected: u64,
    },
    /// The option payload does not have the layout the option requires.
    #[error("malformed option payload: {0}")]
    Malformed(String),
}

// ---------------------------------------------------------------------------------------
// Handshake messages
// ---------------------------------------------------------------------------------------

/// The server's first message: `NBDMAGIC`, `IHAVEOPT` and the handshake flags.
pub fn greeting(handshake_flags: u16) -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..].copy_from_slice(&handshake_flags.to_be_bytes());
    out
}

/// The header of one client option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code (`NBD_OPT_*`).
    pub option: u32,
    /// Length of the option payload that follows.
    pub len: u32,
}

/// Decodes an option header; the magic must be `IHAVEOPT`.
pub fn decode_option_header(buf: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, ProtoError> {
    let mut r = Reader::new(buf);
    let magic = r.u64().unwrap_or_default();
    if magic != IHAVEOPT {
        return Err(ProtoError::BadMagic {
            found: magic,
            expected: IHAVEOPT,
        });
    }
    Ok(OptionHeader {
        option: r.u32().unwrap_or_default(),
        len: r.u32().unwrap_or_default(),
    })
}

/// Encodes one option reply.
pub fn option_reply(option: u32, reply_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&len_u32(data.len()).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Encodes an error option reply whose payload is a human-readable message.
pub fn option_error(option: u32, reply_type: u32, message: &str) -> Vec<u8> {
    option_reply(option, reply_type, truncate_str(message).as_bytes())
}

/// Payload of an `NBD_REP_SERVER` reply: the name, then a description for humans.
pub fn rep_server_payload(name: &str, description: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len() + description.len());
    out.extend_from_slice(&len_u32(name.len()).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(truncate_str(description).as_bytes());
    out
}

/// Payload of `NBD_INFO_EXPORT`.
pub fn info_export_payload(size: u64, transmission_flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&transmission_flags.to_be_bytes());
    out
}

/// Payload of `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`.
pub fn info_string_payload(info: u16, text: &str) -> Vec<u8> {
    let text = truncate_str(text);
    let mut out = Vec::with_capacity(2 + text.len());
    out.extend_from_slice(&info.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// Payload of `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size_payload(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&minimum.to_be_bytes());
    out.extend_from_slice(&preferred.to_be_bytes());
    out.extend_from_slice(&maximum.to_be_bytes());
    out
}

/// Payload of `NBD_REP_META_CONTEXT`.
pub fn meta_context_payload(id: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, transmission flags and, unless the client
/// negotiated `NBD_FLAG_C_NO_ZEROES`, 124 zero bytes.
pub fn export_name_reply(size: u64, transmission_flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(134);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&transmission_flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
    out
}

/// A parsed `NBD_OPT_INFO` / `NBD_OPT_GO` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// The export name (empty for the default export).
    pub name: String,
    /// The information items the client asks for.
    pub requests: Vec<u16>,
}

/// Parses an `NBD_OPT_INFO` / `NBD_OPT_GO` payload: name length, name, request count,
/// requests. The payload must be consumed exactly.
pub fn parse_info_request(data: &[u8]) -> Result<InfoRequest, ProtoError> {
    let mut r = Reader::new(data);
    let name = r.string32("export name")?;
    let count = r
        .u16()
        .ok_or_else(|| malformed("missing information request count"))?;
    let mut requests = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        requests.push(
            r.u16()
                .ok_or_else(|| malformed("information request list is shorter than its count"))?,
        );
    }
    r.finish()?;
    Ok(InfoRequest { name, requests })
}

/// A parsed `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    /// The export name (empty for the default export).
    pub name: String,
    /// The queries, each `namespace:leaf`.
    pub queries: Vec<String>,
}

/// Parses a meta context option payload: name length, name, query count, then each
/// query as length and string. The payload must be consumed exactly.
pub fn parse_meta_context_request(data: &[u8]) -> Result<MetaContextRequest, ProtoError> {
    let mut r = Reader::new(data);
    let name = r.string32("export name")?;
    let count = r.u32().ok_or_else(|| malformed("missing query count"))?;
    let mut queries = Vec::new();
    for _ in 0..count {
        // Each query takes at least four bytes, so a lying count fails here quickly.
        queries.push(r.string32("query")?);
    }
    r.finish()?;
    Ok(MetaContextRequest { name, queries })
}

/// Which `base:` contexts a query names, per the spec's rules for the `base` namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMatch {
    /// The query selects `base:allocation`.
    BaseAllocation,
    /// The query selects nothing this server knows (unknown namespace or leaf).
    Nothing,
}

/// Matches one meta context query. `listing` is true for `NBD_OPT_LIST_META_CONTEXT`,
/// where `base:` is a wildcard; for `NBD_OPT_SET_META_CONTEXT` it selects nothing.
/// A query without a namespace (no colon) is invalid.
pub fn match_query(query: &str, listing: bool) -> Result<QueryMatch, ProtoError> {
    let Some((namespace, leaf)) = query.split_once(':') else {
        return Err(malformed(&format!(
            "query {query:?} does not start with a namespace and a colon"
        )));
    };
    if namespace != "base" {
        return Ok(QueryMatch::Nothing);
    }
    Ok(match leaf {
        "allocation" => QueryMatch::BaseAllocation,
        "" if listing => QueryMatch::BaseAllocation,
        _ => QueryMatch::Nothing,
    })
}

// ---------------------------------------------------------------------------------------
// Transmission messages
// ---------------------------------------------------------------------------------------

/// A decoded request header (the payload of a write follows it on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`NBD_CMD_*`).
    pub kind: u16,
    /// Opaque handle echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Decodes a request header; the magic must be `NBD_REQUEST_MAGIC`.
pub fn decode_request(buf: &[u8; REQUEST_HEADER_LEN]) -> Result<Request, ProtoError> {
    let mut r = Reader::new(buf);
    let magic = r.u32().unwrap_or_default();
    if magic != REQUEST_MAGIC {
        return Err(ProtoError::BadMagic {
            found: u64::from(magic),
            expected: u64::from(REQUEST_MAGIC),
        });
    }
    Ok(Request {
        flags: r.u16().unwrap_or_default(),
        kind: r.u16().unwrap_or_default(),
        handle: r.u64().unwrap_or_default(),
        offset: r.u64().unwrap_or_default(),
        len: r.u32().unwrap_or_default(),
    })
}

/// Encodes a request header (used by tests and by clients written against this module).
pub fn encode_request(req: &Request) -> [u8; REQUEST_HEADER_LEN] {
    let mut out = [0u8; REQUEST_HEADER_LEN];
    out[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&req.flags.to_be_bytes());
    out[6..8].copy_from_slice(&req.kind.to_be_bytes());
    out[8..16].copy_from_slice(&req.handle.to_be_bytes());
    out[16..24].copy_from_slice(&req.offset.to_be_bytes());
    out[24..28].copy_from_slice(&req.len.to_be_bytes());
    out
}

/// The name of a command, for logs.
pub fn command_name(kind: u16) -> &'static str {
    match kind {
        CMD_READ => "READ",
        CMD_WRITE => "WRITE",
        CMD_DISC => "DISC",
        CMD_FLUSH => "FLUSH",
        CMD_TRIM => "TRIM",
        CMD_CACHE => "CACHE",
        CMD_WRITE_ZEROES => "WRITE_ZEROES",
        CMD_BLOCK_STATUS => "BLOCK_STATUS",
        _ => "UNKNOWN",
    }
}

/// A simple reply header (followed by the data of a successful simple-reply read).
pub fn simple_reply(error: u32, handle: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(SIMPLE_REPLY_HEADER_LEN);
    out.put_u32(SIMPLE_REPLY_MAGIC);
    out.put_u32(error);
    out.put_u64(handle);
    out.freeze()
}

fn chunk_header(out: &mut BytesMut, flags: u16, kind: u16, handle: u64, len: u32) {
    out.put_u32(STRUCTURED_REPLY_MAGIC);
    out.put_u16(flags);
    out.put_u16(kind);
    out.put_u64(handle);
    out.put_u32(len);
}

fn done_flag(done: bool) -> u16 {
    if done { REPLY_FLAG_DONE } else { 0 }
}

/// An `NBD_REPLY_TYPE_NONE` chunk, always final.
pub fn none_chunk(handle: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(CHUNK_HEADER_LEN);
    chunk_header(&mut out, REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, 0);
    out.freeze()
}

/// The header and offset of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk carrying `data_len`
/// bytes; the data itself follows as a separate buffer. `data_len` must be at most
/// `u32::MAX - 8` (reads are capped at [`MAX_BLOCK_SIZE`]).
pub fn offset_data_header(handle: u64, offset: u64, data_len: u32, done: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(CHUNK_HEADER_LEN + 8);
    chunk_header(
        &mut out,
        done_flag(done),
        REPLY_TYPE_OFFSET_DATA,
        handle,
        data_len.saturating_add(8),
    );
    out.put_u64(offset);
    out.freeze()
}

/// An `NBD_REPLY_TYPE_OFFSET_HOLE` chunk.
pub fn offset_hole_chunk(handle: u64, offset: u64, len: u32, done: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(CHUNK_HEADER_LEN + 12);
    chunk_header(
        &mut out,
        done_flag(done),
        REPLY_TYPE_OFFSET_HOLE,
        handle,
        12,
    );
    out.put_u64(offset);
    out.put_u32(len);
    out.freeze()
}

/// An `NBD_REPLY_TYPE_ERROR` chunk (final) with a human-readable message.
pub fn error_chunk(handle: u64, error: u32, message: &str) -> Bytes {
    let message = truncate_str(message);
    let msg_len = u16::try_from(message.len()).unwrap_or(u16::MAX);
    let mut out = BytesMut::with_capacity(CHUNK_HEADER_LEN + 6 + message.len());
    chunk_header(
        &mut out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        handle,
        6 + u32::from(msg_len),
    );
    out.put_u32(error);
    out.put_u16(msg_len);
    out.put_slice(&message.as_bytes()[..usize::from(msg_len)]);
    out.freeze()
}

/// One block status descriptor: length and `NBD_STATE_*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Length of the extent (never zero).
    pub len: u32,
    /// Status flags.
    pub flags: u32,
}

/// An `NBD_REPLY_TYPE_BLOCK_STATUS` chunk (final) for one metadata context.
pub fn block_status_chunk(handle: u64, context_id: u32, descriptors: &[Descriptor]) -> Bytes {
    let payload_len = 4 + 8 * descriptors.len();
    let mut out = BytesMut::with_capacity(CHUNK_HEADER_LEN + payload_len);
    chunk_header(
        &mut out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        handle,
        len_u32(payload_len),
    );
    out.put_u32(context_id);
    for d in descriptors {
        out.put_u32(d.len);
        out.put_u32(d.flags);
    }
    out.freeze()
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Truncates `s` to at most [`MAX_STRING_LEN`] bytes, on a character boundary.
pub fn truncate_str(s: &str) -> &str {
    if s.len() <= MAX_STRING_LEN {
        return s;
    }
    let mut end = MAX_STRING_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Converts an in-memory length to a wire `u32`, saturating (callers bound their lengths).
pub fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn malformed(reason: &str) -> ProtoError {
    ProtoError::Malformed(reason.to_owned())
}

/// A bounds-checked big-endian cursor over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }

    /// A string preceded by its 32-bit length: valid UTF-8, no NUL, at most
    /// [`MAX_STRING_LEN`] bytes.
    fn string32(&mut self, what: &str) -> Result<String, ProtoError> {
        let len = self
            .u32()
            .ok_or_else(|| malformed(&format!("missing {what} length")))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_STRING_LEN {
            return Err(malformed(&format!(
                "{what} is {len} bytes, more than the {MAX_STRING_LEN} allowed"
            )));
        }
        let bytes = self
            .take(len)
            .ok_or_else(|| malformed(&format!("{what} length {len} exceeds the option data")))?;
        let s = std::str::from_utf8(bytes)
            .map_err(|_| malformed(&format!("{what} is not valid UTF-8")))?;
        if s.contains('\0') {
            return Err(malformed(&format!("{what} contains a NUL byte")));
        }
        Ok(s.to_owned())
    }

    fn finish(&self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(&format!(
                "{} unexpected trailing bytes",
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(v: u32) -> [u8; 4] {
        v.to_be_bytes()
    }

    #[test]
    fn greeting_is_nbdmagic_ihaveopt_and_flags() {
        let g = greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn option_header_decodes_and_rejects_bad_magic() {
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(b"IHAVEOPT");
        buf[8..12].copy_from_slice(&be32(OPT_GO));
        buf[12..].copy_from_slice(&be32(77));
        assert_eq!(
            decode_option_header(&buf),
            Ok(OptionHeader {
                option: OPT_GO,
                len: 77
            })
        );
        buf[0] = b'X';
        assert!(matches!(
            decode_option_header(&buf),
            Err(ProtoError::BadMagic { .. })
        ));
    }

    #[test]
    fn option_reply_layout() {
        let r = option_reply(OPT_LIST, REP_SERVER, b"abc");
        assert_eq!(&r[..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&r[8..12], &be32(OPT_LIST));
        assert_eq!(&r[12..16], &be32(REP_SERVER));
        assert_eq!(&r[16..20], &be32(3));
        assert_eq!(&r[20..], b"abc");
        assert_eq!(REP_ERR_UNSUP, 0x8000_0001);
        assert_eq!(REP_ERR_TOO_BIG, 0x8000_0009);
    }

    #[test]
    fn export_name_reply_honours_no_zeroes() {
        let with = export_name_reply(1 << 20, FLAG_HAS_FLAGS, false);
        assert_eq!(with.len(), 8 + 2 + 124);
        let without = export_name_reply(1 << 20, FLAG_HAS_FLAGS, true);
        assert_eq!(without.len(), 10);
        assert_eq!(&without[..8], &(1u64 << 20).to_be_bytes());
        assert_eq!(&without[8..], &[0, 1]);
    }

    #[test]
    fn info_payloads_have_the_specified_lengths() {
        assert_eq!(info_export_payload(5, 1).len(), 12);
        assert_eq!(info_block_size_payload(1, 4096, MAX_BLOCK_SIZE).len(), 14);
        let name = info_string_payload(INFO_NAME, "vol");
        assert_eq!(name, [0, 1, b'v', b'o', b'l']);
        let long = "é".repeat(3000);
        let truncated = info_string_payload(INFO_DESCRIPTION, &long);
        assert!(truncated.len() <= 2 + MAX_STRING_LEN);
        assert!(std::str::from_utf8(&truncated[2..]).is_ok());
    }

    fn info_data(name: &[u8], requests: &[u16]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&be32(len_u32(name.len())));
        d.extend_from_slice(name);
        d.extend_from_slice(&u16::try_from(requests.len()).unwrap().to_be_bytes());
        for r in requests {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    #[test]
    fn info_request_parses_name_and_requests() {
        let d = info_data(b"vol", &[INFO_NAME, INFO_BLOCK_SIZE]);
        assert_eq!(
            parse_info_request(&d),
            Ok(InfoRequest {
                name: "vol".into(),
                requests: vec![INFO_NAME, INFO_BLOCK_SIZE]
            })
        );
        let empty = info_data(b"", &[]);
        assert_eq!(parse_info_request(&empty).unwrap().name, "");
    }

    #[test]
    fn info_request_rejects_malformed_payloads() {
        // Name length beyond the data.
        let mut d = info_data(b"vol", &[]);
        d[3] = 200;
        assert!(parse_info_request(&d).is_err());
        // Count larger than the list.
        let mut d = info_data(b"vol", &[INFO_NAME]);
        let count_at = 4 + 3;
        d[count_at + 1] = 5;
        assert!(parse_info_request(&d).is_err());
        // Trailing garbage.
        let mut d = info_data(b"vol", &[]);
        d.push(0);
        assert!(parse_info_request(&d).is_err());
        // Truncated, empty, invalid UTF-8, embedded NUL, huge length.
        assert!(parse_info_request(&[0, 0]).is_err());
        assert!(parse_info_request(&[]).is_err());
        assert!(parse_info_request(&info_data(&[0xff, 0xfe], &[])).is_err());
        assert!(parse_info_request(&info_data(b"a\0b", &[])).is_err());
        assert!(parse_info_request(&[0xff, 0xff, 0xff, 0xff, 0, 0]).is_err());
    }

    fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&be32(len_u32(name.len())));
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&be32(len_u32(queries.len())));
        for q in queries {
            d.extend_from_slice(&be32(len_u32(q.len())));
            d.extend_from_slice(q.as_bytes());
        }
        d
    }

    #[test]
    fn meta_context_request_parses_and_rejects_malformed() {
        let d = meta_data("vol", &["base:allocation", "qemu:dirty-bitmap:x"]);
        let req = parse_meta_context_request(&d).unwrap();
        assert_eq!(req.name, "vol");
        assert_eq!(req.queries, vec!["base:allocation", "qemu:dirty-bitmap:x"]);
        // A count that promises more queries than there are bytes.
        let mut d = meta_data("vol", &["base:allocation"]);
        d[4 + 3 + 3] = 9;
        assert!(parse_meta_context_request(&d).is_err());
        // A huge count with no data fails without allocating.
        let mut d = meta_data("", &[]);
        d[4..8].copy_from_slice(&be32(u32::MAX));
        assert!(parse_meta_context_request(&d).is_err());
        let mut d = meta_data("vol", &[]);
        d.push(1);
        assert!(parse_meta_context_request(&d).is_err());
    }

    #[test]
    fn queries_follow_the_base_namespace_rules() {
        assert_eq!(
            match_query("base:allocation", false),
            Ok(QueryMatch::BaseAllocation)
        );
        assert_eq!(match_query("base:", true), Ok(QueryMatch::BaseAllocation));
        assert_eq!(match_query("base:", false), Ok(QueryMatch::Nothing));
        assert_eq!(match_query("base:other", true), Ok(QueryMatch::Nothing));
        assert_eq!(
            match_query("qemu:dirty-bitmap:a", false),
            Ok(QueryMatch::Nothing)
        );
        assert!(match_query("allocation", false).is_err());
    }

    #[test]
    fn request_round_trips_and_bad_magic_is_rejected() {
        let req = Request {
            flags: CMD_FLAG_FUA,
            kind: CMD_WRITE,
            handle: 0xdead_beef_cafe_f00d,
            offset: 1 << 40,
            len: 4096,
        };
        let buf = encode_request(&req);
        assert_eq!(&buf[..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(decode_request(&buf), Ok(req));
        let mut bad = buf;
        bad[3] ^= 1;
        assert!(matches!(
            decode_request(&bad),
            Err(ProtoError::BadMagic { .. })
        ));
        let garbage = [0xffu8; REQUEST_HEADER_LEN];
        assert!(decode_request(&garbage).is_err());
    }

    #[test]
    fn simple_reply_layout() {
        let r = simple_reply(EINVAL, 7);
        assert_eq!(&r[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&r[4..8], &be32(22));
        assert_eq!(&r[8..], &7u64.to_be_bytes());
    }

    #[test]
    fn structured_chunks_layout() {
        let n = none_chunk(9);
        assert_eq!(n.len(), 20);
        assert_eq!(&n[..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&n[4..6], &REPLY_FLAG_DONE.to_be_bytes());
        assert_eq!(&n[6..8], &REPLY_TYPE_NONE.to_be_bytes());
        assert_eq!(&n[16..20], &be32(0));

        let d = offset_data_header(9, 4096, 512, false);
        assert_eq!(d.len(), 28);
        assert_eq!(&d[4..6], &[0, 0]);
        assert_eq!(&d[6..8], &REPLY_TYPE_OFFSET_DATA.to_be_bytes());
        assert_eq!(&d[16..20], &be32(520));
        assert_eq!(&d[20..], &4096u64.to_be_bytes());

        let h = offset_hole_chunk(9, 8192, 4096, true);
        assert_eq!(h.len(), 32);
        assert_eq!(&h[4..6], &[0, 1]);
        assert_eq!(&h[16..20], &be32(12));
        assert_eq!(&h[28..], &be32(4096));

        let e = error_chunk(9, EIO, "boom");
        assert_eq!(&e[6..8], &[0x80, 0x01]);
        assert_eq!(&e[16..20], &be32(10));
        assert_eq!(&e[20..24], &be32(EIO));
        assert_eq!(&e[24..26], &[0, 4]);
        assert_eq!(&e[26..], b"boom");
        let long = error_chunk(1, EIO, &"x".repeat(10_000));
        assert_eq!(long.len(), 20 + 6 + MAX_STRING_LEN);

        let b = block_status_chunk(
            9,
            BASE_ALLOCATION_ID,
            &[
                Descriptor {
                    len: 4096,
                    flags: 0,
                },
                Descriptor {
                    len: 8192,
                    flags: STATE_HOLE | STATE_ZERO,
                },
            ],
        );
        assert_eq!(&b[6..8], &REPLY_TYPE_BLOCK_STATUS.to_be_bytes());
        assert_eq!(&b[16..20], &be32(4 + 16));
        assert_eq!(&b[20..24], &be32(BASE_ALLOCATION_ID));
        assert_eq!(&b[24..28], &be32(4096));
        assert_eq!(&b[32..36], &be32(8192));
        assert_eq!(&b[36..40], &be32(3));
    }
}
