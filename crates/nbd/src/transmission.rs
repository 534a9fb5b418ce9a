//! The transmission phase: one reader loop decodes requests, each request runs as its own
//! task (bounded in number and in payload bytes), and one writer task sends the replies,
//! whole, in completion order.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use shorthorn_block::{
    BlockDevice, BlockError, BlockResult, Extent, ExtentKind, WriteFlags, ZeroMode,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::export::ServerConfig;
use crate::handshake::Negotiated;
use crate::proto::*;
use crate::reader::WireReader;

/// Reads at least this long are checked against block status so holes can be sent as
/// `NBD_REPLY_TYPE_OFFSET_HOLE` chunks instead of zero bytes.
const HOLE_DETECT_MIN: u32 = 64 << 10;
/// A sparse read with more extents than this is sent as one data chunk instead.
const MAX_READ_CHUNKS: usize = 64;
/// Most descriptors sent in one block status reply (the spec allows fewer than needed).
const MAX_DESCRIPTORS: usize = 1 << 16;
/// Size of the reply write buffer.
const WRITE_BUFFER: usize = 256 << 10;

/// How a transmission phase ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client sent `NBD_CMD_DISC`.
    Disconnect,
    /// The client closed the connection between requests.
    Eof,
    /// The client closed the connection in the middle of a request.
    Truncated,
    /// The client broke the protocol; the connection was closed.
    Protocol(String),
    /// The server is shutting down.
    Shutdown,
    /// Reading from the socket failed.
    Io(io::Error),
    /// The connection was dropped at once (reply write failure or a request task panic).
    Aborted(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Disconnect => write!(f, "client disconnected (NBD_CMD_DISC)"),
            End::Eof => write!(f, "client closed the connection"),
            End::Truncated => write!(f, "client closed the connection mid-request"),
            End::Protocol(reason) => write!(f, "protocol violation: {reason}"),
            End::Shutdown => write!(f, "server shutdown"),
            End::Io(e) => write!(f, "read error: {e}"),
            End::Aborted(reason) => write!(f, "aborted: {reason}"),
        }
    }
}

/// What a connection did, for the closing log line.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Requests received.
    pub requests: u64,
    /// How it ended.
    pub end: End,
}

/// Per-connection state shared by the request tasks.
struct Ctx<D> {
    device: Arc<D>,
    size: u64,
    structured: bool,
    base_allocation: Option<u32>,
    read_only: bool,
    sparse_reads: bool,
    peer: String,
}

/// A validated command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read { df: bool },
    Write { fua: bool },
    Flush,
    Trim { fua: bool },
    WriteZeroes { fua: bool, no_hole: bool },
    BlockStatus { req_one: bool, context_id: u32 },
}

/// Why a request is refused before it reaches the device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rejection {
    errno: u32,
    message: String,
}

fn reject(errno: u32, message: String) -> Rejection {
    Rejection { errno, message }
}

/// A complete reply and the permits it holds until it has been written.
struct Outgoing {
    parts: Vec<Bytes>,
    _permits: Option<Permits>,
}

struct Permits {
    _request: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

enum Waited<T> {
    Ready(T),
    Stop(End),
}

/// Serves requests until the client disconnects, breaks the protocol, or the server
/// shuts down; answers every request already read before returning.
#[allow(
    clippy::too_many_arguments,
    reason = "internal entry point, called once"
)]
pub(crate) async fn serve<R, W, D>(
    mut wire: WireReader<R>,
    writer: W,
    device: Arc<D>,
    read_only: bool,
    negotiated: &Negotiated,
    config: &ServerConfig,
    cancel: CancellationToken,
    peer: &str,
) -> Summary
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
    D: BlockDevice + 'static,
{
    let ctx = Arc::new(Ctx {
        device,
        size: negotiated.size,
        structured: negotiated.structured,
        base_allocation: negotiated.base_allocation,
        read_only,
        sparse_reads: config.sparse_reads,
        peer: peer.to_owned(),
    });
    let abort = CancellationToken::new();
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer_task = tokio::spawn(write_replies(writer, rx, abort.clone()));
    let request_slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let byte_budget = config.max_in_flight_bytes.max(MAX_BLOCK_SIZE);
    let byte_slots = Arc::new(Semaphore::new(
        usize::try_from(byte_budget).unwrap_or(usize::MAX),
    ));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut requests = 0u64;

    let end = loop {
        match wait(wire.fill(REQUEST_HEADER_LEN), &mut tasks, &cancel, &abort).await {
            Waited::Stop(end) => break end,
            Waited::Ready(Err(e)) => break End::Io(e),
            Waited::Ready(Ok(false)) if wire.buffered().is_empty() => break End::Eof,
            Waited::Ready(Ok(false)) => break End::Truncated,
            Waited::Ready(Ok(true)) => {}
        }
        let header = wire.take(REQUEST_HEADER_LEN);
        let Ok(header) = <[u8; REQUEST_HEADER_LEN]>::try_from(&header[..]) else {
            break End::Protocol("short request header".into());
        };
        let req = match decode_request(&header) {
            Ok(req) => req,
            Err(e) => break End::Protocol(format!("bad request: {e}")),
        };
        requests += 1;
        tracing::trace!(
            peer,
            cmd = command_name(req.kind),
            handle = req.handle,
            offset = req.offset,
            len = req.len,
            flags = req.flags,
            "request"
        );
        if req.kind == CMD_DISC {
            break End::Disconnect;
        }
        if req.kind == CMD_WRITE && req.len > MAX_BLOCK_SIZE {
            // The payload cannot be skipped cheaply: refuse, then close.
            let message = format!(
                "write of {} bytes exceeds the maximum of {MAX_BLOCK_SIZE}; closing the connection",
                req.len
            );
            tracing::warn!(peer, offset = req.offset, len = req.len, "{message}");
            let _ = tx.send(Outgoing {
                parts: error_reply(&ctx, &req, EINVAL, &message),
                _permits: None,
            });
            break End::Protocol(message);
        }
        let cost = match req.kind {
            CMD_READ => req.len.min(MAX_BLOCK_SIZE),
            CMD_WRITE => req.len,
            _ => 0,
        };
        let acquire = acquire(request_slots.clone(), byte_slots.clone(), cost);
        let permits = match wait(acquire, &mut tasks, &cancel, &abort).await {
            Waited::Stop(end) => break end,
            Waited::Ready(None) => break End::Aborted("request limiter closed".into()),
            Waited::Ready(Some(p)) => p,
        };
        let payload = if req.kind == CMD_WRITE {
            let len = usize::try_from(req.len).unwrap_or(usize::MAX);
            match wait(wire.fill(len), &mut tasks, &cancel, &abort).await {
                Waited::Stop(end) => break end,
                Waited::Ready(Err(e)) => break End::Io(e),
                Waited::Ready(Ok(false)) => break End::Truncated,
                Waited::Ready(Ok(true)) => Some(wire.take(len).freeze()),
            }
        } else {
            None
        };
        match validate(&ctx, &req) {
            Err(rejection) => {
                tracing::info!(
                    peer,
                    cmd = command_name(req.kind),
                    offset = req.offset,
                    len = req.len,
                    flags = req.flags,
                    errno = rejection.errno,
                    reason = %rejection.message,
                    "request rejected"
                );
                let _ = tx.send(Outgoing {
                    parts: error_reply(&ctx, &req, rejection.errno, &rejection.message),
                    _permits: Some(permits),
                });
            }
            Ok(op) => {
                let ctx = ctx.clone();
                let tx = tx.clone();
                tasks.spawn(async move {
                    let parts = execute(&ctx, &req, op, payload).await;
                    let _ = tx.send(Outgoing {
                        parts,
                        _permits: Some(permits),
                    });
                });
            }
        }
    };

    // Answer everything in flight, then let the writer flush and close.
    drop(tx);
    let drain = async {
        loop {
            let joined = tokio::select! {
                biased;
                joined = tasks.join_next() => joined,
                () = abort.cancelled() => {
                    // The connection is being dropped: no reply can be sent any more.
                    // Device calls still in flight run to completion on their own
                    // (they are not cancelled half-way).
                    tasks.detach_all();
                    break;
                }
            };
            match joined {
                None => break,
                Some(Err(e)) if e.is_panic() => {
                    tracing::error!(peer, error = %e, "request task panicked; dropping the connection");
                    abort.cancel();
                }
                Some(_) => {}
            }
        }
        writer_task.await
    };
    tokio::pin!(drain);
    let grace = async {
        cancel.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    let written = tokio::select! {
        r = &mut drain => r,
        () = grace => {
            tracing::warn!(peer, "in-flight requests outlived the shutdown grace period; dropping the connection");
            abort.cancel();
            drain.await
        }
    };
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::info!(peer, error = %e, "writing replies failed"),
        Err(e) => tracing::error!(peer, error = %e, "reply writer task failed"),
    }
    Summary { requests, end }
}

/// Awaits `fut` while reaping finished request tasks; stops early on shutdown or abort.
/// Safe to use with the cancel-safe [`WireReader::fill`] and semaphore acquisition.
async fn wait<T>(
    fut: impl Future<Output = T>,
    tasks: &mut JoinSet<()>,
    cancel: &CancellationToken,
    abort: &CancellationToken,
) -> Waited<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            () = abort.cancelled() => return Waited::Stop(End::Aborted("reply writer stopped".into())),
            () = cancel.cancelled() => return Waited::Stop(End::Shutdown),
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        abort.cancel();
                        return Waited::Stop(End::Aborted(format!("request task panicked: {e}")));
                    }
                }
            }
            value = &mut fut => return Waited::Ready(value),
        }
    }
}

async fn acquire(requests: Arc<Semaphore>, bytes: Arc<Semaphore>, cost: u32) -> Option<Permits> {
    let request = requests.acquire_owned().await.ok()?;
    let bytes = if cost > 0 {
        Some(bytes.acquire_many_owned(cost).await.ok()?)
    } else {
        None
    };
    Some(Permits {
        _request: request,
        _bytes: bytes,
    })
}

/// Writes replies in the order they complete. Replies are written whole, so they never
/// interleave; the socket is flushed whenever no further reply is ready.
async fn write_replies<W>(
    writer: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    abort: CancellationToken,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, writer);
    let work = async {
        while let Some(reply) = rx.recv().await {
            write_parts(&mut out, reply).await?;
            while let Ok(reply) = rx.try_recv() {
                write_parts(&mut out, reply).await?;
            }
            out.flush().await?;
        }
        out.shutdown().await
    };
    let result = tokio::select! {
        biased;
        () = abort.cancelled() => Ok(()),
        r = work => r,
    };
    if result.is_err() {
        abort.cancel();
    }
    result
}

async fn write_parts<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    reply: Outgoing,
) -> io::Result<()> {
    for part in &reply.parts {
        out.write_all(part).await?;
    }
    Ok(())
}

/// Checks a request against the negotiated state before it reaches the device.
fn validate<D>(ctx: &Ctx<D>, req: &Request) -> Result<Op, Rejection> {
    let cmd = command_name(req.kind);
    let allowed = match req.kind {
        CMD_READ if ctx.structured => CMD_FLAG_FUA | CMD_FLAG_DF,
        CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM => CMD_FLAG_FUA,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        CMD_BLOCK_STATUS => CMD_FLAG_FUA | CMD_FLAG_REQ_ONE,
        other => return Err(reject(EINVAL, format!("unsupported command {other}"))),
    };
    if req.flags & !allowed != 0 {
        return Err(reject(
            EINVAL,
            format!(
                "command flags {:#x} are not valid for {cmd}",
                req.flags & !allowed
            ),
        ));
    }
    let fua = req.flags & CMD_FLAG_FUA != 0;
    if ctx.read_only && matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES) {
        return Err(reject(EPERM, "the export is read-only".into()));
    }
    let len = u64::from(req.len);
    let in_range = req
        .offset
        .checked_add(len)
        .is_some_and(|end| end <= ctx.size);
    let out_of_range = |errno| {
        reject(
            errno,
            format!(
                "{cmd} of {len} bytes at offset {} reaches past the end of the {}-byte export",
                req.offset, ctx.size
            ),
        )
    };
    match req.kind {
        CMD_READ => {
            if req.len > MAX_BLOCK_SIZE {
                return Err(reject(
                    EINVAL,
                    format!("read of {len} bytes exceeds the maximum of {MAX_BLOCK_SIZE}"),
                ));
            }
            if !in_range {
                return Err(out_of_range(EINVAL));
            }
            Ok(Op::Read {
                df: req.flags & CMD_FLAG_DF != 0,
            })
        }
        CMD_WRITE => {
            if !in_range {
                return Err(out_of_range(ENOSPC));
            }
            Ok(Op::Write { fua })
        }
        CMD_FLUSH => Ok(Op::Flush),
        CMD_TRIM => {
            if !in_range {
                return Err(out_of_range(EINVAL));
            }
            Ok(Op::Trim { fua })
        }
        CMD_WRITE_ZEROES => {
            if !in_range {
                return Err(out_of_range(ENOSPC));
            }
            Ok(Op::WriteZeroes {
                fua,
                no_hole: req.flags & CMD_FLAG_NO_HOLE != 0,
            })
        }
        _ => {
            let Some(context_id) = ctx.base_allocation else {
                return Err(reject(
                    EINVAL,
                    "block status needs the base:allocation metadata context".into(),
                ));
            };
            if len == 0 {
                return Err(reject(EINVAL, "block status of zero bytes".into()));
            }
            if !in_range {
                return Err(out_of_range(EINVAL));
            }
            Ok(Op::BlockStatus {
                req_one: req.flags & CMD_FLAG_REQ_ONE != 0,
                context_id,
            })
        }
    }
}

/// The NBD error for a device error on a command.
fn errno(kind: u16, err: &BlockError) -> u32 {
    match err {
        BlockError::OutOfRange { .. } if matches!(kind, CMD_WRITE | CMD_WRITE_ZEROES) => ENOSPC,
        BlockError::OutOfRange { .. } | BlockError::InvalidArgument(_) => EINVAL,
        BlockError::NoSpace(_) => ENOSPC,
        BlockError::ReadOnly(_) => EPERM,
        BlockError::Io(_) => EIO,
    }
}

/// An error reply: a structured error chunk with a message when structured replies were
/// negotiated, a simple reply otherwise.
fn error_reply<D>(ctx: &Ctx<D>, req: &Request, errno: u32, message: &str) -> Vec<Bytes> {
    if ctx.structured {
        vec![error_chunk(req.handle, errno, message)]
    } else {
        vec![simple_reply(errno, req.handle)]
    }
}

fn device_error_reply<D>(ctx: &Ctx<D>, req: &Request, err: &BlockError) -> Vec<Bytes> {
    let code = errno(req.kind, err);
    tracing::warn!(
        peer = %ctx.peer,
        cmd = command_name(req.kind),
        offset = req.offset,
        len = req.len,
        errno = code,
        error = %err,
        "request failed"
    );
    error_reply(ctx, req, code, &err.to_string())
}

fn status_reply<D>(ctx: &Ctx<D>, req: &Request, result: BlockResult<()>) -> Vec<Bytes> {
    match result {
        Ok(()) => vec![simple_reply(0, req.handle)],
        Err(e) => device_error_reply(ctx, req, &e),
    }
}

async fn execute<D: BlockDevice>(
    ctx: &Ctx<D>,
    req: &Request,
    op: Op,
    payload: Option<Bytes>,
) -> Vec<Bytes> {
    match op {
        Op::Read { df } => read_reply(ctx, req, df).await,
        Op::Write { fua } => {
            let data = payload.unwrap_or_default();
            let result = if data.is_empty() {
                Ok(())
            } else {
                ctx.device.write(req.offset, data, WriteFlags { fua }).await
            };
            status_reply(ctx, req, result)
        }
        Op::Flush => status_reply(ctx, req, ctx.device.flush().await),
        Op::Trim { fua } => status_reply(ctx, req, zero_range(ctx, req, None, fua).await),
        Op::WriteZeroes { fua, no_hole } => {
            let mode = if no_hole {
                ZeroMode::Allocate
            } else {
                ZeroMode::MayUnmap
            };
            status_reply(ctx, req, zero_range(ctx, req, Some(mode), fua).await)
        }
        Op::BlockStatus {
            req_one,
            context_id,
        } => block_status_reply(ctx, req, req_one, context_id).await,
    }
}

/// Trims (`mode` None) or zeroes the request's range in pieces of at most
/// [`MAX_BLOCK_SIZE`], so no device sees a huge request; flushes afterwards for FUA.
async fn zero_range<D: BlockDevice>(
    ctx: &Ctx<D>,
    req: &Request,
    mode: Option<ZeroMode>,
    fua: bool,
) -> BlockResult<()> {
    let len = u64::from(req.len);
    if len == 0 {
        return Ok(());
    }
    let piece = u64::from(MAX_BLOCK_SIZE);
    if let Some(mode) = mode {
        if len <= piece {
            return ctx
                .device
                .write_zeroes(req.offset, len, mode, WriteFlags { fua })
                .await;
        }
    }
    let end = req.offset + len;
    let mut at = req.offset;
    while at < end {
        let n = (end - at).min(piece);
        match mode {
            Some(mode) => {
                ctx.device
                    .write_zeroes(at, n, mode, WriteFlags::default())
                    .await?
            }
            None => ctx.device.trim(at, n).await?,
        }
        at += n;
    }
    if fua {
        ctx.device.flush().await?;
    }
    Ok(())
}

async fn read_exact<D: BlockDevice>(ctx: &Ctx<D>, offset: u64, len: u64) -> BlockResult<Bytes> {
    let data = ctx.device.read(offset, len).await?;
    if data.len() as u64 != len {
        return Err(BlockError::Io(format!(
            "device returned {} bytes for a read of {len} at offset {offset}",
            data.len()
        )));
    }
    Ok(data)
}

async fn read_reply<D: BlockDevice>(ctx: &Ctx<D>, req: &Request, df: bool) -> Vec<Bytes> {
    if req.len == 0 {
        return if ctx.structured {
            vec![none_chunk(req.handle)]
        } else {
            vec![simple_reply(0, req.handle)]
        };
    }
    if ctx.structured && ctx.sparse_reads && !df && req.len >= HOLE_DETECT_MIN {
        if let Some(parts) = sparse_read(ctx, req).await {
            return parts;
        }
    }
    match read_exact(ctx, req.offset, u64::from(req.len)).await {
        Ok(data) if ctx.structured => vec![
            offset_data_header(req.handle, req.offset, req.len, true),
            data,
        ],
        Ok(data) => vec![simple_reply(0, req.handle), data],
        Err(e) => device_error_reply(ctx, req, &e),
    }
}

/// A structured read that sends zero extents as holes. `None` when block status is not
/// usable or not worth it (no zero extent, too fragmented); the caller then reads
/// everything.
async fn sparse_read<D: BlockDevice>(ctx: &Ctx<D>, req: &Request) -> Option<Vec<Bytes>> {
    let len = u64::from(req.len);
    let extents = ctx.device.block_status(req.offset, len).await.ok()?;
    let runs = clip_extents(&extents, req.offset, req.offset + len);
    let covered: u64 = runs.iter().map(|e| e.len).sum();
    if covered != len
        || runs.len() > MAX_READ_CHUNKS
        || !runs.iter().any(|e| e.kind == ExtentKind::Zero)
    {
        return None;
    }
    let mut parts = Vec::with_capacity(runs.len() * 2);
    let last = runs.len() - 1;
    for (i, run) in runs.iter().enumerate() {
        let done = i == last;
        let run_len = u32::try_from(run.len).ok()?;
        match run.kind {
            ExtentKind::Zero => {
                parts.push(offset_hole_chunk(req.handle, run.offset, run_len, done));
            }
            ExtentKind::Data => match read_exact(ctx, run.offset, run.len).await {
                Ok(data) => {
                    parts.push(offset_data_header(req.handle, run.offset, run_len, done));
                    parts.push(data);
                }
                Err(e) => return Some(device_error_reply(ctx, req, &e)),
            },
        }
    }
    Some(parts)
}

/// Clips a device's extent list to `[offset, end)`, merging neighbours of the same kind
/// and stopping at the first gap, so the result always starts at `offset` and is
/// contiguous (it may be shorter than the range if the device's list is).
fn clip_extents(extents: &[Extent], offset: u64, end: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut at = offset;
    for e in extents {
        if at >= end {
            break;
        }
        let e_end = e.offset.saturating_add(e.len);
        if e_end <= at {
            continue;
        }
        if e.offset > at {
            break;
        }
        let stop = e_end.min(end);
        Extent::push_merged(
            &mut out,
            Extent {
                offset: at,
                len: stop - at,
                kind: e.kind,
            },
        );
        at = stop;
    }
    out
}

async fn block_status_reply<D: BlockDevice>(
    ctx: &Ctx<D>,
    req: &Request,
    req_one: bool,
    context_id: u32,
) -> Vec<Bytes> {
    let len = u64::from(req.len);
    let extents = match ctx.device.block_status(req.offset, len).await {
        Ok(extents) => extents,
        Err(e) => return device_error_reply(ctx, req, &e),
    };
    let limit = if req_one { 1 } else { MAX_DESCRIPTORS };
    let mut descriptors: Vec<Descriptor> = clip_extents(&extents, req.offset, req.offset + len)
        .iter()
        .take(limit)
        .map(|e| Descriptor {
            len: u32::try_from(e.len).unwrap_or(req.len),
            flags: match e.kind {
                ExtentKind::Zero => STATE_HOLE | STATE_ZERO,
                ExtentKind::Data => 0,
            },
        })
        .collect();
    if descriptors.is_empty() {
        // The device described nothing usable: "allocated, contents unknown" is always
        // a correct answer.
        descriptors.push(Descriptor {
            len: req.len,
            flags: 0,
        });
    }
    vec![block_status_chunk(req.handle, context_id, &descriptors)]
}

#[cfg(test)]
mod tests;
