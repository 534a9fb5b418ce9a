//! Reaching replicas: their control API first (is it this volume, at this size? fence
//! off earlier connections), then their data path, over a unix socket when the replica
//! is on this host.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shorthorn_proto::v1::replica_control_client::ReplicaControlClient;
use shorthorn_proto::v1::{CloseDataConnectionsRequest, ReplicaInfoRequest};
use shorthorn_wire::{ClientOptions, ReplicaAddr, WireClient};
use tonic::transport::Endpoint;

use crate::remote::RemoteReplica;
use crate::replica::Replica;
use crate::replicator::recovery::Candidate;

/// How long the engine waits for a replica's control API at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest control answer accepted (a fragmented layer's extent list can be large).
const MAX_CONTROL_MESSAGE: usize = 256 << 20;

/// Connects the engine to replicas: at start, and later for `replica add` and salvage.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    volume: String,
    client: ClientOptions,
}

impl Connector {
    /// Connects replicas of `volume` with these client options.
    pub(crate) fn new(volume: String, client: ClientOptions) -> Self {
        Connector { volume, client }
    }

    /// Connects to replica `addr` of a volume of `size` bytes and reads its record.
    pub(crate) async fn connect(
        &self,
        addr: &ReplicaAddr,
        size: u64,
    ) -> anyhow::Result<Candidate<RemoteReplica>> {
        let replica = connect_replica(&self.volume, size, self.client, addr).await?;
        let record = replica
            .record()
            .await
            .with_context(|| format!("replica {addr}: reading its consistency record"))?;
        Ok(Candidate {
            address: addr.to_string(),
            device: Arc::new(replica),
            record,
        })
    }
}

/// Connects to one replica: checks through its control API that it holds this volume
/// at this size, then opens the data path (its unix socket when it is on this host).
async fn connect_replica(
    volume: &str,
    size: u64,
    client: ClientOptions,
    addr: &ReplicaAddr,
) -> anyhow::Result<RemoteReplica> {
    let control_url = addr.control_url()?;
    let endpoint = Endpoint::from_shared(control_url.clone())
        .with_context(|| format!("replica {addr}: bad control address"))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.with_context(|| {
        format!("replica {addr}: cannot reach its control API at {control_url}")
    })?;
    let mut control =
        ReplicaControlClient::new(channel).max_decoding_message_size(MAX_CONTROL_MESSAGE);
    let info = tokio::time::timeout(CONNECT_TIMEOUT, control.info(ReplicaInfoRequest {}))
        .await
        .with_context(|| format!("replica {addr}: no answer from its control API"))?
        .with_context(|| format!("replica {addr}: control API refused Info"))?
        .into_inner();
    if info.volume != volume {
        bail!(
            "replica {addr} holds volume {:?}, not {volume:?}; start it with --volume {volume}",
            info.volume,
        );
    }
    if info.size != size {
        bail!(
            "replica {addr} has {} bytes, but volume {volume} has {size}",
            info.size,
        );
    }
    // Connections of an earlier session (this engine before a network cut, or an engine
    // that died) end before ours begin: their late frames must not land on what a
    // rebuild copies.
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        control.close_data_connections(CloseDataConnectionsRequest {}),
    )
    .await
    {
        Ok(Ok(closed)) if closed.get_ref().closed > 0 => {
            tracing::info!(replica = %addr, closed = closed.get_ref().closed, "fenced off earlier data connections");
        }
        Ok(Ok(_)) => {}
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            tracing::warn!(replica = %addr, "replica cannot fence earlier data connections (older version)");
        }
        Ok(Err(status)) => {
            return Err(anyhow::anyhow!("{}", status.message()))
                .with_context(|| format!("replica {addr}: closing earlier data connections"));
        }
        Err(_) => bail!("replica {addr}: no answer when closing earlier data connections"),
    }
    let data = local_socket(addr, &info.data_addresses).unwrap_or_else(|| addr.clone());
    let client = WireClient::connect(&data, client)
        .await
        .with_context(|| format!("replica {addr}: connecting to its data path {data}"))?;
    tracing::info!(volume = %volume, replica = %addr, data = %data, "replica connected");
    Ok(RemoteReplica::new(client, control))
}

/// The replica's unix socket, if it advertises one and sits on this host: its TCP
/// address is loopback or one of this host's own (in this network namespace, so a
/// replica in another namespace, whose socket file the engine could also see, is still
/// reached over the network, links and their cuts included).
fn local_socket(addr: &ReplicaAddr, advertised: &[String]) -> Option<ReplicaAddr> {
    let ReplicaAddr::Tcp { host, .. } = addr else {
        return None;
    };
    let local = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(is_own_address);
    if !local {
        return None;
    }
    advertised
        .iter()
        .filter_map(|a| a.parse::<ReplicaAddr>().ok())
        .find(|a| matches!(a, ReplicaAddr::Unix(path) if path.exists()))
}

/// Whether `ip` is an address of this host: loopback, or one a socket can bind to here
/// (binding an address no interface of this namespace holds fails).
fn is_own_address(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::TcpListener::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unix_socket_is_used_only_for_a_replica_on_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("data.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let advertised = [
            "tcp://192.0.2.7:9502".to_string(),
            format!("unix://{}", socket.display()),
        ];
        let unix = ReplicaAddr::unix(socket.clone());
        let loopback: ReplicaAddr = "tcp://127.0.0.1:9502".parse().unwrap();
        assert_eq!(local_socket(&loopback, &advertised), Some(unix));
        // 192.0.2.0/24 (TEST-NET-1) is no interface's here: over the network.
        let remote: ReplicaAddr = "tcp://192.0.2.7:9502".parse().unwrap();
        assert_eq!(local_socket(&remote, &advertised), None);
        // A socket that is gone (another host's path): over the network.
        let gone = [format!("unix://{}", dir.path().join("gone.sock").display())];
        assert_eq!(local_socket(&loopback, &gone), None);
    }
}
