//! The replica's gRPC control API (`shorthorn.v1.ReplicaControl`): info, snapshot
//! operations, the consistency record, and what a rebuild needs (chunk checksums, a
//! layer's own extents, snapshot reads). Store calls block on disk I/O, so each runs on
//! tokio's blocking pool.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shorthorn_block::{BLOCK_SIZE, ExtentKind, chunk_digest, zero_digest};
use shorthorn_proto::v1::replica_control_server::ReplicaControl;
use shorthorn_proto::v1::{
    ChecksumsRequest, ChecksumsResponse, CloseDataConnectionsRequest, CloseDataConnectionsResponse,
    ConsistencyRecord as RecordMessage, GetConsistencyRequest, LayerExtentsRequest,
    LayerExtentsResponse, ReadSnapshotRequest, ReadSnapshotResponse, SetConsistencyResponse,
};
use shorthorn_proto::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, ExpandRequest, ExpandResponse, Layer,
    ListSnapshotsRequest, ListSnapshotsResponse, PurgeSnapshotsRequest, PurgeSnapshotsResponse,
    RemoveSnapshotRequest, RemoveSnapshotResponse, ReplicaInfo, ReplicaInfoRequest,
    RevertSnapshotRequest, RevertSnapshotResponse,
};
use shorthorn_store::{
    ConsistencyFile, ConsistencyRecord, SnapshotKind, SnapshotView, Store, StoreError,
};
use shorthorn_wire::ConnectionFence;
use tonic::{Request, Response, Status};

/// Largest chunk a checksum request may use, and most chunks per request.
const MAX_CHECKSUM_CHUNK: u64 = 16 << 20;
const MAX_CHECKSUM_CHUNKS: u64 = 1 << 16;
/// Largest snapshot read (stays well under gRPC's 4 MiB message limit).
const MAX_SNAPSHOT_READ: u64 = 2 << 20;

/// Serves the control API of one replica.
pub struct ReplicaControlService {
    store: Arc<Store>,
    data_addresses: Vec<String>,
    record: Arc<Mutex<ConsistencyRecord>>,
    /// The last snapshot view opened for checksums or reads: a rebuild asks for many
    /// ranges of one snapshot, and building a view's map each time would cost a scan.
    view: Arc<Mutex<Option<Arc<SnapshotView>>>>,
    /// Closes the data connections of an earlier engine session.
    fence: ConnectionFence,
}

impl ReplicaControlService {
    /// Controls `store`, reporting `data_addresses` as where its data path listens and
    /// `record` (already loaded from the directory) as its consistency record; `fence`
    /// closes the data path's connections on request.
    pub fn new(
        store: Arc<Store>,
        data_addresses: Vec<String>,
        record: ConsistencyRecord,
        fence: ConnectionFence,
    ) -> Self {
        ReplicaControlService {
            store,
            data_addresses,
            record: Arc::new(Mutex::new(record)),
            view: Arc::new(Mutex::new(None)),
            fence,
        }
    }

    /// Runs `work` on the blocking pool with a view of snapshot `name`, reusing the
    /// cached one when it is of the same snapshot.
    async fn with_view<T, F>(&self, name: String, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&SnapshotView) -> Result<T, StoreError> + Send + 'static,
    {
        let cache = self.view.clone();
        self.run(move |store| {
            let cached = lock(&cache).clone().filter(|v| v.name() == name);
            let view = match cached {
                Some(view) => view,
                None => {
                    let view = Arc::new(store.snapshot_view(&name)?);
                    *lock(&cache) = Some(view.clone());
                    view
                }
            };
            work(&view)
        })
        .await
    }

    fn forget_view(&self) {
        *lock(&self.view) = None;
    }

    async fn run<T, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| Status::internal(format!("store task failed: {e}")))?
            .map_err(status_of)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks a checksum request's shape; returns the number of chunks.
fn checksum_chunks(request: &ChecksumsRequest) -> Result<u64, Status> {
    let chunk = request.chunk_size;
    if chunk == 0 || chunk % BLOCK_SIZE != 0 || chunk > MAX_CHECKSUM_CHUNK {
        return Err(Status::invalid_argument(format!(
            "chunk size {chunk} must be a multiple of {BLOCK_SIZE} up to {MAX_CHECKSUM_CHUNK}"
        )));
    }
    let chunks = request.length.div_ceil(chunk);
    if chunks > MAX_CHECKSUM_CHUNKS {
        return Err(Status::invalid_argument(format!(
            "{chunks} chunks in one request; at most {MAX_CHECKSUM_CHUNKS}"
        )));
    }
    Ok(chunks)
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "chunks are at most MAX_CHECKSUM_CHUNK bytes (checked by checksum_chunks)"
)]
/// blake3 digests of consecutive chunks of `[offset, offset + length)`. A chunk that
/// `status` reports as all zeros is hashed without reading it, so holes cost nothing
/// and a hole and written zeros compare equal.
fn chunk_digests(
    offset: u64,
    length: u64,
    chunk: u64,
    status: impl Fn(u64, u64) -> Result<Vec<shorthorn_block::Extent>, StoreError>,
    read: impl Fn(u64, &mut [u8]) -> Result<(), StoreError>,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut digests = Vec::new();
    let mut zero_digests: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut buffer = Vec::new();
    let mut at = offset;
    let end = offset + length;
    while at < end {
        let len = chunk.min(end - at);
        let all_zero = status(at, len)?
            .iter()
            .all(|extent| extent.kind == ExtentKind::Zero);
        let digest = if all_zero {
            zero_digests
                .entry(len)
                .or_insert_with(|| zero_digest(len))
                .clone()
        } else {
            buffer.resize(len as usize, 0);
            read(at, &mut buffer)?;
            chunk_digest(&buffer)
        };
        digests.push(digest);
        at += len;
    }
    Ok(digests)
}

/// Maps store errors to gRPC codes a client can act on; the message keeps the context.
fn status_of(error: StoreError) -> Status {
    let message = error.to_string();
    match error {
        StoreError::InvalidName { .. }
        | StoreError::InvalidLabel { .. }
        | StoreError::InvalidSize { .. }
        | StoreError::OutOfRange { .. } => Status::invalid_argument(message),
        StoreError::SnapshotNotFound(_) => Status::not_found(message),
        StoreError::SnapshotExists(_) => Status::already_exists(message),
        StoreError::SnapshotRemoved(_) | StoreError::TooManyLayers(_) => {
            Status::failed_precondition(message)
        }
        e if e.is_no_space() => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

#[tonic::async_trait]
impl ReplicaControl for ReplicaControlService {
    async fn info(&self, _: Request<ReplicaInfoRequest>) -> Result<Response<ReplicaInfo>, Status> {
        let data_addresses = self.data_addresses.clone();
        let info = self
            .run(move |store| {
                let chain = store
                    .layers()?
                    .into_iter()
                    .filter(|l| l.in_chain)
                    .filter_map(|l| l.name)
                    .collect();
                Ok(ReplicaInfo {
                    volume: store.name(),
                    size: store.size(),
                    directory: store.dir().display().to_string(),
                    chain,
                    data_addresses,
                    map_extents: store.map_extents() as u64,
                })
            })
            .await?;
        Ok(Response::new(info))
    }

    async fn list_snapshots(
        &self,
        _: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let layers = self.run(Store::layers).await?;
        Ok(Response::new(ListSnapshotsResponse {
            layers: layers.into_iter().map(Layer::from).collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let request = request.into_inner();
        let kind = if request.system {
            SnapshotKind::System
        } else {
            SnapshotKind::User
        };
        let labels: BTreeMap<String, String> = request.labels.into_iter().collect();
        self.run(move |store| store.snapshot(&request.name, kind, labels))
            .await?;
        Ok(Response::new(CreateSnapshotResponse {}))
    }

    async fn remove_snapshot(
        &self,
        request: Request<RemoveSnapshotRequest>,
    ) -> Result<Response<RemoveSnapshotResponse>, Status> {
        let name = request.into_inner().name;
        self.forget_view();
        self.run(move |store| store.remove_snapshot(&name)).await?;
        Ok(Response::new(RemoveSnapshotResponse {}))
    }

    async fn revert_snapshot(
        &self,
        request: Request<RevertSnapshotRequest>,
    ) -> Result<Response<RevertSnapshotResponse>, Status> {
        let name = request.into_inner().name;
        self.run(move |store| store.revert(&name)).await?;
        Ok(Response::new(RevertSnapshotResponse {}))
    }

    async fn purge_snapshots(
        &self,
        _: Request<PurgeSnapshotsRequest>,
    ) -> Result<Response<PurgeSnapshotsResponse>, Status> {
        self.forget_view();
        let report = self.run(Store::purge).await?;
        Ok(Response::new(report.into()))
    }

    async fn expand(
        &self,
        request: Request<ExpandRequest>,
    ) -> Result<Response<ExpandResponse>, Status> {
        let size = request.into_inner().size;
        self.run(move |store| store.expand(size)).await?;
        Ok(Response::new(ExpandResponse {}))
    }

    async fn get_consistency(
        &self,
        _: Request<GetConsistencyRequest>,
    ) -> Result<Response<RecordMessage>, Status> {
        Ok(Response::new(lock(&self.record).clone().into()))
    }

    async fn set_consistency(
        &self,
        request: Request<RecordMessage>,
    ) -> Result<Response<SetConsistencyResponse>, Status> {
        let request = request.into_inner();
        let record = self.record.clone();
        self.run(move |store| {
            let mut current = lock(&record);
            let updated = ConsistencyRecord {
                epoch: request.epoch,
                members: request.members,
                region_size: request.region_size,
                dirty_regions: request.dirty_regions,
                clean: request.clean,
                ..current.clone()
            };
            updated.save(store.dir())?;
            *current = updated;
            Ok(())
        })
        .await?;
        Ok(Response::new(SetConsistencyResponse {}))
    }

    async fn checksums(
        &self,
        request: Request<ChecksumsRequest>,
    ) -> Result<Response<ChecksumsResponse>, Status> {
        let request = request.into_inner();
        checksum_chunks(&request)?;
        let (offset, length, chunk) = (request.offset, request.length, request.chunk_size);
        let digests = if request.snapshot.is_empty() {
            self.run(move |store| {
                chunk_digests(
                    offset,
                    length,
                    chunk,
                    |at, len| store.block_status(at, len),
                    |at, buf| store.read(at, buf),
                )
            })
            .await?
        } else {
            self.with_view(request.snapshot, move |view| {
                chunk_digests(
                    offset,
                    length,
                    chunk,
                    |at, len| view.block_status(at, len),
                    |at, buf| view.read(at, buf),
                )
            })
            .await?
        };
        Ok(Response::new(ChecksumsResponse { digests }))
    }

    async fn layer_extents(
        &self,
        request: Request<LayerExtentsRequest>,
    ) -> Result<Response<LayerExtentsResponse>, Status> {
        let snapshot = request.into_inner().snapshot;
        let extents = self
            .run(move |store| {
                store.layer_extents((!snapshot.is_empty()).then_some(snapshot.as_str()))
            })
            .await?;
        Ok(Response::new(LayerExtentsResponse {
            offsets: extents.iter().map(|e| e.0).collect(),
            lengths: extents.iter().map(|e| e.1).collect(),
        }))
    }

    async fn close_data_connections(
        &self,
        _request: Request<CloseDataConnectionsRequest>,
    ) -> Result<Response<CloseDataConnectionsResponse>, Status> {
        let closed = self.fence.close_all().await;
        Ok(Response::new(CloseDataConnectionsResponse {
            closed: closed as u64,
        }))
    }

    async fn read_snapshot(
        &self,
        request: Request<ReadSnapshotRequest>,
    ) -> Result<Response<ReadSnapshotResponse>, Status> {
        let request = request.into_inner();
        if request.length > MAX_SNAPSHOT_READ {
            return Err(Status::invalid_argument(format!(
                "read of {} bytes; at most {MAX_SNAPSHOT_READ} per request",
                request.length
            )));
        }
        let (offset, length) = (request.offset, request.length);
        let data = self
            .with_view(request.snapshot, move |view| {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "at most MAX_SNAPSHOT_READ bytes (checked above)"
                )]
                let mut buf = vec![0; length as usize];
                view.read(offset, &mut buf)?;
                Ok(buf)
            })
            .await?;
        Ok(Response::new(ReadSnapshotResponse { data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(store: &Store, offset: u64, length: u64, chunk: u64) -> Vec<Vec<u8>> {
        chunk_digests(
            offset,
            length,
            chunk,
            |at, len| store.block_status(at, len),
            |at, buf| store.read(at, buf),
        )
        .unwrap()
    }

    #[test]
    fn holes_and_written_zeros_compare_equal_and_data_differs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), "v", 1 << 20).unwrap();
        store.write(0, &vec![0; 65536]).unwrap();
        store.write(65536 + 100, b"data").unwrap();
        let chunk = 65536;
        let all = digests(&store, 0, 4 * chunk, chunk);
        assert_eq!(all.len(), 4);
        // Chunk 0 holds written zeros, chunks 2 and 3 are holes: equal digests.
        assert_eq!(all[0], all[2]);
        assert_eq!(all[2], all[3]);
        assert_eq!(all[0], chunk_digest(&vec![0; 65536]));
        let mut expected = vec![0; 65536];
        expected[100..104].copy_from_slice(b"data");
        assert_eq!(all[1], chunk_digest(&expected));
        // A short last chunk is hashed over its own length.
        let short = digests(&store, 0, chunk + 4096, chunk);
        assert_eq!(short[1], chunk_digest(&expected[..4096]));
    }

    #[test]
    fn malformed_checksum_requests_are_refused() {
        let request = |chunk_size, length| ChecksumsRequest {
            snapshot: String::new(),
            offset: 0,
            length,
            chunk_size,
        };
        assert!(checksum_chunks(&request(0, 4096)).is_err());
        assert!(checksum_chunks(&request(1000, 4096)).is_err());
        assert!(checksum_chunks(&request(MAX_CHECKSUM_CHUNK * 2, 4096)).is_err());
        assert!(checksum_chunks(&request(4096, 4096 * (MAX_CHECKSUM_CHUNKS + 1))).is_err());
        assert_eq!(checksum_chunks(&request(4096, 8192)).unwrap(), 2);
    }
}
