//! An NBD (Network Block Device) server that exports any [`shorthorn_block::BlockDevice`].
//!
//! Written from the protocol document (`doc/proto.md` of the NetworkBlockDevice/nbd
//! project). The server speaks fixed newstyle negotiation only, with `NBD_OPT_GO`,
//! `NBD_OPT_INFO`, `NBD_OPT_LIST`, structured replies and the `base:allocation`
//! metadata context; in transmission it supports READ, WRITE, FLUSH, TRIM,
//! WRITE_ZEROES (with `NO_HOLE`), BLOCK_STATUS and DISC, FUA on every command, and
//! unfragmented (`DF`) reads. Requests on one connection run concurrently (bounded in
//! number and payload bytes) and replies may go out of order, as the protocol allows.
//! See `docs/nbd.md` for the full list, limits and error mapping.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use shorthorn_nbd::{Export, NbdServer};
//! use shorthorn_store::{Store, StoreDevice};
//!
//! let store = Store::create(std::path::Path::new("/var/lib/vol"), "vol", 1 << 30)?;
//! let device = Arc::new(StoreDevice::new(Arc::new(store)));
//! let server = NbdServer::new(vec![Export::new("vol", device).with_multi_conn(true)])?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:10809").await?;
//! server.serve_tcp(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod export;
mod handshake;
pub mod proto;
mod reader;
mod server;
mod transmission;

pub use export::{ConfigError, Export, ServerConfig};
pub use server::NbdServer;
