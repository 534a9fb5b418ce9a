//! The gRPC control APIs of Shorthorn's daemons, generated from `proto/shorthorn/v1`.
//! Data never flows through these APIs: block I/O uses the `wire` protocol.

/// Version 1 of the control APIs.
#[allow(missing_docs, clippy::all, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("shorthorn.v1");
}
