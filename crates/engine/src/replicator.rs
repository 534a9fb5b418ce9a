//! The replicator: one volume served from N replicas. Writes go to every replica in RW
//! or WO mode and are acknowledged when all of them have it; reads go to one RW replica,
//! spread across them. Any error from a replica moves it to ERR at once, before the
//! request that saw the error completes, so no later read can reach a replica that
//! missed a write.

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
use crate::status::{ReplicaMode, ReplicaStatus, VolumeState};

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
}

pub(crate) struct Slot<R> {
    pub(crate) address: String,
    pub(crate) device: Arc<R>,
    state: Mutex<(ReplicaMode, Option<String>)>,
}

impl<R> Slot<R> {
    pub(crate) fn mode(&self) -> ReplicaMode {
        self.state.lock().0
    }
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
    /// them in the same order and replicas never diverge.
    write_order: AsyncRangeLock,
}

impl<R: Replica> Replicator<R> {
    /// Builds a replicator over `replicas` (address, device), all in RW mode. Every
    /// replica must have the volume's size. The replicas must hold the same data; the
    /// engine does not reconcile them here.
    pub fn new(
        volume: &str,
        size: u64,
        replicas: Vec<(String, Arc<R>)>,
    ) -> Result<Self, ReplicatorError> {
        if replicas.is_empty() {
            return Err(ReplicatorError::NoReplicas(volume.to_owned()));
        }
        let mut slots = Vec::with_capacity(replicas.len());
        for (address, device) in replicas {
            if device.size() != size {
                return Err(ReplicatorError::SizeMismatch {
                    volume: volume.to_owned(),
                    address,
                    expected: size,
                    found: device.size(),
                });
            }
            slots.push(Arc::new(Slot {
                address,
                device,
                state: Mutex::new((ReplicaMode::RW, None)),
            }));
        }
        Ok(Replicator {
            volume: volume.to_owned(),
            size: AtomicU64::new(size),
            io_gate: tokio::sync::RwLock::new(()),
            slots: RwLock::new(slots),
            next_read: AtomicUsize::new(0),
            write_order: AsyncRangeLock::default(),
        })
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
            let replicator = Arc::downgrade(self);
            tokio::spawn(async move {
                let reason = slot.device.failed().await;
                if let Some(replicator) = replicator.upgrade() {
                    replicator.fail(&slot, reason);
                }
            });
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
        let results = join_all(targets.iter().map(|(s, _)| send(s.device.clone()))).await;
        let mut acknowledged_rw = 0;
        for ((slot, mode), result) in targets.iter().zip(results) {
            match result {
                Ok(()) if *mode == ReplicaMode::RW => acknowledged_rw += 1,
                Ok(()) => {}
                Err(e) => self.fail(slot, format!("{op} at offset {offset} length {len}: {e}")),
            }
        }
        if acknowledged_rw == 0 {
            return Err(self.no_replica(op));
        }
        Ok(())
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
            let slot = &readable[self.next_read.fetch_add(1, Ordering::Relaxed) % readable.len()];
            match send(slot.device.clone()).await {
                Ok(value) => return Ok(value),
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
        let _order = self.write_order.lock(offset, offset + len).await;
        self.fan_out("write", offset, len, |r| {
            let data = data.clone();
            async move { r.write(offset, data, flags).await }
        })
        .await
    }

    async fn flush(&self) -> BlockResult<()> {
        let _gate = self.io_gate.read().await;
        self.fan_out("flush", 0, 0, |r| async move { r.flush().await })
            .await
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
        let _order = self.write_order.lock(offset, offset + len).await;
        self.fan_out("write-zeroes", offset, len, |r| async move {
            r.write_zeroes(offset, len, mode, flags).await
        })
        .await
    }

    async fn trim(&self, offset: u64, len: u64) -> BlockResult<()> {
        let _gate = self.io_gate.read().await;
        check_range(offset, len, self.size())?;
        let _order = self.write_order.lock(offset, offset + len).await;
        self.fan_out(
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
