//! What a server offers (its exports) and the limits it keeps; the handshake and
//! transmission phases read both, so they live below the server.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::*;

/// One named device offered to NBD clients.
pub struct Export<D> {
    /// The name clients ask for (`nbd://host/NAME`). The first export is also the default
    /// export, served to clients that ask for the empty name.
    pub name: String,
    /// A description for humans, sent in `NBD_OPT_LIST` and `NBD_INFO_DESCRIPTION`.
    pub description: String,
    /// The device behind the export.
    pub device: Arc<D>,
    /// The caller promises that a flush on one connection makes every write completed on
    /// any connection durable (true for a device whose cache, if any, is shared by all
    /// connections, such as `StoreDevice`). Only then is `NBD_FLAG_CAN_MULTI_CONN` sent.
    pub multi_conn: bool,
    /// Refuse writes, trims and write-zeroes with `EPERM` and advertise
    /// `NBD_FLAG_READ_ONLY`.
    pub read_only: bool,
}

impl<D> Export<D> {
    /// A writable export without multi-connection support or description.
    pub fn new(name: impl Into<String>, device: Arc<D>) -> Self {
        Export {
            name: name.into(),
            description: String::new(),
            device,
            multi_conn: false,
            read_only: false,
        }
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets [`Export::multi_conn`].
    pub fn with_multi_conn(mut self, multi_conn: bool) -> Self {
        self.multi_conn = multi_conn;
        self
    }

    /// Sets [`Export::read_only`].
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// The transmission flags sent for this export.
    pub fn transmission_flags(&self, structured_replies: bool) -> u16 {
        let mut flags = FLAG_HAS_FLAGS
            | FLAG_SEND_FLUSH
            | FLAG_SEND_FUA
            | FLAG_SEND_TRIM
            | FLAG_SEND_WRITE_ZEROES;
        if structured_replies {
            flags |= FLAG_SEND_DF;
        }
        if self.multi_conn {
            flags |= FLAG_CAN_MULTI_CONN;
        }
        if self.read_only {
            flags |= FLAG_READ_ONLY;
        }
        flags
    }
}

impl<D> Clone for Export<D> {
    fn clone(&self) -> Self {
        Export {
            name: self.name.clone(),
            description: self.description.clone(),
            device: self.device.clone(),
            multi_conn: self.multi_conn,
            read_only: self.read_only,
        }
    }
}

impl<D> std::fmt::Debug for Export<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("multi_conn", &self.multi_conn)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// Limits that keep one client from exhausting the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Requests one connection may have in flight; reading stops while the limit is hit.
    pub max_in_flight: usize,
    /// Bytes of read and write payload one connection may have in flight. Must be at least
    /// [`MAX_BLOCK_SIZE`] (smaller values are raised to it).
    pub max_in_flight_bytes: u32,
    /// Time a client has to finish the handshake before it is disconnected.
    pub handshake_timeout: Duration,
    /// Options accepted in one handshake before the client is disconnected.
    pub max_options: u32,
    /// Connections served at once; further connections are closed at once.
    pub max_connections: usize,
    /// On shutdown, how long in-flight requests may take to be answered before their
    /// connections are dropped.
    pub shutdown_grace: Duration,
    /// With structured replies, ask the device for block status before reads of 64 KiB
    /// or more and send zero extents as holes instead of zero bytes. Turn off for
    /// devices whose block status is expensive.
    pub sparse_reads: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_in_flight: 64,
            max_in_flight_bytes: 128 << 20,
            handshake_timeout: Duration::from_secs(30),
            max_options: 1024,
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
            sparse_reads: true,
        }
    }
}

/// Why a server cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No export was given.
    #[error("an NBD server needs at least one export")]
    NoExports,
    /// An export name breaks the protocol's string rules.
    #[error("export name {name:?} is invalid: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two exports share a name.
    #[error("export name {0:?} is used twice")]
    DuplicateName(String),
    /// A limit is zero.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
}
