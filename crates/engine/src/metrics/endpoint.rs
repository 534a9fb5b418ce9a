//! The HTTP `/metrics` endpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = shorthorn_prometheus::CONTENT_TYPE;

/// How long in-flight scrapes may take to finish once `shutdown` completes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` (and `HEAD`) on `listener` with the text `render` returns, as
/// [`PROMETHEUS_CONTENT_TYPE`]; other paths get 404. Runs until `shutdown` completes,
/// then lets requests in flight finish (at most 5 s) and returns.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;

    let render = Arc::new(render);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], render()) }
        }),
    );
    // axum wants a 'static shutdown signal; ours may borrow, so relay it.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut server => return result,
        () = &mut shutdown => {}
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
