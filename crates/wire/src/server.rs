//! The server side: serves any [`BlockDevice`] to many pipelined connections.
//!
//! Each connection has one reader (this task) and one writer. Requests run concurrently,
//! up to [`ServerOptions::max_in_flight`] at a time and a budget of payload bytes, and
//! each reply is queued for the writer as soon as its request completes, so replies leave
//! in completion order, not arrival order. Ping and Info are answered by the reader
//! straight away: they never wait behind device I/O, so a busy replica still looks alive.
//!
//! A frame that breaks the format closes that connection (the byte stream can no longer be
//! trusted); the server and its other connections go on.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use shorthorn_block::{BlockDevice, BlockError, Extent, check_range};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::frame::{Frame, Kind, MAX_EXTENTS, MAX_PAYLOAD, Request, check_extents};
use crate::io::{FrameReader, ReadError, write_frames};

/// How long the accept loop pauses after an accept error (for example too many open
/// files), so a persistent error does not spin the CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Requests (other than Ping and Info) that may run at once on one connection. The
    /// reader stops reading while the limit is reached, which pushes back on the client.
    pub max_in_flight: usize,
    /// Bytes of request and reply payload (write data in, read data out) that one
    /// connection may hold at once; bounds a replica's memory per connection.
    pub max_in_flight_bytes: u32,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_in_flight: 128,
            max_in_flight_bytes: 256 << 20,
        }
    }
}

/// Ends every data connection a server has accepted so far, on demand: an engine that
/// takes a replica (back) over fences off connections of an earlier session, whose
/// frames could otherwise still arrive — TCP retransmits after a network cut — and be
/// applied on top of what a rebuild copied.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFence {
    generation: Arc<std::sync::Mutex<Arc<Generation>>>,
}

/// The connections accepted since the last [`ConnectionFence::close_all`].
#[derive(Debug, Default)]
struct Generation {
    closed: CancellationToken,
}

/// How long [`ConnectionFence::close_all`] waits for fenced connections to finish.
const FENCE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl ConnectionFence {
    /// The generation new connections join.
    fn current(&self) -> Arc<Generation> {
        match self.generation.lock() {
            Ok(generation) => generation.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Stops every connection accepted so far from reading further requests, and waits
    /// (bounded) until each has finished the requests it already read. Connections
    /// accepted afterwards are not affected. Returns how many connections it closed.
    pub async fn close_all(&self) -> usize {
        let old = {
            let mut generation = match self.generation.lock() {
                Ok(generation) => generation,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::replace(&mut *generation, Arc::new(Generation::default()))
        };
        old.closed.cancel();
        // Every connection of the old generation holds a clone.
        let fenced = Arc::strong_count(&old) - 1;
        let deadline = tokio::time::Instant::now() + FENCE_DRAIN_TIMEOUT;
        while Arc::strong_count(&old) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        info!(connections = fenced, "fenced off earlier data connections");
        fenced
    }
}

/// A listening socket the server can accept data connections from.
pub trait Listener: Send + Sync + 'static {
    /// The connected stream type.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Accepts one connection; returns it with a description of the peer for logs.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Small replies (write acks) must not wait for Nagle's algorithm.
        stream.set_nodelay(true)?;
        Ok((stream, format!("tcp://{peer}")))
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, _) = UnixListener::accept(self).await?;
        // Unix peers are usually unnamed; name the socket they came in on instead.
        let local = self
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_else(|| "?".into());
        Ok((stream, format!("unix://{local}")))
    }
}

/// A data server for one device: `WireServer::new(device)`, optionally with
/// [`options`](WireServer::options) and a shared [`fence`](WireServer::fence), then
/// [`serve`](WireServer::serve) on each listener (clone it for a second listener of the
/// same device: the clones share the device and the fence).
pub struct WireServer<D> {
    device: Arc<D>,
    options: ServerOptions,
    fence: ConnectionFence,
}

impl<D> Clone for WireServer<D> {
    fn clone(&self) -> Self {
        WireServer {
            device: self.device.clone(),
            options: self.options,
            fence: self.fence.clone(),
        }
    }
}

impl<D: BlockDevice + 'static> WireServer<D> {
    /// A server of `device` with default limits and a fence of its own.
    pub fn new(device: Arc<D>) -> Self {
        WireServer {
            device,
            options: ServerOptions::default(),
            fence: ConnectionFence::default(),
        }
    }

    /// Per-connection limits other than the defaults.
    #[must_use]
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Connections this server accepts can be closed through `fence`.
    #[must_use]
    pub fn fence(mut self, fence: ConnectionFence) -> Self {
        self.fence = fence;
        self
    }

    /// Serves the device to every connection `listener` accepts until `shutdown`
    /// completes.
    ///
    /// On shutdown the listener is closed, every connection stops reading new requests,
    /// finishes the requests it has, sends their replies and closes; then `serve`
    /// returns. Dropping the future instead closes every connection at once without
    /// waiting.
    pub async fn serve<L: Listener>(self, listener: L, shutdown: impl Future<Output = ()> + Send) {
        let WireServer {
            device,
            options,
            fence,
        } = self;
        let stop = CancellationToken::new();
        let mut connections = JoinSet::new();
        let mut accepted: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            error!(error = %e, "data connection task panicked");
                        }
                    }
                }
                result = listener.accept() => match result {
                    Ok((stream, peer)) => {
                        accepted += 1;
                        let peer = format!("{peer} (connection {accepted})");
                        debug!(%peer, "accepted data connection");
                        let device = device.clone();
                        let stop = stop.child_token();
                        let generation = fence.current();
                        connections.spawn(async move {
                            let ended = async {
                                tokio::select! {
                                    () = stop.cancelled() => {}
                                    () = generation.closed.cancelled() => {}
                                }
                            };
                            serve_connection(stream, &peer, device, options, ended).await;
                            // Holding the generation until here tells the fence we are done.
                            drop(generation);
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "accepting a data connection failed; retrying");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        stop.cancel();
        info!(
            connections = connections.len(),
            "data server shutting down; draining connections"
        );
        while connections.join_next().await.is_some() {}
    }
}

/// How the reading half of a connection ended.
enum ReadEnd {
    /// The peer closed its side between frames, or the server is shutting down: finish
    /// in-flight requests and send their replies.
    Drain,
    /// The stream is broken or untrustworthy: close now.
    Close,
}

/// Serves `device` on one connected stream until the peer closes it, it breaks the
/// protocol, or `shutdown` completes. `peer` names the peer in logs.
async fn serve_connection<S, D>(
    stream: S,
    peer: &str,
    device: Arc<D>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
    D: BlockDevice + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    // Replies queue here; the reader and every request task hold a sender, so the
    // writer ends exactly when the last reply has been written.
    let (replies, reply_queue) = mpsc::channel(options.max_in_flight + 16);
    let writer = write_frames(write_half, reply_queue);
    let reader = read_requests(
        FrameReader::new(read_half),
        peer,
        device,
        options,
        replies,
        shutdown,
    );
    tokio::pin!(writer, reader);
    tokio::select! {
        end = &mut reader => match end {
            ReadEnd::Close => {}
            ReadEnd::Drain => {
                if let Err(e) = writer.await {
                    debug!(%peer, error = %e, "writing final replies failed");
                }
            }
        },
        result = &mut writer => {
            // The reader still holds a sender, so the writer only ends on an error.
            if let Err(e) = result {
                debug!(%peer, error = %e, "data connection write failed; closing");
            }
        }
    }
    debug!(%peer, "data connection closed");
}

/// Ids of the requests running on one connection, to reject a reused id: two replies
/// with the same id would be ambiguous to the client.
type InFlight = Arc<Mutex<HashSet<u64>>>;

async fn read_requests<R, D>(
    mut frames: FrameReader<R>,
    peer: &str,
    device: Arc<D>,
    options: ServerOptions,
    replies: mpsc::Sender<Frame>,
    shutdown: impl Future<Output = ()>,
) -> ReadEnd
where
    R: AsyncRead + Unpin,
    D: BlockDevice + 'static,
{
    let slots = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let byte_budget = options.max_in_flight_bytes.max(MAX_PAYLOAD);
    let bytes = Arc::new(Semaphore::new(byte_budget as usize));
    let in_flight: InFlight = Arc::default();
    let peer_name: Arc<str> = Arc::from(peer);
    // Dropping the set (on `Close`) aborts every request still running.
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    let end = loop {
        while tasks.try_join_next().is_some() {}
        let frame = tokio::select! {
            () = &mut shutdown => break ReadEnd::Drain,
            frame = frames.next() => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break ReadEnd::Drain,
            Err(ReadError::Io(e)) => {
                debug!(%peer, error = %e, "data connection read failed; closing");
                return ReadEnd::Close;
            }
            Err(e) => {
                warn!(%peer, error = %e, "closing data connection: bad frame from client");
                return ReadEnd::Close;
            }
        };
        if frame.response {
            warn!(
                %peer, kind = %frame.kind, request_id = frame.request_id,
                "closing data connection: client sent a reply frame"
            );
            return ReadEnd::Close;
        }
        let immediate = match frame.kind {
            Kind::Ping => Some(Frame::ok_reply(&frame, Bytes::new())),
            Kind::Info => Some(Frame::info_reply(&frame, device.size())),
            _ => None,
        };
        if let Some(reply) = immediate {
            if replies.send(reply).await.is_err() {
                return ReadEnd::Close;
            }
            continue;
        }
        if !in_flight.lock().insert(frame.request_id) {
            warn!(
                %peer, request_id = frame.request_id,
                "closing data connection: request id reused while still in flight"
            );
            return ReadEnd::Close;
        }
        let cost = match frame.kind {
            Kind::Read => frame.length,
            Kind::Write => frame.payload.len() as u64,
            _ => 0,
        };
        // The decoder bounded both by MAX_PAYLOAD, which the budget is at least.
        let cost = u32::try_from(cost).unwrap_or(MAX_PAYLOAD);
        let (Ok(slot), Ok(budget)) = (
            slots.clone().acquire_owned().await,
            bytes.clone().acquire_many_owned(cost).await,
        ) else {
            return ReadEnd::Close;
        };
        let guard = ReplyGuard {
            request: Frame {
                payload: Bytes::new(),
                ..frame.clone()
            },
            replies: replies.clone(),
            in_flight: in_flight.clone(),
            armed: true,
        };
        let device = device.clone();
        let peer = peer_name.clone();
        tasks.spawn(async move {
            let reply = execute(&*device, frame, &peer).await;
            guard.send(reply).await;
            drop((slot, budget));
        });
    };
    drop(replies);
    while tasks.join_next().await.is_some() {}
    end
}

/// Sends a request's reply; if the request task panics before replying, sends an I/O
/// error instead, so the client gets an answer rather than a timeout.
struct ReplyGuard {
    request: Frame,
    replies: mpsc::Sender<Frame>,
    in_flight: InFlight,
    armed: bool,
}

impl ReplyGuard {
    async fn send(mut self, reply: Frame) {
        self.armed = false;
        // Free the id before the reply leaves: the client may reuse it once it has the reply.
        self.in_flight.lock().remove(&self.request.request_id);
        // A closed queue means the connection is going away; nobody is left to tell.
        let _ = self.replies.send(reply).await;
    }
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        if self.armed {
            self.in_flight.lock().remove(&self.request.request_id);
            let error = BlockError::Io("replica request handler failed unexpectedly".into());
            let _ = self
                .replies
                .try_send(Frame::error_reply(&self.request, &error));
        }
    }
}

/// Runs one request on the device and builds its reply (never an invalid frame).
async fn execute<D: BlockDevice>(device: &D, frame: Frame, peer: &str) -> Frame {
    let header = Frame {
        payload: Bytes::new(),
        ..frame.clone()
    };
    let request = match Request::from_frame(frame) {
        Ok(request) => request,
        Err(e) => return Frame::error_reply(&header, &BlockError::InvalidArgument(e.to_string())),
    };
    // Checked here too, not only by the device, so every server answers a range past the
    // end (or one that overflows) with OUT_OF_RANGE, whatever device it serves.
    let (offset, len) = request.range();
    if let Err(e) = check_range(offset, len, device.size()) {
        return Frame::error_reply(&header, &e);
    }
    let result = match request {
        Request::Read { offset, len } => match device.read(offset, len).await {
            Ok(data) if data.len() as u64 == len => Ok(Frame::ok_reply(&header, data)),
            Ok(data) => Err(BlockError::Io(format!(
                "device returned {} bytes for a read of {len} at offset {offset}",
                data.len()
            ))),
            Err(e) => Err(e),
        },
        Request::Write {
            offset,
            data,
            flags,
        } => device
            .write(offset, data, flags)
            .await
            .map(|()| ok(&header)),
        Request::Flush => device.flush().await.map(|()| ok(&header)),
        Request::WriteZeroes {
            offset,
            len,
            mode,
            flags,
        } => device
            .write_zeroes(offset, len, mode, flags)
            .await
            .map(|()| ok(&header)),
        Request::Trim { offset, len } => device.trim(offset, len).await.map(|()| ok(&header)),
        Request::BlockStatus { offset, len } => device
            .block_status(offset, len)
            .await
            .and_then(|extents| block_status_reply(&header, extents)),
        Request::Ping => Ok(ok(&header)),
        Request::Info => Ok(Frame::info_reply(&header, device.size())),
    };
    let reply = result.unwrap_or_else(|e| {
        debug!(
            %peer, kind = %header.kind, request_id = header.request_id,
            offset = header.offset, error = %e, "request failed"
        );
        Frame::error_reply(&header, &e)
    });
    // Every reply built above is valid by construction; checking costs nothing next to
    // the I/O and guarantees a device bug can never put a malformed frame on the wire.
    match reply.validate() {
        Ok(()) => reply,
        Err(e) => {
            error!(%peer, error = %e, "built an invalid reply; sending an I/O error instead");
            Frame::error_reply(
                &header,
                &BlockError::Io(format!("replica built an invalid reply: {e}")),
            )
        }
    }
}

fn ok(header: &Frame) -> Frame {
    Frame::ok_reply(header, Bytes::new())
}

/// A block-status reply for the device's extents: a prefix of at most [`MAX_EXTENTS`] if
/// the device reports more (the client asks again for the rest), an error if the device
/// broke the [`BlockDevice::block_status`] contract.
fn block_status_reply(header: &Frame, mut extents: Vec<Extent>) -> Result<Frame, BlockError> {
    extents.truncate(MAX_EXTENTS as usize);
    check_extents(header.offset, header.length, &extents).map_err(|reason| {
        BlockError::Io(format!(
            "device returned an invalid block status for {} bytes at offset {}: {reason}",
            header.length, header.offset
        ))
    })?;
    Ok(Frame::block_status_reply(header, &extents))
}
