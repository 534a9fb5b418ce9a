//! The gRPC control APIs of Shorthorn's daemons, generated from `proto/shorthorn/v1`.
//! Data never flows through these APIs: block I/O uses the `wire` protocol.

mod convert;

/// Version 1 of the control APIs.
#[allow(missing_docs, clippy::all, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("shorthorn.v1");
}

/// The connections a control API serves, from a listener its daemon bound itself (so it
/// can report the address before serving). Small request/reply exchanges must not wait
/// for delayed ACKs, so every accepted socket gets `TCP_NODELAY` — tonic's own setting
/// does not apply to sockets accepted outside it.
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener
            .accept()
            .await
            .and_then(|(stream, _)| stream.set_nodelay(true).map(|()| stream));
        Some((accepted, listener))
    })
}
