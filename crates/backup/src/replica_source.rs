//! Reading a snapshot of a running volume for a backup: from one RW replica, found
//! through the volume's engine, over the replica's control API.

use std::collections::BTreeMap;
use std::time::Duration;

use shorthorn_proto::v1 as pb;
use shorthorn_proto::v1::engine_control_client::EngineControlClient;
use shorthorn_proto::v1::replica_control_client::ReplicaControlClient;
use shorthorn_wire::ReplicaAddr;
use tonic::transport::{Channel, Endpoint};

use crate::create::{SnapshotId, SnapshotSource, SourceInfo};
use crate::error::SourceError;

/// Largest read the replica serves per request.
const READ_PIECE: u64 = 2 << 20;
/// How long connecting to the engine or a replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a snapshot from one RW replica of a running volume.
pub struct ReplicaSource {
    client: ReplicaControlClient<Channel>,
    /// The snapshot, then its ancestors (nearest first), as the replica names them.
    lineage: Vec<String>,
}

impl ReplicaSource {
    /// Finds an RW replica of the engine's volume that has `snapshot`.
    pub async fn open(
        engine: &str,
        snapshot: &str,
    ) -> Result<(ReplicaSource, SourceInfo), SourceError> {
        let uri = if engine.contains("://") {
            engine.to_string()
        } else {
            format!("http://{engine}")
        };
        let channel = Endpoint::from_shared(uri)
            .map_err(|source| SourceError::EngineAddress {
                engine: engine.to_string(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|source| SourceError::EngineUnreachable {
                engine: engine.to_string(),
                source,
            })?;
        let info = EngineControlClient::new(channel)
            .info(pb::EngineInfoRequest {})
            .await
            .map_err(|e| SourceError::EngineInfo {
                engine: engine.to_string(),
                source: Box::new(e),
            })?
            .into_inner();
        let replica = info
            .replicas
            .iter()
            .find(|r| r.mode() == pb::ReplicaMode::Rw)
            .ok_or_else(|| SourceError::NoRwReplica {
                volume: info.volume.clone(),
            })?;
        ReplicaSource::open_replica(&replica.address, &info.volume, snapshot).await
    }

    /// Reads `snapshot` of volume `volume` from the replica at `address` itself (a
    /// clone's source, which may run without an engine: a detached volume).
    pub async fn open_replica(
        address: &str,
        volume: &str,
        snapshot: &str,
    ) -> Result<(ReplicaSource, SourceInfo), SourceError> {
        let addr: ReplicaAddr = address
            .parse()
            .map_err(|source| SourceError::ReplicaAddress {
                address: address.to_string(),
                source,
            })?;
        let channel = Endpoint::from_shared(addr.control_url()?)
            .map_err(|source| SourceError::ControlUri {
                addr: addr.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|source| SourceError::ReplicaUnreachable {
                addr: addr.clone(),
                source,
            })?;
        let mut client = ReplicaControlClient::new(channel).max_decoding_message_size(256 << 20);
        let served = client
            .info(pb::ReplicaInfoRequest {})
            .await
            .map_err(|e| SourceError::ReplicaInfo {
                addr: addr.clone(),
                source: Box::new(e),
            })?
            .into_inner()
            .volume;
        if served != volume {
            return Err(SourceError::OtherVolume {
                addr,
                found: served,
                volume: volume.to_string(),
            });
        }
        let layers = client
            .list_snapshots(pb::ListSnapshotsRequest {})
            .await
            .map_err(|e| SourceError::ListSnapshots {
                addr: addr.clone(),
                source: Box::new(e),
            })?
            .into_inner()
            .layers;
        let by_name: BTreeMap<&str, &pb::Layer> = layers
            .iter()
            .filter(|l| !l.is_head)
            .map(|l| (l.name.as_str(), l))
            .collect();
        let Some(&layer) = by_name.get(snapshot) else {
            return Err(SourceError::NoSnapshot {
                volume: volume.to_string(),
                snapshot: snapshot.to_string(),
            });
        };
        let mut lineage = vec![layer];
        while let Some(parent) = by_name.get(lineage[lineage.len() - 1].parent.as_str()) {
            lineage.push(parent);
        }
        let id = |l: &pb::Layer| SnapshotId {
            name: l.name.clone(),
            created: l.created.clone(),
        };
        let source_info = SourceInfo {
            volume: volume.to_string(),
            size: layer.size,
            snapshot: id(layer),
            ancestors: lineage[1..].iter().map(|l| id(l)).collect(),
        };
        let source = ReplicaSource {
            client,
            lineage: lineage.iter().map(|l| l.name.clone()).collect(),
        };
        Ok((source, source_info))
    }
}

impl SnapshotSource for ReplicaSource {
    type Error = SourceError;

    async fn changed_since(&self, since: Option<&str>) -> Result<Vec<(u64, u64)>, SourceError> {
        let mut extents = Vec::new();
        for layer in self
            .lineage
            .iter()
            .take_while(|l| Some(l.as_str()) != since)
        {
            let response = self
                .client
                .clone()
                .layer_extents(pb::LayerExtentsRequest {
                    snapshot: layer.clone(),
                })
                .await
                .map_err(|e| SourceError::Extents {
                    snapshot: layer.clone(),
                    source: Box::new(e),
                })?
                .into_inner();
            extents.extend(response.offsets.into_iter().zip(response.lengths));
        }
        Ok(extents)
    }

    async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
        let snapshot = &self.lineage[0];
        #[allow(clippy::cast_possible_truncation, reason = "one backup block")]
        let mut data = Vec::with_capacity(len as usize);
        let mut at = offset;
        while at < offset + len {
            let piece = READ_PIECE.min(offset + len - at);
            let response = self
                .client
                .clone()
                .read_snapshot(pb::ReadSnapshotRequest {
                    snapshot: snapshot.clone(),
                    offset: at,
                    length: piece,
                })
                .await
                .map_err(|e| SourceError::Read {
                    snapshot: snapshot.clone(),
                    offset: at,
                    source: Box::new(e),
                })?;
            data.extend_from_slice(&response.into_inner().data);
            at += piece;
        }
        Ok(data)
    }
}
