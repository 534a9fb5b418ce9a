//! What every long-running command shares: a runtime, and a shutdown signal that fires
//! on Ctrl-C, SIGTERM, or (for children of `launch-simple`) when the parent goes away.

use anyhow::Context;
use std::io::Read;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A multi-threaded runtime for a daemon.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A token cancelled on SIGINT or SIGTERM, and on end of stdin when `stdin_eof` is set
/// (a parent that holds our stdin open dies → the pipe closes → we stop, so no daemon
/// outlives a killed `launch-simple`). Must be called inside the runtime.
pub fn shutdown_token(stdin_eof: bool) -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("interrupted; shutting down"),
            _ = terminate.recv() => tracing::info!("terminated; shutting down"),
        }
        cancel.cancel();
    });
    if stdin_eof {
        // A plain thread, not tokio's stdin: a blocking read cannot be cancelled, and a
        // runtime waits for its blocking tasks when it shuts down, so a daemon that
        // failed at start-up would hang until its parent closed the pipe.
        let cancel = token.clone();
        std::thread::Builder::new()
            .name("stdin-lifeline".into())
            .spawn(move || {
                let mut buf = [0u8; 64];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                tracing::info!("stdin closed; shutting down");
                cancel.cancel();
            })
            .context("starting the stdin watcher")?;
    }
    Ok(token)
}
