//! A control client of an engine, for the reconcilers, backups and recurring jobs.

use anyhow::Context;
use shorthorn_proto::v1::engine_control_client::EngineControlClient;
use tonic::transport::Channel;

/// A connection to an engine's control API.
pub(crate) type EngineClient = EngineControlClient<Channel>;

/// How long an engine RPC may take before the reconciler moves on.
pub(crate) const ENGINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects to the engine control API at `address` (host:port).
pub(crate) async fn connect_engine(address: &str) -> anyhow::Result<EngineClient> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .with_context(|| format!("engine address {address}"))?
        .connect_timeout(ENGINE_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to the engine at {address}"))?;
    Ok(EngineControlClient::new(channel))
}
