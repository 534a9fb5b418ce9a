//! The server and its listeners: TCP, unix socket, or any stream.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use shorthorn_block::BlockDevice;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::export::{ConfigError, Export, ServerConfig};
use crate::handshake::{self, HandshakeError, Outcome};
use crate::proto::*;
use crate::reader::WireReader;
use crate::transmission;

struct Inner<D> {
    exports: Vec<Export<D>>,
    config: ServerConfig,
}

/// An NBD server for one or more exports. Cheap to clone; clones serve the same exports.
pub struct NbdServer<D> {
    inner: Arc<Inner<D>>,
}

impl<D> Clone for NbdServer<D> {
    fn clone(&self) -> Self {
        NbdServer {
            inner: self.inner.clone(),
        }
    }
}

/// A listener the accept loop can take connections from.
trait Acceptor: Send + Sync {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn accept_split(
        &self,
    ) -> impl Future<Output = io::Result<(Self::Read, Self::Write, String)>> + Send;
}

impl Acceptor for TcpListener {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    async fn accept_split(&self) -> io::Result<(Self::Read, Self::Write, String)> {
        let (stream, addr) = self.accept().await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %addr, error = %e, "cannot set TCP_NODELAY");
        }
        let (r, w) = stream.into_split();
        Ok((r, w, addr.to_string()))
    }
}

impl Acceptor for UnixListener {
    type Read = tokio::net::unix::OwnedReadHalf;
    type Write = tokio::net::unix::OwnedWriteHalf;
    async fn accept_split(&self) -> io::Result<(Self::Read, Self::Write, String)> {
        let (stream, addr) = self.accept().await?;
        let peer = match addr.as_pathname() {
            Some(p) => format!("unix:{}", p.display()),
            None => "unix:(unnamed)".to_owned(),
        };
        let (r, w) = stream.into_split();
        Ok((r, w, peer))
    }
}

impl<D: BlockDevice + 'static> NbdServer<D> {
    /// A server for `exports` with default limits.
    pub fn new(exports: Vec<Export<D>>) -> Result<Self, ConfigError> {
        Self::with_config(exports, ServerConfig::default())
    }

    /// A server for `exports` with the given limits.
    pub fn with_config(exports: Vec<Export<D>>, config: ServerConfig) -> Result<Self, ConfigError> {
        if exports.is_empty() {
            return Err(ConfigError::NoExports);
        }
        for (i, export) in exports.iter().enumerate() {
            let reason = if export.name.is_empty() {
                Some("it is empty (the empty name already means the default export)")
            } else if export.name.len() > MAX_STRING_LEN {
                Some("it is longer than 4096 bytes")
            } else if export.name.contains('\0') {
                Some("it contains a NUL byte")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ConfigError::InvalidName {
                    name: export.name.clone(),
                    reason,
                });
            }
            if exports[..i].iter().any(|e| e.name == export.name) {
                return Err(ConfigError::DuplicateName(export.name.clone()));
            }
        }
        if config.max_in_flight == 0 {
            return Err(ConfigError::ZeroLimit("max_in_flight"));
        }
        if config.max_options == 0 {
            return Err(ConfigError::ZeroLimit("max_options"));
        }
        if config.max_connections == 0 {
            return Err(ConfigError::ZeroLimit("max_connections"));
        }
        Ok(NbdServer {
            inner: Arc::new(Inner { exports, config }),
        })
    }

    /// The exports served.
    pub fn exports(&self) -> &[Export<D>] {
        &self.inner.exports
    }

    /// The limits in force.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Accepts and serves TCP connections until `shutdown` completes. Then stops
    /// accepting, lets every connection finish the requests it has in flight (for at most
    /// [`ServerConfig::shutdown_grace`]), closes them and returns.
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, exports = self.inner.exports.len(), "NBD server listening");
        }
        self.accept_loop(listener, shutdown).await
    }

    /// Like [`NbdServer::serve_tcp`], on a unix socket.
    pub async fn serve_unix(
        &self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(addr = ?addr, exports = self.inner.exports.len(), "NBD server listening");
        }
        self.accept_loop(listener, shutdown).await
    }

    /// Serves one already-connected stream (any transport) until the client disconnects.
    pub async fn serve_stream<S>(&self, stream: S, peer: &str)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        serve_connection(
            self.inner.clone(),
            r,
            w,
            peer.to_owned(),
            CancellationToken::new(),
        )
        .await;
    }

    async fn accept_loop<L: Acceptor>(
        &self,
        listener: L,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let cancel = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(self.inner.config.max_connections));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "NBD connection task failed");
                    }
                }
                accepted = listener.accept_split() => match accepted {
                    Ok((r, w, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(
                                peer,
                                limit = self.inner.config.max_connections,
                                "refusing connection: too many connections"
                            );
                            continue;
                        };
                        let inner = self.inner.clone();
                        let token = cancel.child_token();
                        connections.spawn(async move {
                            serve_connection(inner, r, w, peer, token).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Typically EMFILE or a connection reset before accept: keep
                        // serving, but do not spin.
                        tracing::warn!(error = %e, "accepting an NBD connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        tracing::info!(
            connections = connections.len(),
            "NBD server shutting down; finishing in-flight requests"
        );
        drop(listener);
        cancel.cancel();
        while let Some(joined) = connections.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "NBD connection task failed");
            }
        }
        tracing::info!("NBD server stopped");
        Ok(())
    }
}

/// Runs one connection from greeting to close, logging how it went.
async fn serve_connection<D, R, W>(
    inner: Arc<Inner<D>>,
    reader: R,
    mut writer: W,
    peer: String,
    cancel: CancellationToken,
) where
    D: BlockDevice + 'static,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tracing::info!(peer, "NBD connection opened");
    let mut wire = WireReader::new(reader);
    let config = &inner.config;
    let negotiation = tokio::select! {
        () = cancel.cancelled() => {
            tracing::info!(peer, "NBD connection closed during handshake: server shutting down");
            return;
        }
        r = tokio::time::timeout(
            config.handshake_timeout,
            handshake::negotiate(&mut wire, &mut writer, &inner.exports, config, &peer),
        ) => r,
    };
    let negotiated = match negotiation {
        Err(_) => {
            tracing::warn!(peer, timeout = ?config.handshake_timeout, "NBD handshake timed out; closing");
            return;
        }
        Ok(Err(HandshakeError::Io(e))) => {
            tracing::info!(peer, error = %e, "NBD connection closed during handshake");
            return;
        }
        Ok(Err(HandshakeError::Refused(reason))) => {
            tracing::warn!(peer, reason, "NBD handshake refused; closing");
            return;
        }
        Ok(Ok(Outcome::Aborted)) => {
            tracing::info!(peer, "NBD connection closed: client aborted negotiation");
            return;
        }
        Ok(Ok(Outcome::Transmission(n))) => n,
    };
    let Some(export) = inner.exports.get(negotiated.export) else {
        return;
    };
    tracing::info!(
        peer,
        export = %export.name,
        size = negotiated.size,
        structured = negotiated.structured,
        block_status = negotiated.base_allocation.is_some(),
        "NBD transmission started"
    );
    let summary = transmission::serve(
        wire,
        writer,
        export.device.clone(),
        export.read_only,
        &negotiated,
        config,
        cancel,
        &peer,
    )
    .await;
    tracing::info!(
        peer,
        export = %export.name,
        requests = summary.requests,
        end = %summary.end,
        "NBD connection closed"
    );
}
