//! The replicator against real stores wrapped in a fault-injecting replica: acknowledged
//! writes are on every surviving replica, failed replicas go to ERR at once and never
//! serve another read, and overlapping writes leave replicas identical.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use shorthorn_block::{BlockDevice, BlockError, BlockResult, Extent, WriteFlags, ZeroMode};
use shorthorn_engine::{
    ConsistencyRecord, LayerInfo, OpenSlot, PurgeReport, Replica, ReplicaMode, ReplicaOpError,
    Replicator, SnapshotLimits, VolumeState,
};
use shorthorn_store::{SnapshotKind, Store, StoreDevice, StoreError};
use tokio::sync::Notify;

const SIZE: u64 = 1 << 20;

/// A store-backed replica that can be told to fail, to lie on reads, to be slow, or to
/// report failure on its own.
struct TestReplica {
    store: Arc<Store>,
    device: StoreDevice,
    fail_writes: AtomicBool,
    /// Fails consistency record writes only.
    fail_records: AtomicBool,
    /// Random per-request delay bound in microseconds (0: none).
    jitter_us: AtomicU64,
    reads_served: AtomicU64,
    died: Notify,
    dead: AtomicBool,
    record: parking_lot::Mutex<ConsistencyRecord>,
}

impl TestReplica {
    fn new(dir: &std::path::Path) -> Arc<Self> {
        Self::with_size(dir, SIZE)
    }

    fn with_size(dir: &std::path::Path, size: u64) -> Arc<Self> {
        let store = Arc::new(Store::create(dir, "vol", size).unwrap());
        Arc::new(TestReplica {
            device: StoreDevice::new(store.clone()),
            store,
            fail_writes: AtomicBool::new(false),
            fail_records: AtomicBool::new(false),
            jitter_us: AtomicU64::new(0),
            reads_served: AtomicU64::new(0),
            died: Notify::new(),
            dead: AtomicBool::new(false),
            record: parking_lot::Mutex::new(ConsistencyRecord {
                replica_id: dir.display().to_string(),
                ..ConsistencyRecord::default()
            }),
        })
    }

    fn content(&self) -> Vec<u8> {
        let mut buf = vec![0; self.store.size() as usize];
        self.store.read(0, &mut buf).unwrap();
        buf
    }

    async fn jitter(&self) {
        let bound = self.jitter_us.load(Ordering::Relaxed);
        if bound > 0 {
            let us = rand::random::<u64>() % bound;
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }

    fn check_writable(&self) -> BlockResult<()> {
        if self.fail_writes.load(Ordering::Relaxed) || self.dead.load(Ordering::Relaxed) {
            return Err(BlockError::Io("injected failure".into()));
        }
        Ok(())
    }
}

impl BlockDevice for TestReplica {
    fn size(&self) -> u64 {
        self.device.size()
    }
    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        self.jitter().await;
        self.reads_served.fetch_add(1, Ordering::Relaxed);
        self.device.read(offset, len).await
    }
    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        self.jitter().await;
        self.check_writable()?;
        self.device.write(offset, data, flags).await
    }
    async fn flush(&self) -> BlockResult<()> {
        self.check_writable()?;
        self.device.flush().await
    }
    async fn write_zeroes(&self, o: u64, l: u64, m: ZeroMode, f: WriteFlags) -> BlockResult<()> {
        self.jitter().await;
        self.check_writable()?;
        self.device.write_zeroes(o, l, m, f).await
    }
    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.jitter().await;
        self.check_writable()?;
        self.device.trim(offset, len).await
    }
    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        self.device.block_status(offset, len).await
    }
}

impl TestReplica {
    /// Runs a store operation the way a replica's control API would: refusals of bad
    /// requests are rejections, an injected failure or I/O error is a failure.
    fn control<T>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, ReplicaOpError> {
        if self.fail_writes.load(Ordering::Relaxed) {
            return Err(ReplicaOpError::Failed("injected failure".into()));
        }
        op(&self.store).map_err(|e| match e {
            StoreError::SnapshotExists(_)
            | StoreError::SnapshotNotFound(_)
            | StoreError::InvalidName { .. } => ReplicaOpError::Rejected(e.to_string()),
            e => ReplicaOpError::Failed(e.to_string()),
        })
    }
}

impl Replica for TestReplica {
    async fn failed(&self) -> String {
        loop {
            let died = self.died.notified();
            if self.dead.load(Ordering::Relaxed) {
                return "connection lost".into();
            }
            died.await;
        }
    }

    async fn create_snapshot(
        &self,
        name: &str,
        system: bool,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ReplicaOpError> {
        let kind = if system {
            SnapshotKind::System
        } else {
            SnapshotKind::User
        };
        self.control(|s| s.snapshot(name, kind, labels.clone()))
    }

    async fn list_snapshots(&self) -> Result<Vec<LayerInfo>, ReplicaOpError> {
        self.control(Store::layers)
    }

    async fn remove_snapshot(&self, name: &str) -> Result<(), ReplicaOpError> {
        self.control(|s| s.remove_snapshot(name))
    }

    async fn purge_snapshots(&self) -> Result<PurgeReport, ReplicaOpError> {
        self.control(Store::purge)
    }

    async fn revert(&self, name: &str) -> Result<(), ReplicaOpError> {
        self.control(|s| s.revert(name))
    }

    async fn expand(&self, size: u64) -> Result<(), ReplicaOpError> {
        self.control(|s| s.expand(size))
    }

    async fn record(&self) -> Result<ConsistencyRecord, ReplicaOpError> {
        Ok(self.record.lock().clone())
    }

    async fn set_record(&self, record: &ConsistencyRecord) -> Result<(), ReplicaOpError> {
        self.control(|_| Ok(()))?;
        if self.fail_records.load(Ordering::Relaxed) {
            return Err(ReplicaOpError::Failed("injected record failure".into()));
        }
        let mut current = self.record.lock();
        let id = current.replica_id.clone();
        *current = ConsistencyRecord {
            replica_id: id,
            ..record.clone()
        };
        Ok(())
    }

    async fn checksums(
        &self,
        snapshot: Option<&str>,
        offset: u64,
        len: u64,
        chunk: u64,
    ) -> Result<Vec<Vec<u8>>, ReplicaOpError> {
        self.control(|store| {
            let view = snapshot.map(|name| store.snapshot_view(name)).transpose()?;
            let mut digests = Vec::new();
            let mut at = offset;
            while at < offset + len {
                let mut buf = vec![0; chunk.min(offset + len - at) as usize];
                match &view {
                    Some(view) => view.read(at, &mut buf)?,
                    None => store.read(at, &mut buf)?,
                }
                digests.push(shorthorn_block::chunk_digest(&buf));
                at += buf.len() as u64;
            }
            Ok(digests)
        })
    }

    async fn layer_extents(
        &self,
        snapshot: Option<&str>,
    ) -> Result<Vec<(u64, u64)>, ReplicaOpError> {
        self.control(|store| store.layer_extents(snapshot))
    }

    async fn read_snapshot(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, ReplicaOpError> {
        self.control(|store| {
            let mut buf = vec![0; len as usize];
            store.snapshot_view(name)?.read(offset, &mut buf)?;
            Ok(Bytes::from(buf))
        })
    }
}

struct Volume {
    _dirs: Vec<tempfile::TempDir>,
    replicas: Vec<Arc<TestReplica>>,
    engine: Arc<Replicator<TestReplica>>,
}

fn volume(n: usize) -> Volume {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Vec<_> = dirs.iter().map(|d| TestReplica::new(d.path())).collect();
    let named = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("r{i}"), r.clone()))
        .collect();
    let engine = Arc::new(Replicator::new("vol", SIZE, named).unwrap());
    Volume {
        _dirs: dirs,
        replicas,
        engine,
    }
}

fn pattern(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| seed.wrapping_add(i as u8) | 1)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test]
async fn writes_reach_every_replica_and_reads_spread() {
    let v = volume(3);
    v.engine
        .write(1000, pattern(1, 10_000), WriteFlags::default())
        .await
        .unwrap();
    v.engine.trim(4096, 4096).await.unwrap();
    v.engine.flush().await.unwrap();
    let content = v.replicas[0].content();
    assert!(v.replicas.iter().all(|r| r.content() == content));
    // Concurrent reads spread: reads in flight count against a replica.
    for r in &v.replicas {
        r.jitter_us.store(2_000, Ordering::Relaxed);
    }
    let reads = (0..48).map(|_| v.engine.read(0, 4096));
    for read in futures::future::join_all(reads).await {
        read.unwrap();
    }
    let served: Vec<u64> = v
        .replicas
        .iter()
        .map(|r| r.reads_served.load(Ordering::Relaxed))
        .collect();
    assert!(served.iter().all(|&n| n > 0), "{served:?}");
    assert_eq!(served.iter().sum::<u64>(), 48);
    assert_eq!(v.engine.state(), VolumeState::Healthy);
}

#[tokio::test]
async fn reads_avoid_a_slow_replica_but_keep_measuring_it() {
    let v = volume(3);
    v.engine
        .write(0, pattern(3, 4096), WriteFlags::default())
        .await
        .unwrap();
    // Replica 0 answers in up to 20 ms, the others at once.
    v.replicas[0].jitter_us.store(20_000, Ordering::Relaxed);
    for _ in 0..96 {
        assert_eq!(v.engine.read(0, 4096).await.unwrap(), pattern(3, 4096));
    }
    let served: Vec<u64> = v
        .replicas
        .iter()
        .map(|r| r.reads_served.load(Ordering::Relaxed))
        .collect();
    // Round robin would send it 32; it gets the probes (one read in 16, spread over
    // the three) and the first reads before its latency is known.
    assert!(served[0] <= 8, "the slow replica served {served:?}");
    assert!(
        served[0] >= 1,
        "the slow replica is never measured: {served:?}"
    );
}

#[tokio::test]
async fn a_failing_replica_goes_err_and_never_serves_reads_again() {
    let v = volume(3);
    // The first write records region 0 dirty; the failure is then the write's own.
    v.engine
        .write(0, pattern(6, 8192), WriteFlags::default())
        .await
        .unwrap();
    v.replicas[1].fail_writes.store(true, Ordering::Relaxed);
    v.engine
        .write(0, pattern(7, 8192), WriteFlags::default())
        .await
        .unwrap();
    let status = v.engine.status();
    assert_eq!(status[1].mode, ReplicaMode::ERR);
    assert!(
        status[1]
            .error
            .as_deref()
            .unwrap()
            .contains("write at offset 0 length 8192")
    );
    assert_eq!(v.engine.state(), VolumeState::Degraded);
    let served = v.replicas[1].reads_served.load(Ordering::Relaxed);
    for _ in 0..10 {
        assert_eq!(v.engine.read(0, 8192).await.unwrap(), pattern(7, 8192));
    }
    assert_eq!(v.replicas[1].reads_served.load(Ordering::Relaxed), served);
    // Even when it recovers, it stays in ERR: it missed a write.
    v.replicas[1].fail_writes.store(false, Ordering::Relaxed);
    v.engine
        .write(0, pattern(8, 10), WriteFlags::default())
        .await
        .unwrap();
    assert_eq!(v.engine.status()[1].mode, ReplicaMode::ERR);
}

#[tokio::test]
async fn with_no_rw_replica_io_fails_instead_of_inventing_data() {
    let v = volume(2);
    for r in &v.replicas {
        r.fail_writes.store(true, Ordering::Relaxed);
    }
    assert!(
        v.engine
            .write(0, pattern(1, 512), WriteFlags::default())
            .await
            .is_err()
    );
    assert_eq!(v.engine.state(), VolumeState::Faulted);
    let err = v.engine.read(0, 512).await.unwrap_err().to_string();
    assert!(err.contains("no replica in RW mode"), "{err}");
    assert!(v.engine.flush().await.is_err());
}

#[tokio::test]
async fn a_replica_reporting_failure_on_its_own_goes_err() {
    let v = volume(2);
    v.engine.watch_failures();
    v.replicas[0].dead.store(true, Ordering::Relaxed);
    v.replicas[0].died.notify_waiters();
    for _ in 0..100 {
        if v.engine.status()[0].mode == ReplicaMode::ERR {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(v.engine.status()[0].mode, ReplicaMode::ERR);
    assert_eq!(
        v.engine.status()[0].error.as_deref(),
        Some("connection lost")
    );
}

#[tokio::test]
async fn requests_out_of_range_fail_without_failing_replicas() {
    let v = volume(2);
    assert!(matches!(
        v.engine
            .write(SIZE - 1, pattern(1, 2), WriteFlags::default())
            .await,
        Err(BlockError::OutOfRange { .. })
    ));
    assert!(v.engine.read(SIZE, 1).await.is_err());
    assert_eq!(v.engine.state(), VolumeState::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_concurrent_writes_leave_replicas_identical() {
    let v = volume(3);
    for r in &v.replicas {
        r.jitter_us.store(300, Ordering::Relaxed);
    }
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let engine = v.engine.clone();
        tasks.push(tokio::spawn(async move {
            // Unaligned, overlapping ranges in a 64 KiB window.
            let offset = (i * 997) % 60_000;
            engine
                .write(offset, pattern(i as u8, 5000), WriteFlags::default())
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let content = v.replicas[0].content();
    assert!(
        v.replicas.iter().all(|r| r.content() == content),
        "replicas diverged"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: u64, seed: u8 },
    Zero { offset: u64, len: u64 },
    Fail { replica: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SIZE - 1, 1..20_000u64, any::<u8>()).prop_map(|(offset, len, seed)| Op::Write {
            offset, len: len.min(SIZE - offset), seed
        }),
        2 => (0..SIZE - 1, 1..20_000u64).prop_map(|(offset, len)| Op::Zero { offset, len: len.min(SIZE - offset) }),
        1 => (0..3usize).prop_map(|replica| Op::Fail { replica }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Every acknowledged write is on every replica still in RW, and reads return it.
    #[test]
    fn acknowledged_writes_are_on_every_rw_replica(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let v = volume(3);
            let mut model = vec![0u8; SIZE as usize];
            for op in ops {
                match op {
                    Op::Write { offset, len, seed } => {
                        let data = pattern(seed, len as usize);
                        if v.engine.write(offset, data.clone(), WriteFlags::default()).await.is_ok() {
                            model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
                        }
                    }
                    Op::Zero { offset, len } => {
                        if v.engine.write_zeroes(offset, len, ZeroMode::MayUnmap, WriteFlags::default()).await.is_ok() {
                            model[offset as usize..(offset + len) as usize].fill(0);
                        }
                    }
                    Op::Fail { replica } => v.replicas[replica].fail_writes.store(true, Ordering::Relaxed),
                }
            }
            let status = v.engine.status();
            for (replica, status) in v.replicas.iter().zip(&status) {
                if status.mode == ReplicaMode::RW {
                    assert!(replica.content() == model, "RW replica {} differs from the acknowledged writes", status.address);
                }
            }
            if v.engine.state() != VolumeState::Faulted {
                assert!(v.engine.read(0, SIZE).await.unwrap() == model);
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_under_writes_hold_the_same_content_on_every_replica() {
    let v = volume(3);
    for r in &v.replicas {
        r.jitter_us.store(200, Ordering::Relaxed);
    }
    let writer = {
        let engine = v.engine.clone();
        tokio::spawn(async move {
            for i in 0..300u64 {
                let offset = (i * 7919) % (SIZE - 5000);
                engine
                    .write(offset, pattern(i as u8, 5000), WriteFlags::default())
                    .await
                    .unwrap();
            }
        })
    };
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        v.engine
            .snapshot(
                &format!("s{i}"),
                false,
                &BTreeMap::new(),
                SnapshotLimits::default(),
            )
            .await
            .unwrap();
    }
    writer.await.unwrap();
    // Each snapshot must hold identical bytes on every replica: I/O was drained for it.
    for i in 0..5 {
        let mut contents = Vec::new();
        for r in &v.replicas {
            let copy = tempfile::tempdir().unwrap();
            std::process::Command::new("cp")
                .args(["-a", "--sparse=auto"])
                .arg(format!("{}/.", r.store.dir().display()))
                .arg(copy.path())
                .status()
                .unwrap();
            let store = Store::open(copy.path()).unwrap();
            store.revert(&format!("s{i}")).unwrap();
            let mut buf = vec![0; SIZE as usize];
            store.read(0, &mut buf).unwrap();
            contents.push(buf);
        }
        assert!(
            contents.windows(2).all(|w| w[0] == w[1]),
            "snapshot s{i} differs between replicas"
        );
    }
}

#[tokio::test]
async fn snapshot_requests_that_are_wrong_fail_without_failing_replicas() {
    let v = volume(2);
    let limits = SnapshotLimits {
        max_count: 2,
        max_total_bytes: 0,
    };
    let none = BTreeMap::new();
    v.engine.snapshot("a", false, &none, limits).await.unwrap();
    assert!(
        v.engine
            .snapshot("a", false, &none, limits)
            .await
            .unwrap_err()
            .to_string()
            .contains("already exists")
    );
    assert!(
        v.engine
            .snapshot("../x", false, &none, limits)
            .await
            .unwrap_err()
            .to_string()
            .contains("invalid name")
    );
    v.engine.snapshot("b", false, &none, limits).await.unwrap();
    let err = v
        .engine
        .snapshot("c", false, &none, limits)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("limit"), "{err}");
    assert!(v.engine.revert("nope").await.is_err());
    assert_eq!(v.engine.state(), VolumeState::Healthy);
}

#[tokio::test]
async fn a_replica_failing_a_snapshot_goes_err_and_the_volume_goes_on() {
    let v = volume(3);
    v.replicas[2].fail_writes.store(true, Ordering::Relaxed);
    v.engine
        .snapshot("s", false, &BTreeMap::new(), SnapshotLimits::default())
        .await
        .unwrap();
    assert_eq!(v.engine.status()[2].mode, ReplicaMode::ERR);
    v.engine
        .write(0, pattern(3, 100), WriteFlags::default())
        .await
        .unwrap();
    assert_eq!(v.engine.read(0, 100).await.unwrap(), pattern(3, 100));
}

#[tokio::test]
async fn expansion_grows_every_replica_and_the_volume() {
    let v = volume(2);
    v.engine.expand(2 * SIZE).await.unwrap();
    assert_eq!(v.engine.size(), 2 * SIZE);
    v.engine
        .write(SIZE + 10, pattern(1, 10), WriteFlags::default())
        .await
        .unwrap();
    assert!(v.replicas.iter().all(|r| r.store.size() == 2 * SIZE));
    assert!(v.engine.expand(SIZE).await.is_err(), "shrinking is refused");
    assert!(
        v.engine.expand(2 * SIZE + 1).await.is_err(),
        "unaligned sizes are refused"
    );
}

/// A volume of `size` bytes on `n` replicas, each identified as `r{i}`.
fn sized_volume(n: usize, size: u64) -> Volume {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Vec<_> = dirs
        .iter()
        .map(|d| TestReplica::with_size(d.path(), size))
        .collect();
    let named = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("r{i}"), r.clone()))
        .collect();
    let engine = Arc::new(Replicator::new("vol", size, named).unwrap());
    Volume {
        _dirs: dirs,
        replicas,
        engine,
    }
}

/// Unaligned writes, trims and write-zeroes at random places until `stop`.
async fn churn(engine: Arc<Replicator<TestReplica>>, size: u64, seed: u64, ops: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..ops {
        let len = rng.random_range(1..40_000u64);
        let offset = rng.random_range(0..size - len);
        match i % 5 {
            0 => engine.trim(offset, len).await.unwrap(),
            1 => engine
                .write_zeroes(offset, len, ZeroMode::MayUnmap, WriteFlags::default())
                .await
                .unwrap(),
            _ => engine
                .write(
                    offset,
                    pattern(rng.random(), len as usize),
                    WriteFlags::default(),
                )
                .await
                .unwrap(),
        }
        if i % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_replica_rebuilt_under_unaligned_writes_and_trims_matches_with_its_snapshots() {
    const BIG: u64 = 12 << 20;
    let v = sized_volume(2, BIG);
    churn(v.engine.clone(), BIG, 1, 200).await;
    v.engine
        .snapshot("s1", false, &BTreeMap::new(), SnapshotLimits::default())
        .await
        .unwrap();
    churn(v.engine.clone(), BIG, 2, 200).await;

    let dir = tempfile::tempdir().unwrap();
    let target = TestReplica::with_size(dir.path(), BIG);
    let writer = tokio::spawn(churn(v.engine.clone(), BIG, 3, 600));
    let figures = v
        .engine
        .rebuild("r2", "r2-id", target.clone(), 0)
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(figures.copied_bytes > 0);
    assert_eq!(v.engine.status()[2].mode, ReplicaMode::RW);
    let expected = v.replicas[0].content();
    assert!(v.replicas[1].content() == expected, "replica 1 differs");
    assert!(target.content() == expected, "the rebuilt replica differs");
    // The snapshot was rebuilt too, with the same content.
    let view = |store: &Store| {
        let mut buf = vec![0; BIG as usize];
        store
            .snapshot_view("s1")
            .unwrap()
            .read(0, &mut buf)
            .unwrap();
        buf
    };
    assert!(
        view(&target.store) == view(&v.replicas[0].store),
        "snapshot s1 differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_back_after_missing_writes_copies_only_the_regions_it_missed() {
    const BIG: u64 = 32 << 20;
    let v = sized_volume(3, BIG);
    v.engine
        .write(0, pattern(1, BIG as usize), WriteFlags::default())
        .await
        .unwrap();
    // A flush a while after the writes clears the dirty regions: they are durable on
    // every replica, so a replica failing later cannot have missed them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.engine.flush().await.unwrap();
    v.replicas[2].fail_writes.store(true, Ordering::Relaxed);
    // Missed while away: one 4 KiB write in one region.
    v.engine
        .write(20 << 20, pattern(2, 4096), WriteFlags::default())
        .await
        .unwrap();
    assert_eq!(v.engine.status()[2].mode, ReplicaMode::ERR);
    v.replicas[2].fail_writes.store(false, Ordering::Relaxed);
    let figures = v
        .engine
        .rebuild("r2", "r2", v.replicas[2].clone(), 0)
        .await
        .unwrap();
    assert_eq!(v.engine.status()[2].mode, ReplicaMode::RW);
    assert_eq!(
        figures.copied_bytes,
        shorthorn_engine::CHUNK_SIZE,
        "{figures:?}"
    );
    assert!(
        figures.done_bytes <= shorthorn_engine::REGION_SIZE,
        "{figures:?}"
    );
    assert!(v.replicas[2].content() == v.replicas[0].content());
}

#[tokio::test]
async fn a_second_rebuild_of_a_healthy_replica_is_refused() {
    let v = volume(2);
    let error = v
        .engine
        .rebuild("r1", "r1", v.replicas[1].clone(), 0)
        .await
        .unwrap_err();
    assert!(error.contains("already in volume"), "{error}");
}

fn candidate(
    address: &str,
    replica: &Arc<TestReplica>,
    epoch: u64,
    members: &[&str],
    dirty: &[u64],
) -> shorthorn_engine::Candidate<TestReplica> {
    let mut record = replica.record.lock();
    record.epoch = epoch;
    record.members = members.iter().map(|m| (*m).to_owned()).collect();
    record.region_size = shorthorn_engine::REGION_SIZE;
    record.dirty_regions = dirty.to_vec();
    record.clean = dirty.is_empty();
    shorthorn_engine::Candidate {
        address: address.to_owned(),
        device: replica.clone(),
        record: record.clone(),
    }
}

#[tokio::test]
async fn an_open_after_a_crash_reconciles_dirty_regions_and_keeps_stale_replicas_out() {
    const BIG: u64 = 12 << 20;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Vec<_> = dirs
        .iter()
        .map(|d| TestReplica::with_size(d.path(), BIG))
        .collect();
    let ids: Vec<String> = replicas
        .iter()
        .map(|r| r.record.lock().replica_id.clone())
        .collect();
    for r in &replicas {
        r.store.write(0, &pattern(1, BIG as usize)).unwrap();
    }
    // The crash left a write on replica 0 only, in region 1 (listed dirty), and
    // replica 2 was dropped from the members earlier and missed a write in region 2.
    replicas[0]
        .store
        .write((4 << 20) + 100, &pattern(9, 5000))
        .unwrap();
    replicas[0].store.write(8 << 20, &pattern(7, 4096)).unwrap();
    replicas[1].store.write(8 << 20, &pattern(7, 4096)).unwrap();
    let members = [ids[0].as_str(), ids[1].as_str()];
    let candidates = vec![
        candidate("r0", &replicas[0], 6, &members, &[1]),
        candidate("r1", &replicas[1], 6, &members, &[1]),
        candidate("r2", &replicas[2], 5, &[&ids[0], &ids[1], &ids[2]], &[]),
    ];
    let engine = Replicator::open("vol", BIG, candidates, &[], false)
        .await
        .unwrap();
    let status = engine.status();
    assert_eq!(status[0].mode, ReplicaMode::RW);
    assert_eq!(status[1].mode, ReplicaMode::RW);
    assert_eq!(status[2].mode, ReplicaMode::ERR);
    assert!(status[2].error.as_deref().unwrap().contains("stale"));
    assert!(replicas[0].content() == replicas[1].content());
    // The new epoch, without dirty regions, is on both members.
    for r in &replicas[..2] {
        let record = r.record.lock().clone();
        assert_eq!(record.epoch, 7);
        assert!(record.dirty_regions.is_empty());
    }
    // Reads are stable whichever replica serves them.
    let first = engine.read(4 << 20, 8192).await.unwrap();
    for _ in 0..4 {
        assert_eq!(engine.read(4 << 20, 8192).await.unwrap(), first);
    }
}

#[tokio::test]
async fn an_open_without_any_member_needs_salvage() {
    let dir = tempfile::tempdir().unwrap();
    let replica = TestReplica::new(dir.path());
    let refused = Replicator::open(
        "vol",
        SIZE,
        vec![candidate("r0", &replica, 4, &["someone-else"], &[])],
        &[],
        false,
    )
    .await;
    let error = refused.err().unwrap().to_string();
    assert!(error.contains("--salvage"), "{error}");
    let salvaged = Replicator::open(
        "vol",
        SIZE,
        vec![candidate("r0", &replica, 4, &["someone-else"], &[])],
        &[],
        true,
    )
    .await
    .unwrap();
    assert_eq!(salvaged.status()[0].mode, ReplicaMode::RW);
}

/// Custody: a consistency record goes to the replicas that hold the last one first. When
/// none of them can take it, a replica outside the members (WO, being rebuilt) must not
/// get it — it would hold a record newer than any member's, which the open rule could
/// not see past — and the write is not acknowledged.
#[tokio::test]
async fn a_record_no_member_took_never_reaches_a_replica_outside_the_members() {
    const BIG: u64 = 16 << 20;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Vec<Arc<TestReplica>> = dirs
        .iter()
        .map(|d| TestReplica::with_size(d.path(), BIG))
        .collect();
    let slot = |i: usize, mode: ReplicaMode| OpenSlot {
        address: format!("r{i}"),
        id: replicas[i].record.lock().replica_id.clone(),
        device: replicas[i].clone(),
        mode,
        error: None,
    };
    let slots = vec![
        slot(0, ReplicaMode::RW),
        slot(1, ReplicaMode::RW),
        slot(2, ReplicaMode::WO),
    ];
    let engine = Replicator::with_slots("vol", BIG, slots, 5).unwrap();
    let write =
        |offset: u64| engine.write(offset, Bytes::from(vec![1; 4096]), WriteFlags::default());
    write(0).await.unwrap();
    let taken = replicas[2].record.lock().clone();
    assert_eq!(
        taken.epoch, 5,
        "the WO replica takes records after the members"
    );
    // Both members fail to take the next record (a new dirty region needs one), while
    // the WO replica would take it.
    for member in &replicas[..2] {
        member.fail_records.store(true, Ordering::Relaxed);
    }
    let error = write(8 << 20)
        .await
        .expect_err("acknowledged with no member left");
    eprintln!("refused: {error}");
    assert_eq!(
        *replicas[2].record.lock(),
        taken,
        "a record no member holds reached the WO replica"
    );
    let status = engine.status();
    assert!(
        status[..2].iter().all(|s| s.mode == ReplicaMode::ERR),
        "{status:?}"
    );
}

/// A replica that answers writes far slower than the others leaves the write set after
/// the policy's window (the volume carries on, degraded); with one RW replica left, a
/// slow one is never taken out.
#[tokio::test]
async fn a_replica_far_slower_than_the_others_leaves_the_write_set_but_never_the_last() {
    let v = volume(2);
    v.engine
        .set_slow_replica_policy(shorthorn_engine::SlowReplicaPolicy {
            ratio: 8,
            window: Duration::from_millis(200),
            floor: Duration::from_millis(2),
        });
    // Replica 1 takes up to 40 ms per write, replica 0 none.
    v.replicas[1].jitter_us.store(40_000, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let mut writes: u8 = 0;
    while v.engine.status()[1].mode == ReplicaMode::RW {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the slow replica still takes writes: {:?}",
            v.engine.status()
        );
        v.engine
            .write(0, pattern(writes, 4096), WriteFlags::default())
            .await
            .unwrap();
        writes = writes.wrapping_add(1);
    }
    let status = v.engine.status();
    assert!(
        status[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("too slow")),
        "{status:?}"
    );
    assert_eq!(status[0].mode, ReplicaMode::RW);
    assert_eq!(v.engine.state(), VolumeState::Degraded);
    // Every acknowledged write is on the replica left; the last one reads back.
    assert_eq!(
        v.engine.read(0, 4096).await.unwrap(),
        pattern(writes.wrapping_sub(1), 4096)
    );
    // The one left, however slow, stays.
    v.replicas[0].jitter_us.store(40_000, Ordering::Relaxed);
    for i in 0..20 {
        v.engine
            .write(4096, pattern(i, 4096), WriteFlags::default())
            .await
            .unwrap();
    }
    assert_eq!(v.engine.status()[0].mode, ReplicaMode::RW);
    eprintln!("ejected after {writes} writes in {:?}", started.elapsed());
}
