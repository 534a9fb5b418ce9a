//! A replica reached over the network: block I/O over the wire protocol, structural
//! operations over its gRPC control API.

use std::collections::BTreeMap;

use bytes::Bytes;
use shorthorn_block::{BlockDevice, BlockResult, Extent, WriteFlags, ZeroMode};
use shorthorn_proto::v1 as pb;
use shorthorn_proto::v1::replica_control_client::ReplicaControlClient;
use shorthorn_wire::{ReplicaAddr, WireClient};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::replica::{Replica, ReplicaOpError};
use shorthorn_block::{ConsistencyRecord, LayerInfo, PurgeReport};

/// A replica's data and control connections.
pub struct RemoteReplica {
    data: WireClient,
    control: ReplicaControlClient<Channel>,
}

impl RemoteReplica {
    /// Joins a connected data path and control client of the same replica.
    pub fn new(data: WireClient, control: ReplicaControlClient<Channel>) -> Self {
        RemoteReplica { data, control }
    }

    /// Where its data path is connected: its unix socket when it is on this host.
    pub fn data_address(&self) -> &ReplicaAddr {
        self.data.addr()
    }

    fn control(&self) -> ReplicaControlClient<Channel> {
        self.control.clone()
    }
}

/// Requests the replica judged wrong are rejections; anything else is a failure.
fn op_error(status: Status) -> ReplicaOpError {
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition => {
            ReplicaOpError::Rejected(message)
        }
        code => ReplicaOpError::Failed(format!("{code:?}: {message}")),
    }
}

impl BlockDevice for RemoteReplica {
    fn size(&self) -> u64 {
        self.data.size()
    }
    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        self.data.read(offset, len).await
    }
    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        self.data.write(offset, data, flags).await
    }
    async fn flush(&self) -> BlockResult<()> {
        self.data.flush().await
    }
    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        self.data.write_zeroes(offset, len, mode, flags).await
    }
    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.data.trim(offset, len).await
    }
    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        self.data.block_status(offset, len).await
    }
}

impl Replica for RemoteReplica {
    async fn failed(&self) -> String {
        self.data.wait_failed().await
    }

    async fn create_snapshot(
        &self,
        name: &str,
        system: bool,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ReplicaOpError> {
        let request = pb::CreateSnapshotRequest {
            name: name.to_owned(),
            system,
            labels: labels.clone().into_iter().collect(),
        };
        self.control()
            .create_snapshot(request)
            .await
            .map_err(op_error)?;
        Ok(())
    }

    async fn list_snapshots(&self) -> Result<Vec<LayerInfo>, ReplicaOpError> {
        let response = self
            .control()
            .list_snapshots(pb::ListSnapshotsRequest {})
            .await
            .map_err(op_error)?;
        Ok(response
            .into_inner()
            .layers
            .into_iter()
            .map(LayerInfo::from)
            .collect())
    }

    async fn remove_snapshot(&self, name: &str) -> Result<(), ReplicaOpError> {
        let request = pb::RemoveSnapshotRequest {
            name: name.to_owned(),
        };
        self.control()
            .remove_snapshot(request)
            .await
            .map_err(op_error)?;
        Ok(())
    }

    async fn purge_snapshots(&self) -> Result<PurgeReport, ReplicaOpError> {
        let response = self
            .control()
            .purge_snapshots(pb::PurgeSnapshotsRequest {})
            .await
            .map_err(op_error)?;
        Ok(response.into_inner().into())
    }

    async fn revert(&self, name: &str) -> Result<(), ReplicaOpError> {
        let request = pb::RevertSnapshotRequest {
            name: name.to_owned(),
        };
        self.control()
            .revert_snapshot(request)
            .await
            .map_err(op_error)?;
        Ok(())
    }

    async fn expand(&self, size: u64) -> Result<(), ReplicaOpError> {
        self.control()
            .expand(pb::ExpandRequest { size })
            .await
            .map_err(op_error)?;
        self.data
            .refresh_size()
            .await
            .map_err(|e| ReplicaOpError::Failed(format!("reading the new size: {e}")))?;
        Ok(())
    }

    async fn record(&self) -> Result<ConsistencyRecord, ReplicaOpError> {
        let record = self
            .control()
            .get_consistency(pb::GetConsistencyRequest {})
            .await
            .map_err(op_error)?
            .into_inner();
        Ok(record.into())
    }

    async fn set_record(&self, record: &ConsistencyRecord) -> Result<(), ReplicaOpError> {
        let request = pb::ConsistencyRecord::from(record.clone());
        self.control()
            .set_consistency(request)
            .await
            .map_err(op_error)?;
        Ok(())
    }

    async fn checksums(
        &self,
        snapshot: Option<&str>,
        offset: u64,
        len: u64,
        chunk: u64,
    ) -> Result<Vec<Vec<u8>>, ReplicaOpError> {
        let request = pb::ChecksumsRequest {
            snapshot: snapshot.unwrap_or_default().to_owned(),
            offset,
            length: len,
            chunk_size: chunk,
        };
        let response = self.control().checksums(request).await.map_err(op_error)?;
        Ok(response.into_inner().digests)
    }

    async fn layer_extents(
        &self,
        snapshot: Option<&str>,
    ) -> Result<Vec<(u64, u64)>, ReplicaOpError> {
        let request = pb::LayerExtentsRequest {
            snapshot: snapshot.unwrap_or_default().to_owned(),
        };
        let response = self
            .control()
            .layer_extents(request)
            .await
            .map_err(op_error)?
            .into_inner();
        Ok(response.offsets.into_iter().zip(response.lengths).collect())
    }

    async fn read_snapshot(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, ReplicaOpError> {
        let request = pb::ReadSnapshotRequest {
            snapshot: name.to_owned(),
            offset,
            length: len,
        };
        let response = self
            .control()
            .read_snapshot(request)
            .await
            .map_err(op_error)?;
        Ok(Bytes::from(response.into_inner().data))
    }
}
