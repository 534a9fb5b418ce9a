//! The client side: a replica seen as a [`BlockDevice`].
//!
//! A [`WireClient`] holds several connections to one replica and spreads requests over
//! them. Each connection is multiplexed by request id: a table of pending requests maps
//! each id to the caller waiting for it, and a reader task completes them in whatever
//! order the replies arrive.
//!
//! The client never hides a problem: the first timeout, dropped connection, missed ping or
//! protocol violation marks it FAILED for good, fails every pending request at once, and
//! closes its connections. There is no reconnect; the engine watches [`WireClient::failed`]
//! / [`WireClient::wait_failed`], moves the replica to ERR, and rebuilds it when it
//! decides to — a replica that may have missed a write must not quietly come back.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use shorthorn_block::{
    BlockDevice, BlockError, BlockResult, Extent, WriteFlags, ZeroMode, check_range,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::warn;

use crate::addr::ReplicaAddr;
use crate::frame::{Frame, FrameError, Kind, MAX_PAYLOAD, MAX_RANGE_LEN, Request, Status};
use crate::io::{FrameReader, write_frames};

/// Requests (other than Ping and Info) one connection keeps in flight at most; matches
/// the server's default limit so a well-behaved client never makes the server stop
/// reading (which would delay pings).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 128;

/// How a client connects and when it gives up on a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Connections opened to the replica; requests are spread over them.
    pub connections: usize,
    /// A request (including connect, the Info handshake and pings) that gets no reply
    /// within this time fails the client.
    pub request_timeout: Duration,
    /// How often each connection is pinged to detect a dead peer while idle.
    /// `Duration::ZERO` disables pings.
    pub ping_interval: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connections: 2,
            request_timeout: Duration::from_secs(8),
            ping_interval: Duration::from_secs(2),
        }
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The options cannot work (no connections, zero timeout).
    #[error("invalid client options: {0}")]
    InvalidOptions(String),
    /// Opening a connection failed.
    #[error("connecting to replica {addr} failed: {source}")]
    Connect {
        /// The replica.
        addr: ReplicaAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// Opening a connection took longer than the request timeout.
    #[error("connecting to replica {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The replica.
        addr: ReplicaAddr,
        /// The timeout.
        after: Duration,
    },
    /// The replica answered the Info handshake wrongly.
    #[error("handshake with replica {addr} failed: {reason}")]
    Handshake {
        /// The replica.
        addr: ReplicaAddr,
        /// What was wrong.
        reason: String,
    },
    /// A request got no reply in time; the client is now failed.
    #[error(
        "replica {addr}: {kind} request {request_id} at offset {offset} on connection \
         {connection} got no reply within {after:?}"
    )]
    Timeout {
        /// The replica.
        addr: ReplicaAddr,
        /// Kind of the request.
        kind: Kind,
        /// Its id.
        request_id: u64,
        /// Its offset.
        offset: u64,
        /// Index of the connection it was sent on.
        connection: usize,
        /// The timeout.
        after: Duration,
    },
    /// The client has failed (now or earlier); `reason` is the first failure.
    #[error("replica {addr} is failed: {reason}")]
    Failed {
        /// The replica.
        addr: ReplicaAddr,
        /// The first failure.
        reason: String,
    },
    /// The request cannot be encoded (a bug in the caller, caught before sending).
    #[error("invalid request to replica {addr}: {source}")]
    InvalidRequest {
        /// The replica.
        addr: ReplicaAddr,
        /// What the codec rejected.
        source: FrameError,
    },
    /// The replica's device answered with an error; the client stays healthy.
    #[error(transparent)]
    Device(BlockError),
}

impl From<ClientError> for BlockError {
    fn from(error: ClientError) -> BlockError {
        match error {
            ClientError::Device(e) => e,
            ClientError::InvalidRequest { .. } | ClientError::InvalidOptions(_) => {
                BlockError::InvalidArgument(error.to_string())
            }
            other => BlockError::Io(other.to_string()),
        }
    }
}

/// Result of a client operation.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A request waiting for its reply.
enum Pending {
    /// Someone awaits the reply.
    Waiting {
        kind: Kind,
        reply: oneshot::Sender<Frame>,
    },
    /// The caller gave up (dropped its future); the reply is still expected and is
    /// discarded when it comes, and a watchdog fails the client if it never does.
    Abandoned { kind: Kind },
}

struct ConnState {
    /// Set once the client has failed; no new request may be registered.
    closed: bool,
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

struct Conn {
    outgoing: mpsc::Sender<Frame>,
    slots: Arc<Semaphore>,
    state: Mutex<ConnState>,
}

struct Shared {
    addr: ReplicaAddr,
    options: ClientOptions,
    conns: Vec<Conn>,
    next_conn: AtomicUsize,
    size: AtomicU64,
    /// `None` while healthy, then the first failure reason forever.
    failure: watch::Sender<Option<String>>,
    /// Reader, writer and ping tasks; aborted on failure and on drop.
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A pipelined, multi-connection client of one replica. See the module docs.
///
/// Dropping it closes its connections.
pub struct WireClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WireClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireClient")
            .field("addr", &self.shared.addr)
            .field("connections", &self.shared.conns.len())
            .field("size", &self.size())
            .field("failed", &self.failed())
            .finish()
    }
}

impl WireClient {
    /// Opens `options.connections` connections to the replica at `addr` and asks each for
    /// the device size (the Info request, this protocol's handshake); all must agree.
    pub async fn connect(addr: &ReplicaAddr, options: ClientOptions) -> Result<WireClient> {
        if options.connections == 0 || options.connections > 1024 {
            return Err(ClientError::InvalidOptions(format!(
                "connections must be 1-1024, got {}",
                options.connections
            )));
        }
        if options.request_timeout.is_zero() {
            return Err(ClientError::InvalidOptions(
                "request_timeout must be positive".into(),
            ));
        }
        let mut streams = Vec::with_capacity(options.connections);
        for _ in 0..options.connections {
            let opened = tokio::time::timeout(options.request_timeout, open_stream(addr)).await;
            match opened {
                Ok(Ok(halves)) => streams.push(halves),
                Ok(Err(source)) => {
                    return Err(ClientError::Connect {
                        addr: addr.clone(),
                        source,
                    });
                }
                Err(_) => {
                    return Err(ClientError::ConnectTimeout {
                        addr: addr.clone(),
                        after: options.request_timeout,
                    });
                }
            }
        }
        let mut conns = Vec::with_capacity(streams.len());
        let mut queues = Vec::with_capacity(streams.len());
        for _ in 0..streams.len() {
            let (outgoing, queue) = mpsc::channel(MAX_IN_FLIGHT_PER_CONNECTION + 16);
            conns.push(Conn {
                outgoing,
                slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION)),
                state: Mutex::new(ConnState {
                    closed: false,
                    next_id: 1,
                    pending: HashMap::new(),
                }),
            });
            queues.push(queue);
        }
        let shared = Arc::new(Shared {
            addr: addr.clone(),
            options,
            conns,
            next_conn: AtomicUsize::new(0),
            size: AtomicU64::new(0),
            failure: watch::Sender::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        for (index, ((reader, writer), queue)) in streams.into_iter().zip(queues).enumerate() {
            let reader_task = tokio::spawn(read_replies(shared.clone(), index, reader));
            let writer_task = tokio::spawn(write_requests(shared.clone(), index, writer, queue));
            shared
                .tasks
                .lock()
                .extend([reader_task.abort_handle(), writer_task.abort_handle()]);
        }
        let client = WireClient { shared };
        client.handshake().await?;
        if !options.ping_interval.is_zero() {
            for index in 0..client.shared.conns.len() {
                let task = tokio::spawn(keepalive(client.shared.clone(), index));
                client.shared.tasks.lock().push(task.abort_handle());
            }
        }
        Ok(client)
    }

    async fn handshake(&self) -> Result<()> {
        let shared = &self.shared;
        let handshake_error = |reason: String| ClientError::Handshake {
            addr: shared.addr.clone(),
            reason,
        };
        let mut replies = Vec::with_capacity(shared.conns.len());
        for index in 0..shared.conns.len() {
            replies.push(shared.begin(index, Request::Info).await?);
        }
        let mut size = None;
        for reply in replies {
            let frame = reply.finish().await?;
            if frame.status != Status::Ok {
                return Err(handshake_error(format!(
                    "Info failed with status {:?}",
                    frame.status
                )));
            }
            match size {
                Some(s) if s != frame.length => {
                    return Err(handshake_error(format!(
                        "connections report different sizes ({s} and {})",
                        frame.length
                    )));
                }
                _ => size = Some(frame.length),
            }
        }
        shared
            .size
            .store(size.unwrap_or_default(), Ordering::Release);
        Ok(())
    }

    /// The replica this client talks to.
    pub fn addr(&self) -> &ReplicaAddr {
        &self.shared.addr
    }

    /// The options the client was connected with.
    pub fn options(&self) -> ClientOptions {
        self.shared.options
    }

    /// The first failure reason, or `None` while the client is healthy. Once set it never
    /// changes, and every request fails fast.
    pub fn failed(&self) -> Option<String> {
        self.shared.failure.borrow().clone()
    }

    /// Waits until the client fails and returns the first failure reason (at once if it
    /// already has).
    pub async fn wait_failed(&self) -> String {
        let mut failure = self.shared.failure.subscribe();
        // The sender lives in `self.shared`, so the channel cannot close while we wait.
        match failure.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "client closed".into(),
        }
    }

    /// A receiver of the failure state, for callers that select over many replicas
    /// without borrowing the client: `None` while healthy, then the first failure.
    pub fn failure_watch(&self) -> watch::Receiver<Option<String>> {
        self.shared.failure.subscribe()
    }

    /// Marks the client failed with `reason` (if it is not already) and closes its
    /// connections; for the engine, when it takes the replica out of service.
    pub fn close(&self, reason: &str) {
        self.shared.fail(format!("closed by the engine: {reason}"));
    }

    /// Sends a Ping on the next connection and returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        let index = self.shared.pick();
        self.shared
            .begin(index, Request::Ping)
            .await?
            .finish()
            .await?;
        Ok(start.elapsed())
    }

    /// Asks the replica for its size again (after an expansion) and returns it; later
    /// [`BlockDevice::size`] calls return the new size.
    pub async fn refresh_size(&self) -> Result<u64> {
        let index = self.shared.pick();
        let frame = self
            .shared
            .begin(index, Request::Info)
            .await?
            .finish()
            .await?;
        self.shared.size.store(frame.length, Ordering::Release);
        Ok(frame.length)
    }

    /// Sends `request` on the next connection without waiting for its reply.
    async fn begin(&self, request: Request) -> BlockResult<InFlight> {
        let index = self.shared.pick();
        Ok(self.shared.begin(index, request).await?)
    }
}

impl Drop for WireClient {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

async fn open_stream(addr: &ReplicaAddr) -> io::Result<(BoxRead, BoxWrite)> {
    match addr {
        ReplicaAddr::Tcp { host, port } => {
            let stream = TcpStream::connect((host.as_str(), *port)).await?;
            // Requests are small and latency-bound; never hold them back for Nagle.
            stream.set_nodelay(true)?;
            let (reader, writer) = stream.into_split();
            Ok((Box::new(reader), Box::new(writer)))
        }
        ReplicaAddr::Unix(path) => {
            let (reader, writer) = UnixStream::connect(path).await?.into_split();
            Ok((Box::new(reader), Box::new(writer)))
        }
    }
}

impl Shared {
    /// The connection for the next request (round robin).
    fn pick(&self) -> usize {
        self.next_conn.fetch_add(1, Ordering::Relaxed) % self.conns.len()
    }

    fn failed_error(&self) -> ClientError {
        ClientError::Failed {
            addr: self.addr.clone(),
            reason: self
                .failure
                .borrow()
                .clone()
                .unwrap_or_else(|| "connection closed".into()),
        }
    }

    /// Records the first failure, fails every pending request, and closes the connections.
    fn fail(&self, reason: String) {
        let first = self.failure.send_if_modified(|failure| {
            if failure.is_none() {
                *failure = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            warn!(replica = %self.addr, %reason, "replica client failed; not reconnecting");
        }
        for conn in &self.conns {
            let mut state = conn.state.lock();
            state.closed = true;
            // Dropping the reply senders wakes every waiter with an error at once.
            state.pending.clear();
            drop(state);
            conn.slots.close();
        }
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// Registers `request` on connection `index` and queues it for sending.
    async fn begin(self: &Arc<Self>, index: usize, request: Request) -> Result<InFlight> {
        if self.failure.borrow().is_some() {
            return Err(self.failed_error());
        }
        let conn = &self.conns[index];
        let kind = request.kind();
        let (offset, _) = request.range();
        let mut frame = request.into_frame(0);
        frame
            .validate()
            .map_err(|source| ClientError::InvalidRequest {
                addr: self.addr.clone(),
                source,
            })?;
        let slot = match kind {
            // Pings and Info bypass the limit, as on the server, so a saturated
            // connection is still probed.
            Kind::Ping | Kind::Info => None,
            _ => Some(
                conn.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| self.failed_error())?,
            ),
        };
        // Take room in the send queue first: from registering the request to handing it
        // to the writer nothing awaits, so a caller that gives up can never leave a
        // registered request that was not sent.
        let Ok(send) = conn.outgoing.reserve().await else {
            self.fail(format!("connection {index} stopped sending"));
            return Err(self.failed_error());
        };
        let (reply, receiver) = oneshot::channel();
        let request_id = {
            let mut state = conn.state.lock();
            if state.closed {
                return Err(self.failed_error());
            }
            let id = state.next_id;
            state.next_id = id.wrapping_add(1);
            state.pending.insert(id, Pending::Waiting { kind, reply });
            id
        };
        frame.request_id = request_id;
        send.send(frame);
        Ok(InFlight {
            shared: self.clone(),
            connection: index,
            request_id,
            kind,
            offset,
            deadline: Instant::now() + self.options.request_timeout,
            receiver,
            _slot: slot,
            done: false,
        })
    }
}

/// A request that has been sent and awaits its reply.
struct InFlight {
    shared: Arc<Shared>,
    connection: usize,
    request_id: u64,
    kind: Kind,
    offset: u64,
    deadline: Instant,
    receiver: oneshot::Receiver<Frame>,
    /// Held until the reply arrives, bounding requests in flight per connection.
    _slot: Option<OwnedSemaphorePermit>,
    done: bool,
}

impl InFlight {
    /// Waits for the reply frame (which may carry an error status).
    async fn finish(mut self) -> Result<Frame> {
        let result = tokio::time::timeout_at(self.deadline, &mut self.receiver).await;
        self.done = true;
        match result {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err(self.shared.failed_error()),
            Err(_) => {
                let error = ClientError::Timeout {
                    addr: self.shared.addr.clone(),
                    kind: self.kind,
                    request_id: self.request_id,
                    offset: self.offset,
                    connection: self.connection,
                    after: self.shared.options.request_timeout,
                };
                self.shared.fail(error.to_string());
                Err(error)
            }
        }
    }

    /// Waits for the reply and turns an error status into the device's error.
    async fn reply(self) -> BlockResult<Frame> {
        let context = format!(
            "replica {} ({} request {} at offset {})",
            self.shared.addr, self.kind, self.request_id, self.offset
        );
        let frame = self.finish().await?;
        match frame.error(&context) {
            Some(error) => Err(error),
            None => Ok(frame),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The caller stopped waiting. Keep expecting the reply, so it is not mistaken for
        // a protocol violation, and still hold the replica to the timeout.
        let conn = &self.shared.conns[self.connection];
        let mut state = conn.state.lock();
        let Some(entry) = state.pending.get_mut(&self.request_id) else {
            return;
        };
        *entry = Pending::Abandoned { kind: self.kind };
        drop(state);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        let (connection, request_id, kind, offset, deadline) = (
            self.connection,
            self.request_id,
            self.kind,
            self.offset,
            self.deadline,
        );
        runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let still_pending = shared.conns[connection]
                .state
                .lock()
                .pending
                .contains_key(&request_id);
            if still_pending {
                let error = ClientError::Timeout {
                    addr: shared.addr.clone(),
                    kind,
                    request_id,
                    offset,
                    connection,
                    after: shared.options.request_timeout,
                };
                shared.fail(format!("{error} (its caller had stopped waiting)"));
            }
        });
    }
}

/// Completes pending requests as their replies arrive, in any order.
async fn read_replies(shared: Arc<Shared>, index: usize, reader: BoxRead) {
    let mut frames = FrameReader::new(reader);
    loop {
        let frame = match frames.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                shared.fail(format!("connection {index} was closed by the replica"));
                return;
            }
            Err(e) => {
                shared.fail(format!("connection {index}: {e}"));
                return;
            }
        };
        if !frame.response {
            shared.fail(format!(
                "connection {index}: protocol error: replica sent a {} request frame",
                frame.kind
            ));
            return;
        }
        let entry = shared.conns[index]
            .state
            .lock()
            .pending
            .remove(&frame.request_id);
        match entry {
            Some(Pending::Waiting { kind, reply }) if kind == frame.kind => {
                // The caller may have just timed out; then nobody needs the reply.
                let _ = reply.send(frame);
            }
            Some(Pending::Abandoned { kind }) if kind == frame.kind => {}
            Some(Pending::Waiting { kind, .. } | Pending::Abandoned { kind }) => {
                shared.fail(format!(
                    "connection {index}: protocol error: {} reply to {kind} request {}",
                    frame.kind, frame.request_id
                ));
                return;
            }
            None => {
                // After a failure the table is empty, so late replies land here; the
                // failure is already recorded and `fail` keeps the first reason.
                shared.fail(format!(
                    "connection {index}: protocol error: reply to unknown request {}",
                    frame.request_id
                ));
                return;
            }
        }
    }
}

async fn write_requests(
    shared: Arc<Shared>,
    index: usize,
    writer: BoxWrite,
    queue: mpsc::Receiver<Frame>,
) {
    if let Err(e) = write_frames(writer, queue).await {
        shared.fail(format!("connection {index}: write failed: {e}"));
    }
}

/// Pings connection `index` every `ping_interval`, so a peer that vanished without closing
/// the connection (power loss, network partition) is noticed even when no I/O is running.
/// A ping that times out fails the client through the normal timeout path.
async fn keepalive(shared: Arc<Shared>, index: usize) {
    let mut ticks = tokio::time::interval(shared.options.ping_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let reply = match shared.begin(index, Request::Ping).await {
            Ok(in_flight) => in_flight.finish().await,
            Err(e) => Err(e),
        };
        if reply.is_err() {
            return;
        }
    }
}

/// Splits `len` bytes at `offset` into pieces of at most `max` bytes.
fn pieces(offset: u64, len: u64, max: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = offset + len;
    std::iter::successors(Some(offset), move |at| Some(at + max))
        .take_while(move |at| *at < end)
        .map(move |at| (at, max.min(end - at)))
}

/// Waits for every reply (so nothing is left running behind an error) and returns the
/// first error.
async fn finish_all(in_flight: Vec<InFlight>) -> BlockResult<Vec<Frame>> {
    let mut frames = Vec::with_capacity(in_flight.len());
    let mut first_error = None;
    for request in in_flight {
        match request.reply().await {
            Ok(frame) => frames.push(frame),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(frames),
    }
}

/// Requests larger than one frame can carry are split into pieces sent at once over the
/// connections; the pieces run in parallel and the call completes when all have.
impl BlockDevice for WireClient {
    fn size(&self) -> u64 {
        self.shared.size.load(Ordering::Acquire)
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        check_range(offset, len, self.size())?;
        let total = usize::try_from(len)
            .map_err(|_| BlockError::InvalidArgument(format!("read of {len} bytes too large")))?;
        let mut in_flight = Vec::new();
        for (at, piece) in pieces(offset, len, u64::from(MAX_PAYLOAD)) {
            in_flight.push(
                self.begin(Request::Read {
                    offset: at,
                    len: piece,
                })
                .await?,
            );
        }
        let mut frames = finish_all(in_flight).await?;
        if frames.len() == 1 {
            return Ok(frames.remove(0).payload);
        }
        let mut data = BytesMut::with_capacity(total);
        for frame in frames {
            data.extend_from_slice(&frame.payload);
        }
        Ok(data.freeze())
    }

    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        check_range(offset, data.len() as u64, self.size())?;
        let mut in_flight = Vec::new();
        for (at, piece) in pieces(offset, data.len() as u64, u64::from(MAX_PAYLOAD)) {
            // Pieces are at most MAX_PAYLOAD, so they index within `data`.
            let start = usize::try_from(at - offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(piece).unwrap_or(usize::MAX));
            let request = Request::Write {
                offset: at,
                data: data.slice(start..end),
                flags,
            };
            in_flight.push(self.begin(request).await?);
        }
        finish_all(in_flight).await.map(drop)
    }

    /// One Flush on any connection is enough: the replica flushes the whole device, and
    /// every write this client has had acknowledged has already reached the device.
    async fn flush(&self) -> BlockResult<()> {
        self.begin(Request::Flush).await?.reply().await.map(drop)
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        check_range(offset, len, self.size())?;
        let mut in_flight = Vec::new();
        for (at, piece) in pieces(offset, len, MAX_RANGE_LEN) {
            let request = Request::WriteZeroes {
                offset: at,
                len: piece,
                mode,
                flags,
            };
            in_flight.push(self.begin(request).await?);
        }
        finish_all(in_flight).await.map(drop)
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        check_range(offset, len, self.size())?;
        let mut in_flight = Vec::new();
        for (at, piece) in pieces(offset, len, MAX_RANGE_LEN) {
            in_flight.push(
                self.begin(Request::Trim {
                    offset: at,
                    len: piece,
                })
                .await?,
            );
        }
        finish_all(in_flight).await.map(drop)
    }

    /// A reply may describe only a prefix of the range asked for (a replica caps the
    /// extents per reply); the rest is asked for again until the range is covered.
    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        check_range(offset, len, self.size())?;
        let end = offset + len;
        let mut extents = Vec::new();
        let mut at = offset;
        while at < end {
            let piece = (end - at).min(MAX_RANGE_LEN);
            let request = Request::BlockStatus {
                offset: at,
                len: piece,
            };
            let frame = self.begin(request).await?.reply().await?;
            let reply = frame
                .extents()
                .map_err(|e| BlockError::Io(format!("replica {}: {e}", self.shared.addr)))?;
            for extent in reply {
                at = extent.end();
                Extent::push_merged(&mut extents, extent);
            }
        }
        Ok(extents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_exactly() {
        assert_eq!(
            pieces(10, 25, 10).collect::<Vec<_>>(),
            vec![(10, 10), (20, 10), (30, 5)]
        );
        assert_eq!(pieces(0, 0, 10).count(), 0);
        assert_eq!(pieces(5, 10, 10).collect::<Vec<_>>(), vec![(5, 10)]);
    }

    #[test]
    fn client_errors_map_to_block_errors_with_context() {
        let addr: ReplicaAddr = "tcp://10.0.0.1:9502".parse().unwrap();
        let timeout = ClientError::Timeout {
            addr: addr.clone(),
            kind: Kind::Write,
            request_id: 42,
            offset: 4096,
            connection: 1,
            after: Duration::from_millis(200),
        };
        let text = BlockError::from(timeout).to_string();
        for needle in ["tcp://10.0.0.1:9502", "write", "42", "4096", "200ms"] {
            assert!(text.contains(needle), "{text} lacks {needle}");
        }
        let device = ClientError::Device(BlockError::NoSpace("full".into()));
        assert!(matches!(BlockError::from(device), BlockError::NoSpace(_)));
    }

    #[tokio::test]
    async fn connect_rejects_bad_options_and_unreachable_replicas() {
        let addr: ReplicaAddr = "unix:///nonexistent/shorthorn-wire-test.sock"
            .parse()
            .unwrap();
        let zero = ClientOptions {
            connections: 0,
            ..ClientOptions::default()
        };
        assert!(matches!(
            WireClient::connect(&addr, zero).await,
            Err(ClientError::InvalidOptions(_))
        ));
        let err = WireClient::connect(&addr, ClientOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("shorthorn-wire-test.sock"));
    }
}
