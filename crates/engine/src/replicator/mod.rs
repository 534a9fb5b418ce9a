//! The replicator: one volume served from N replicas. Writes go to every replica in RW
//! or WO mode and are acknowledged when all of them have it; reads go to one RW replica,
//! the one expected to answer soonest (recent latency times reads in flight). Any error from a replica moves it to ERR at once, before the
//! request that saw the error completes, so no later read can reach a replica that
//! missed a write; the change of members is persisted on the survivors before any
//! request is acknowledged (see `crate::replicator::activity_log`).
//!
//! The rest of `impl Replicator` is here by behaviour: [`operations`] (snapshots,
//! expansion, purge), [`rebuild`], [`recovery`] (the open rule) and [`activity_log`]
//! (the consistency records).

pub(crate) mod activity_log;
pub(crate) mod operations;
pub(crate) mod rebuild;
pub(crate) mod recovery;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::future::join_all;
use parking_lot::{Mutex, RwLock};
use shorthorn_block::{
    BlockDevice, BlockError, BlockResult, Extent, WriteFlags, ZeroMode, check_range,
};

use crate::range_lock::AsyncRangeLock;
use crate::replica::Replica;
use crate::replicator::activity_log::{ActivityLog, WriteTicket};
use crate::status::{RebuildProgress, ReplicaMode, ReplicaStatus, VolumeState};
use shorthorn_block::ConsistencyRecord;

/// One read in this many goes round robin instead of to the fastest replica.
const READ_PROBE_EVERY: usize = 16;

/// Why an engine cannot be built on a set of replicas.
#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    /// A replica's size differs from the volume's.
    #[error("replica {address} has {found} bytes, volume {volume} has {expected}")]
    SizeMismatch {
        /// The volume.
        volume: String,
        /// The replica.
        address: String,
        /// The volume size.
        expected: u64,
        /// The replica's size.
        found: u64,
    },
    /// No replicas were given.
    #[error("volume {0} needs at least one replica")]
    NoReplicas(String),
    /// The replicas' consistency records do not allow opening the volume.
    #[error("{0}")]
    Recovery(String),
}

pub(crate) struct Slot<R> {
    pub(crate) address: String,
    /// The replica directory's identity (from its consistency record).
    pub(crate) id: String,
    pub(crate) device: Arc<R>,
    state: Mutex<(ReplicaMode, Option<String>)>,
    /// Set while the replica is being rebuilt.
    pub(crate) rebuild: Mutex<Option<Arc<RebuildProgress>>>,
    /// Its recent read latency (exponentially weighted, microseconds) and reads in
    /// flight: reads go where they will be answered soonest.
    read_latency_us: AtomicU64,
    reads_in_flight: AtomicUsize,
    /// Its recent write latency (exponentially weighted, microseconds), and since when
    /// it has been far slower than the others (see [`SlowReplicaPolicy`]).
    write_latency_us: AtomicU64,
    slow_since: Mutex<Option<std::time::Instant>>,
}

impl<R> Slot<R> {
    pub(crate) fn new(
        address: String,
        id: String,
        device: Arc<R>,
        mode: ReplicaMode,
        error: Option<String>,
    ) -> Self {
        Slot {
            address,
            id,
            device,
            state: Mutex::new((mode, error)),
            rebuild: Mutex::new(None),
            read_latency_us: AtomicU64::new(0),
            reads_in_flight: AtomicUsize::new(0),
            write_latency_us: AtomicU64::new(0),
            slow_since: Mutex::new(None),
        }
    }

    /// Expected wait for a read sent now: recent latency times the reads ahead of it.
    fn read_cost(&self) -> u64 {
        let queued = self.reads_in_flight.load(Ordering::Relaxed) as u64 + 1;
        self.read_latency_us
            .load(Ordering::Relaxed)
            .max(1)
            .saturating_mul(queued)
    }
}

/// Folds one latency sample into an average (weight 1/8: a few requests follow a
/// change, one outlier does not).
fn fold_latency(average_us: &AtomicU64, took: std::time::Duration) {
    let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let old = average_us.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        old - old / 8 + sample / 8
    };
    average_us.store(new, Ordering::Relaxed);
}

/// When a replica that answers, but far slower than the others, is taken out of the
/// write set (to ERR, rebuilt later like a failed one): every write waits for the
/// slowest replica, so one slow disk or link would otherwise slow the whole volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowReplicaPolicy {
    /// How many times slower than the slowest other RW replica its average write
    /// latency must be; 0 turns ejection off.
    pub ratio: u32,
    /// How long it must stay that slow.
    pub window: std::time::Duration,
    /// Averages below this never count as slow (fast replicas differ by large ratios
    /// at microsecond scale without harm).
    pub floor: std::time::Duration,
}

impl Default for SlowReplicaPolicy {
    /// 8 times slower for 5 s, and at least 20 ms: healthy replicas of one volume write
    /// within a few milliseconds of each other (docs/benchmarks.md: QD1 writes around
    /// 3 ms), so 8 times the slowest peer sustained for 5 s is a replica in trouble, not
    /// noise; 20 ms keeps a momentary stall of a fast replica from counting.
    fn default() -> Self {
        SlowReplicaPolicy {
            ratio: 8,
            window: std::time::Duration::from_secs(5),
            floor: std::time::Duration::from_millis(20),
        }
    }
}

impl<R> Slot<R> {
    pub(crate) fn mode(&self) -> ReplicaMode {
        self.state.lock().0
    }

    pub(crate) fn set_mode(&self, mode: ReplicaMode) {
        *self.state.lock() = (mode, None);
    }
}

/// A replica the engine starts with: its address, device, identity and mode.
pub struct OpenSlot<R> {
    /// Address as given to the engine.
    pub address: String,
    /// Identity from its consistency record.
    pub id: String,
    /// The connected replica.
    pub device: Arc<R>,
    /// RW, or ERR with a reason when it is known stale.
    pub mode: ReplicaMode,
    /// Why it is ERR.
    pub error: Option<String>,
}

/// One volume's replicator. See the module documentation.
pub struct Replicator<R: Replica> {
    volume: String,
    size: AtomicU64,
    /// Every I/O request holds this shared; structural operations (snapshot, revert,
    /// expand) hold it exclusively, which drains in-flight I/O and holds new I/O back.
    pub(crate) io_gate: tokio::sync::RwLock<()>,
    slots: RwLock<Vec<Arc<Slot<R>>>>,
    next_read: AtomicUsize,
    /// Overlapping writes are applied one after the other, so every replica applies
    /// them in the same order and replicas never diverge. A rebuild copies a range
    /// under the same lock.
    pub(crate) write_order: AsyncRangeLock,
    /// Epoch, members and dirty regions, persisted on the replicas.
    pub(crate) log: ActivityLog,
    /// Ids of the replicas that took the last record written and are members in it (at
    /// open: the members).
    /// A new record goes to them first, so a record newer than one the members hold
    /// can only exist on a member: what makes the open rule sound (docs/consistency.md).
    custodians: Mutex<BTreeSet<String>>,
    /// The address of the replica being rebuilt, if any (one rebuild at a time).
    pub(crate) rebuilding: Mutex<Option<String>>,
    slow_replicas: Mutex<SlowReplicaPolicy>,
}

impl<R: Replica> Replicator<R> {
    /// Builds a replicator over `replicas` (address, device), all in RW mode, each
    /// identified by its address, at epoch 1. The replicas must hold the same data.
    pub fn new(
        volume: &str,
        size: u64,
        replicas: Vec<(String, Arc<R>)>,
    ) -> Result<Self, ReplicatorError> {
        let slots = replicas
            .into_iter()
            .map(|(address, device)| OpenSlot {
                id: address.clone(),
                address,
                device,
                mode: ReplicaMode::RW,
                error: None,
            })
            .collect();
        Self::with_slots(volume, size, slots, 1)
    }

    /// Builds a replicator over `slots` at `epoch`; the RW ones are the members. Every
    /// replica must have the volume's size.
    pub fn with_slots(
        volume: &str,
        size: u64,
        slots: Vec<OpenSlot<R>>,
        epoch: u64,
    ) -> Result<Self, ReplicatorError> {
        if slots.is_empty() {
            return Err(ReplicatorError::NoReplicas(volume.to_owned()));
        }
        let mut members = Vec::new();
        let mut built = Vec::with_capacity(slots.len());
        for slot in slots {
            if slot.device.size() != size {
                return Err(ReplicatorError::SizeMismatch {
                    volume: volume.to_owned(),
                    address: slot.address,
                    expected: size,
                    found: slot.device.size(),
                });
            }
            if slot.mode == ReplicaMode::RW {
                members.push(slot.id.clone());
            }
            built.push(Arc::new(Slot::new(
                slot.address,
                slot.id,
                slot.device,
                slot.mode,
                slot.error,
            )));
        }
        Ok(Replicator {
            volume: volume.to_owned(),
            size: AtomicU64::new(size),
            io_gate: tokio::sync::RwLock::new(()),
            slots: RwLock::new(built),
            next_read: AtomicUsize::new(0),
            write_order: AsyncRangeLock::default(),
            custodians: Mutex::new(members.iter().cloned().collect()),
            log: ActivityLog::new(epoch, members),
            rebuilding: Mutex::new(None),
            slow_replicas: Mutex::new(SlowReplicaPolicy::default()),
        })
    }

    /// Sets when a slow replica leaves the write set.
    pub fn set_slow_replica_policy(&self, policy: SlowReplicaPolicy) {
        *self.slow_replicas.lock() = policy;
    }

    /// The volume's name.
    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// Every replica with its mode.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.slots
            .read()
            .iter()
            .map(|s| {
                let (mode, error) = s.state.lock().clone();
                ReplicaStatus {
                    address: s.address.clone(),
                    mode,
                    error,
                    rebuild: s.rebuild.lock().as_ref().map(|p| p.snapshot()),
                    write_latency_us: s.write_latency_us.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// The replica devices, in the order of [`Replicator::status`].
    pub fn devices(&self) -> Vec<Arc<R>> {
        self.slots.read().iter().map(|s| s.device.clone()).collect()
    }

    /// Healthy, degraded or faulted, from the replicas' modes.
    pub fn state(&self) -> VolumeState {
        VolumeState::from_modes(self.slots.read().iter().map(|s| s.mode()))
    }

    /// Moves replica `address` to ERR with `reason`. It stays there.
    pub fn mark_failed(&self, address: &str, reason: &str) {
        let slot = self
            .slots
            .read()
            .iter()
            .find(|s| s.address == address)
            .cloned();
        if let Some(slot) = slot {
            self.fail(&slot, reason.to_owned());
        }
    }

    /// Starts one task per replica that moves it to ERR as soon as it reports failure on
    /// its own, even when no request is running. Needs a tokio runtime.
    pub fn watch_failures(self: &Arc<Self>) {
        for slot in self.slots.read().iter().cloned() {
            self.watch_slot(slot);
        }
    }

    pub(crate) fn watch_slot(self: &Arc<Self>, slot: Arc<Slot<R>>) {
        let replicator = Arc::downgrade(self);
        tokio::spawn(async move {
            let reason = slot.device.failed().await;
            if let Some(replicator) = replicator.upgrade() {
                // A replica removed from the volume (or replaced by salvage or a new
                // rebuild) fails quietly.
                let current = replicator
                    .slots
                    .read()
                    .iter()
                    .any(|s| Arc::ptr_eq(s, &slot));
                if !current {
                    return;
                }
                replicator.fail(&slot, reason);
                // Persist the new members now rather than at the next write.
                let _ = replicator.settle().await;
            }
        });
    }

    /// The slot of replica `address`, if it is part of the volume.
    pub(crate) fn slot(&self, address: &str) -> Option<Arc<Slot<R>>> {
        self.slots
            .read()
            .iter()
            .find(|s| s.address == address)
            .cloned()
    }

    /// Adds `slot`, replacing an ERR slot of the same address. It is no custodian until
    /// it takes a record as RW.
    pub(crate) fn insert_slot(&self, slot: Arc<Slot<R>>) {
        self.custodians.lock().remove(&slot.id);
        let mut slots = self.slots.write();
        slots.retain(|s| s.address != slot.address);
        slots.push(slot);
    }

    /// Removes replica `address` from the volume.
    pub(crate) fn remove_slot(&self, address: &str) -> Option<Arc<Slot<R>>> {
        let mut slots = self.slots.write();
        let index = slots.iter().position(|s| s.address == address)?;
        Some(slots.remove(index))
    }

    /// Sets the replicas holding the newest record (salvage: the new members).
    pub(crate) fn set_custodians(&self, ids: impl IntoIterator<Item = String>) {
        *self.custodians.lock() = ids.into_iter().collect();
    }

    /// Replaces every slot (salvage).
    pub(crate) fn replace_slots(&self, new: Vec<Arc<Slot<R>>>) {
        *self.slots.write() = new;
    }

    /// Every slot.
    pub(crate) fn slots(&self) -> Vec<Arc<Slot<R>>> {
        self.slots.read().clone()
    }

    /// An RW replica to read from, if any.
    pub(crate) fn any_rw(&self) -> Option<Arc<Slot<R>>> {
        self.slots
            .read()
            .iter()
            .find(|s| s.mode() == ReplicaMode::RW)
            .cloned()
    }

    /// Writes the record at `version` or newer on every RW and WO replica, unless it is
    /// there already. A replica that cannot take it goes to ERR (and the members change
    /// again, so the loop writes once more without it).
    ///
    /// Custody: the record goes first to the custodians (RW replicas that took the
    /// previous one), and only once all of them that are left took it to the others
    /// (WO replicas, and RW ones just promoted). With no custodian left to take it, no
    /// replica may get it: the others fail and the volume needs salvage. So any record
    /// newer than the one a set of members holds is on one of those members.
    pub(crate) async fn persist(&self, version: u64) -> BlockResult<()> {
        loop {
            if self.log.is_persisted(version) {
                return Ok(());
            }
            let _writer = self.log.persist_lock.lock().await;
            if self.log.is_persisted(version) {
                return Ok(());
            }
            let (current, content) = self.log.content(false);
            let record = content.record();
            let targets = self.active();
            if !targets.iter().any(|(_, mode)| *mode == ReplicaMode::RW) {
                return Err(self.no_replica("consistency record update"));
            }
            let custodians = self.custodians.lock().clone();
            let (first, rest): (Vec<_>, Vec<_>) = targets.into_iter().partition(|(slot, mode)| {
                *mode == ReplicaMode::RW && custodians.contains(&slot.id)
            });
            if first.is_empty() {
                let reason = "no replica holding the volume's last consistency record is left, so none may take a newer one; salvage the volume";
                for (slot, _) in &rest {
                    self.fail(slot, reason.to_owned());
                }
                return Err(self.no_replica("consistency record update"));
            }
            // A custodian is a member named in the record it holds: a replica that
            // took it outside the members (WO, about to be promoted) is none.
            let named = |took: Vec<String>| {
                took.into_iter()
                    .filter(|id| record.members.contains(id))
                    .collect::<Vec<_>>()
            };
            let took = self.write_record(&first, &record).await;
            let all_custodians_took_it = took.len() == first.len();
            *self.custodians.lock() = named(took).into_iter().collect();
            if !all_custodians_took_it {
                continue;
            }
            let rest_took = self.write_record(&rest, &record).await;
            let all_took_it = rest_took.len() == rest.len();
            self.custodians.lock().extend(named(rest_took));
            if all_took_it {
                self.log.persisted(current);
            }
        }
    }

    /// Writes `record` on `targets` in parallel; those that fail go to ERR. Returns the
    /// ids of those that took it.
    async fn write_record(
        &self,
        targets: &[(Arc<Slot<R>>, ReplicaMode)],
        record: &ConsistencyRecord,
    ) -> Vec<String> {
        let results = join_all(targets.iter().map(|(s, _)| s.device.set_record(record))).await;
        let mut took = Vec::new();
        for ((slot, _), result) in targets.iter().zip(results) {
            match result {
                Ok(()) => took.push(slot.id.clone()),
                Err(e) => self.fail(slot, format!("writing its consistency record: {e}")),
            }
        }
        took
    }

    /// Waits until the last change of members is persisted: called before any
    /// acknowledgement, so no write a failed replica missed is acknowledged while the
    /// record still names it in sync.
    pub(crate) async fn settle(&self) -> BlockResult<()> {
        let version = self.log.membership_version();
        if self.log.is_persisted(version) {
            return Ok(());
        }
        self.persist(version).await
    }

    /// Marks the write `[offset, offset + len)` in the activity log, persisting a newly
    /// dirtied region first.
    async fn begin_write(&self, offset: u64, len: u64) -> BlockResult<WriteTicket> {
        let ticket = self.log.begin_write(offset, len);
        if let Some(version) = ticket.needs {
            if let Err(e) = self.persist(version).await {
                self.log.end_write(ticket);
                return Err(e);
            }
        }
        Ok(ticket)
    }

    /// Writes the record with `clean` set (after a final flush) on every active replica,
    /// once the newest record reached them by the custody order (else nothing is marked).
    pub(crate) async fn close(&self) {
        let (version, _) = self.log.content(false);
        if let Err(e) = self.persist(version).await {
            tracing::warn!(volume = %self.volume, error = %e, "could not mark the volume closed cleanly");
            return;
        }
        let _writer = self.log.persist_lock.lock().await;
        let (_, content) = self.log.content(true);
        let record = content.record();
        for (slot, _) in self.active() {
            if let Err(e) = slot.device.set_record(&record).await {
                tracing::warn!(volume = %self.volume, replica = %slot.address, error = %e, "could not mark the volume closed cleanly");
            }
        }
    }

    /// Replicas in RW or WO mode (those that take writes and structural operations),
    /// with the mode each had when listed.
    pub(crate) fn active(&self) -> Vec<(Arc<Slot<R>>, ReplicaMode)> {
        self.slots
            .read()
            .iter()
            .filter_map(|s| {
                let mode = s.mode();
                (mode != ReplicaMode::ERR).then(|| (s.clone(), mode))
            })
            .collect()
    }

    /// Sets the volume size after an expansion.
    pub(crate) fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    pub(crate) fn fail(&self, slot: &Slot<R>, reason: String) {
        let mut state = slot.state.lock();
        if state.0 == ReplicaMode::ERR {
            return;
        }
        tracing::error!(volume = %self.volume, replica = %slot.address, from = ?state.0, %reason, "replica failed; moved to ERR");
        *state = (ReplicaMode::ERR, Some(reason));
        drop(state);
        self.log.member_failed(&slot.id);
    }

    fn no_replica(&self, op: &str) -> BlockError {
        BlockError::Io(format!(
            "volume {}: no replica in RW mode can serve the {op}",
            self.volume
        ))
    }

    /// Sends one request to every RW and WO replica at once; succeeds when every one of
    /// them succeeded or was moved to ERR, and at least one RW replica succeeded.
    async fn fan_out<F, Fut>(&self, op: &str, offset: u64, len: u64, send: F) -> BlockResult<()>
    where
        F: Fn(Arc<R>) -> Fut,
        Fut: Future<Output = BlockResult<()>>,
    {
        let targets = self.active();
        if !targets.iter().any(|(_, mode)| *mode == ReplicaMode::RW) {
            return Err(self.no_replica(op));
        }
        let results = join_all(targets.iter().map(|(s, _)| {
            let sent = send(s.device.clone());
            async move {
                let started = std::time::Instant::now();
                (sent.await, started.elapsed())
            }
        }))
        .await;
        let mut acknowledged_rw = 0;
        for ((slot, mode), (result, took)) in targets.iter().zip(results) {
            match result {
                Ok(()) if *mode == ReplicaMode::RW => {
                    acknowledged_rw += 1;
                    fold_latency(&slot.write_latency_us, took);
                }
                Ok(()) => {}
                Err(e) => self.fail(slot, format!("{op} at offset {offset} length {len}: {e}")),
            }
        }
        if acknowledged_rw == 0 {
            return Err(self.no_replica(op));
        }
        self.eject_slow_replica();
        self.settle().await
    }

    /// Takes out of the write set the RW replica whose average write latency stayed
    /// [`SlowReplicaPolicy`] slower than every other RW replica's — never the last RW one.
    fn eject_slow_replica(&self) {
        let policy = *self.slow_replicas.lock();
        if policy.ratio == 0 {
            return;
        }
        let rw: Vec<(Arc<Slot<R>>, u64)> = self
            .slots
            .read()
            .iter()
            .filter(|s| s.mode() == ReplicaMode::RW)
            .map(|s| (s.clone(), s.write_latency_us.load(Ordering::Relaxed)))
            .collect();
        let floor = u64::try_from(policy.floor.as_micros()).unwrap_or(u64::MAX);
        for (slot, latency) in &rw {
            let slowest_other = rw
                .iter()
                .filter(|(other, _)| !Arc::ptr_eq(other, slot))
                .map(|(_, l)| *l)
                .max();
            let slow = slowest_other.is_some_and(|other| {
                *latency >= floor && *latency > other.max(1).saturating_mul(u64::from(policy.ratio))
            });
            let mut since = slot.slow_since.lock();
            if !slow {
                *since = None;
                continue;
            }
            let started = *since.get_or_insert_with(std::time::Instant::now);
            if started.elapsed() >= policy.window {
                drop(since);
                let reason = format!(
                    "too slow: its writes took {} ms on average against at most {} ms on the other replicas for over {:?}; taken out of the write set (rebuild it with `replica add`)",
                    latency / 1000,
                    slowest_other.unwrap_or(0) / 1000,
                    policy.window
                );
                self.fail(slot, reason);
                // One at a time: the others' comparison changes without it.
                return;
            }
        }
    }

    /// A write-like request: ordered against overlapping ones, its regions marked dirty
    /// first, then sent to every RW and WO replica.
    async fn replicated_write<F, Fut>(
        &self,
        op: &str,
        offset: u64,
        len: u64,
        send: F,
    ) -> BlockResult<()>
    where
        F: Fn(Arc<R>) -> Fut,
        Fut: Future<Output = BlockResult<()>>,
    {
        let _order = self.write_order.lock(offset, offset + len).await;
        let ticket = self.begin_write(offset, len).await?;
        let result = self.fan_out(op, offset, len, send).await;
        self.log.end_write(ticket);
        result
    }

    /// The replica to read from: the one expected to answer soonest, except one read in
    /// [`READ_PROBE_EVERY`] that goes round robin, so a replica that got faster again
    /// is seen to.
    fn choose_reader<'a>(&self, readable: &'a [Arc<Slot<R>>]) -> &'a Arc<Slot<R>> {
        let turn = self.next_read.fetch_add(1, Ordering::Relaxed);
        if turn % READ_PROBE_EVERY == 0 {
            return &readable[(turn / READ_PROBE_EVERY) % readable.len()];
        }
        readable
            .iter()
            .min_by_key(|slot| slot.read_cost())
            .unwrap_or(&readable[turn % readable.len()])
    }

    /// Runs a read-like request on one RW replica, trying the next on error.
    async fn read_one<T, F, Fut>(&self, op: &str, offset: u64, len: u64, send: F) -> BlockResult<T>
    where
        F: Fn(Arc<R>) -> Fut,
        Fut: Future<Output = BlockResult<T>>,
    {
        loop {
            let readable: Vec<Arc<Slot<R>>> = self
                .slots
                .read()
                .iter()
                .filter(|s| s.mode() == ReplicaMode::RW)
                .cloned()
                .collect();
            if readable.is_empty() {
                return Err(self.no_replica(op));
            }
            let slot = self.choose_reader(&readable);
            slot.reads_in_flight.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let result = send(slot.device.clone()).await;
            slot.reads_in_flight.fetch_sub(1, Ordering::Relaxed);
            match result {
                Ok(value) => {
                    fold_latency(&slot.read_latency_us, started.elapsed());
                    return Ok(value);
                }
                Err(e) => self.fail(slot, format!("{op} at offset {offset} length {len}: {e}")),
            }
        }
    }
}

impl<R: Replica> BlockDevice for Replicator<R> {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    async fn read(&self, offset: u64, len: u64) -> BlockResult<Bytes> {
        let _gate = self.io_gate.read().await;
        check_range(offset, len, self.size())?;
        self.read_one(
            "read",
            offset,
            len,
            |r| async move { r.read(offset, len).await },
        )
        .await
    }

    async fn write(&self, offset: u64, data: Bytes, flags: WriteFlags) -> BlockResult<()> {
        let len = data.len() as u64;
        let _gate = self.io_gate.read().await;
        check_range(offset, len, self.size())?;
        self.replicated_write("write", offset, len, |r| {
            let data = data.clone();
            async move { r.write(offset, data, flags).await }
        })
        .await
    }

    async fn flush(&self) -> BlockResult<()> {
        let _gate = self.io_gate.read().await;
        let mark = self.log.flush_mark();
        self.fan_out("flush", 0, 0, |r| async move { r.flush().await })
            .await?;
        match self.log.flushed(mark) {
            Some(version) => self.persist(version).await,
            None => Ok(()),
        }
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        mode: ZeroMode,
        flags: WriteFlags,
    ) -> BlockResult<()> {
        let _gate = self.io_gate.read().await;
        check_range(offset, len, self.size())?;
        self.replicated_write("write-zeroes", offset, len, |r| async move {
            r.write_zeroes(offset, len, mode, flags).await
        })
        .await
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        let _gate = self.io_gate.read().await;
        check_range(offset, len, self.size())?;
        self.replicated_write(
            "trim",
            offset,
            len,
            |r| async move { r.trim(offset, len).await },
        )
        .await
    }

    async fn block_status(&self, offset: u64, len: u64) -> BlockResult<Vec<Extent>> {
        let _gate = self.io_gate.read().await;
        check_range(offset, len, self.size())?;
        self.read_one("block-status", offset, len, |r| async move {
            r.block_status(offset, len).await
        })
        .await
    }
}
