//! Structural operations coordinated across a volume's replicas: snapshot (with I/O
//! drained, so every replica freezes the same content under the same name), remove,
//! purge, revert and expansion. A replica that fails an operation goes to ERR; the
//! volume carries on with the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use shorthorn_block::{BLOCK_SIZE, BlockDevice, validate_name};

use crate::replica::{Replica, ReplicaOpError};
use crate::replicator::{Replicator, Slot};
use crate::status::ReplicaMode;
use shorthorn_block::{LayerInfo, PurgeReport};

/// Why a volume operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The request is wrong; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// What the request would create exists already; nothing was changed.
    #[error("{0}")]
    Exists(String),
    /// No replica in RW mode could carry the operation out.
    #[error("volume {volume}: {operation} failed on every RW replica: {reasons}")]
    Failed {
        /// The volume.
        volume: String,
        /// What was attempted.
        operation: String,
        /// Each replica's error.
        reasons: String,
    },
}

/// Limits on a volume's snapshots, checked before a new one is taken.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotLimits {
    /// Most snapshots (user and system) in the chain.
    pub max_count: usize,
    /// Most bytes all snapshots may occupy on one replica; 0: no limit.
    pub max_total_bytes: u64,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        // Longhorn's default snapshot cap; size unlimited.
        SnapshotLimits {
            max_count: 250,
            max_total_bytes: 0,
        }
    }
}

impl<R: Replica> Replicator<R> {
    /// Runs `op` on every RW and WO replica at once. Replicas that fail go to ERR; the
    /// result is each successful RW replica's value. A rejection (bad request) from a
    /// replica fails the call without failing the replica.
    async fn on_every_replica<T, F, Fut>(
        &self,
        operation: &str,
        op: F,
    ) -> Result<Vec<T>, OperationError>
    where
        F: Fn(Arc<R>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ReplicaOpError>>,
    {
        if let Some(rebuilding) = self.rebuilding.lock().clone() {
            return Err(OperationError::Invalid(format!(
                "volume {}: replica {rebuilding} is being rebuilt; {operation} is refused until the rebuild ends (its progress shows in `ls`)",
                self.volume()
            )));
        }
        let targets = self.active();
        let results = join_all(targets.iter().map(|(slot, _)| op(slot.device.clone()))).await;
        let mut values = Vec::new();
        let mut reasons = Vec::new();
        for ((slot, mode), result) in targets.iter().zip(results) {
            match result {
                Ok(value) if *mode == ReplicaMode::RW => values.push(value),
                Ok(_) => {}
                Err(ReplicaOpError::Rejected(reason)) => {
                    return Err(OperationError::Invalid(reason));
                }
                Err(ReplicaOpError::Failed(reason)) => {
                    reasons.push(format!("{}: {reason}", slot.address));
                    self.fail(slot, format!("{operation}: {reason}"));
                }
            }
        }
        if values.is_empty() {
            return Err(OperationError::Failed {
                volume: self.volume().to_owned(),
                operation: operation.to_owned(),
                reasons: if reasons.is_empty() {
                    "no replica in RW mode".into()
                } else {
                    reasons.join("; ")
                },
            });
        }
        Ok(values)
    }

    /// The snapshot tree as one RW replica reports it.
    pub async fn list_snapshots(&self) -> Result<Vec<LayerInfo>, OperationError> {
        for (slot, mode) in self.active() {
            if mode != ReplicaMode::RW {
                continue;
            }
            match slot.device.list_snapshots().await {
                Ok(list) => return Ok(list),
                Err(e) => self.fail(&slot, format!("listing snapshots: {e}")),
            }
        }
        Err(OperationError::Failed {
            volume: self.volume().to_owned(),
            operation: "listing snapshots".into(),
            reasons: "no replica in RW mode".into(),
        })
    }

    /// Takes snapshot `name` on every RW and WO replica with I/O drained: requests in
    /// flight finish first and new ones wait until every replica has frozen its head, so
    /// all replicas hold the same content under the same name.
    pub async fn snapshot(
        &self,
        name: &str,
        system: bool,
        labels: &BTreeMap<String, String>,
        limits: SnapshotLimits,
    ) -> Result<(), OperationError> {
        validate_name(name).map_err(|e| OperationError::Invalid(e.to_string()))?;
        let existing = self.list_snapshots().await?;
        if existing.iter().any(|s| s.name.as_deref() == Some(name)) {
            return Err(OperationError::Exists(format!(
                "snapshot {name:?} already exists"
            )));
        }
        let in_chain: Vec<&LayerInfo> = existing
            .iter()
            .filter(|s| !s.is_head && s.in_chain)
            .collect();
        if in_chain.len() >= limits.max_count {
            return Err(OperationError::Invalid(format!(
                "volume {} already has {} snapshots, the limit (--max-snapshots {}); remove some and purge",
                self.volume(),
                in_chain.len(),
                limits.max_count
            )));
        }
        let total: u64 = existing
            .iter()
            .filter(|s| !s.is_head)
            .map(|s| s.allocated_bytes)
            .sum();
        if limits.max_total_bytes > 0 && total >= limits.max_total_bytes {
            return Err(OperationError::Invalid(format!(
                "volume {}'s snapshots use {total} bytes, the limit (--max-snapshot-bytes {}); remove some and purge",
                self.volume(),
                limits.max_total_bytes
            )));
        }
        // Flush first, outside the drain: the replicas then sync only the few writes that
        // land in between while I/O is held back, not everything since the last flush.
        if let Err(e) = self.flush().await {
            tracing::warn!(volume = %self.volume(), error = %e, "flush before snapshot failed");
        }
        let _drained = self.io_gate.write().await;
        self.on_every_replica("snapshot", |r| async move {
            r.create_snapshot(name, system, labels).await
        })
        .await?;
        tracing::info!(volume = %self.volume(), snapshot = name, "snapshot created");
        Ok(())
    }

    /// Marks snapshot `name` removed on every replica.
    pub async fn remove_snapshot(&self, name: &str) -> Result<(), OperationError> {
        self.on_every_replica("remove snapshot", |r| async move {
            r.remove_snapshot(name).await
        })
        .await?;
        Ok(())
    }

    /// Folds removed snapshots away on every replica; I/O goes on meanwhile.
    pub async fn purge(&self) -> Result<PurgeReport, OperationError> {
        let outcomes = self
            .on_every_replica("purge", |r| async move { r.purge_snapshots().await })
            .await?;
        Ok(outcomes.into_iter().next().unwrap_or_default())
    }

    /// Reverts every replica to snapshot `name`, with I/O drained.
    pub async fn revert(&self, name: &str) -> Result<(), OperationError> {
        let _drained = self.io_gate.write().await;
        self.on_every_replica("revert", |r| async move { r.revert(name).await })
            .await?;
        tracing::info!(volume = %self.volume(), snapshot = name, "reverted");
        Ok(())
    }

    /// Grows every replica to `size` bytes with I/O drained. A replica that fails goes to
    /// ERR, so replicas of different sizes are never RW together.
    pub async fn expand(&self, size: u64) -> Result<(), OperationError> {
        let current = self.size();
        if size % BLOCK_SIZE != 0 || size <= current {
            return Err(OperationError::Invalid(format!(
                "volume {} is {current} bytes; the new size must be larger and a multiple of {BLOCK_SIZE}",
                self.volume()
            )));
        }
        let _drained = self.io_gate.write().await;
        self.on_every_replica("expand", |r| async move { r.expand(size).await })
            .await?;
        // A replica that reports another size after expanding cannot stay in service.
        for (slot, _) in self.active() {
            check_size(self, &slot, size);
        }
        self.set_size(size);
        tracing::info!(volume = %self.volume(), size, "expanded");
        Ok(())
    }
}

fn check_size<R: Replica>(replicator: &Replicator<R>, slot: &Slot<R>, size: u64) {
    let found = slot.device.size();
    if found != size {
        replicator.fail(
            slot,
            format!("reports {found} bytes after expanding to {size}"),
        );
    }
}
