//! Shorthorn's data protocol between an engine and its replicas.
//!
//! The engine replicates every write to N replicas; each replica serves its store with
//! [`WireServer`]. Both ends speak in terms of [`shorthorn_block::BlockDevice`]: the server
//! serves any device, and [`WireClient`] *is* a device, so the engine's replicator can
//! compose several clients exactly as it would compose local stores.
//!
//! * [`frame`]: the binary frame format (48-byte checksummed header + payload) and its
//!   codec. Specified byte by byte in `docs/wire-protocol.md`.
//! * [`server`]: accepts TCP or unix connections; each is pipelined (requests run
//!   concurrently and are answered as they complete, out of order).
//! * [`client`]: several connections per replica, each multiplexed by request id, with
//!   request timeouts and pings. Any transport failure marks the client failed for good,
//!   so the engine can take the replica out of service at once.

pub mod addr;
pub mod client;
pub mod frame;
mod io;
pub mod server;

pub use addr::{AddrParseError, ControlAddrError, ReplicaAddr, control_port, control_socket_addr};
pub use client::{ClientError, ClientOptions, MAX_IN_FLIGHT_PER_CONNECTION, Result, WireClient};
pub use frame::{Frame, FrameCodec, FrameError, Kind, Request, Status};
pub use server::{ConnectionFence, Listener, ServerOptions, WireServer};
