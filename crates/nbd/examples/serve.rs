//! Serves a Shorthorn store volume over NBD, for trying clients by hand:
//!
//! ```text
//! cargo run -p shorthorn-nbd --example serve -- DIR [SIZE_BYTES] [LISTEN]
//! ```
//!
//! Creates the volume in `DIR` if it holds none (size defaults to 1 GiB), then serves it
//! as export `vol` on `LISTEN` (default `127.0.0.1:10809`; a path starting with `/` or
//! `./` means a unix socket) until Ctrl-C.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use shorthorn_nbd::{Export, NbdServer};
use shorthorn_store::{Store, StoreDevice};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .context("usage: serve DIR [SIZE_BYTES] [LISTEN]")?;
    let size: u64 = match args.next() {
        Some(s) => s.parse().context("SIZE_BYTES must be a number of bytes")?,
        None => 1 << 30,
    };
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:10809".to_owned());
    let dir = Path::new(&dir);
    let store = match Store::open(dir) {
        Ok(store) => store,
        Err(_) => Store::create(dir, "vol", size)?,
    };
    let device = Arc::new(StoreDevice::new(Arc::new(store)));
    let server = NbdServer::new(vec![
        Export::new("vol", device)
            .with_description("Shorthorn volume")
            .with_multi_conn(true),
    ])?;
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if listen.starts_with('/') || listen.starts_with("./") {
        let _ = std::fs::remove_file(&listen);
        server
            .serve_unix(tokio::net::UnixListener::bind(&listen)?, stop)
            .await?;
    } else {
        server
            .serve_tcp(tokio::net::TcpListener::bind(&listen).await?, stop)
            .await?;
    }
    Ok(())
}
