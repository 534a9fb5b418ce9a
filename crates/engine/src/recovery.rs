//! Opening a volume on existing replicas: which replicas hold every acknowledged write
//! (from their consistency records), reconciling the regions that may differ between
//! them before any read is served, and salvage when no replica known in sync is left.
//! docs/consistency.md states the rules and why they are sound.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::consistency::{REGION_SIZE, regions_covering};
use crate::replica::{Replica, ReplicaRecord, snapshot_chain};
use crate::replicator::{OpenSlot, Replicator, ReplicatorError, Slot};
use crate::status::ReplicaMode;

/// A replica found at start: where, connected how, and what its record says.
pub struct Candidate<R> {
    /// Address as given to the engine.
    pub address: String,
    /// The connected replica.
    pub device: Arc<R>,
    /// Its consistency record.
    pub record: ReplicaRecord,
}

/// Which replicas to use and what to reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indexes of replicas in sync (RW), the source of reconciliation first.
    pub in_sync: Vec<usize>,
    /// Indexes of replicas known stale, with the reason (ERR until rebuilt).
    pub stale: Vec<(usize, String)>,
    /// Regions that may differ between the replicas in sync.
    pub dirty: BTreeSet<u64>,
    /// The epoch this open will record.
    pub epoch: u64,
}

/// Decides from the records which replicas are in sync.
///
/// The rule: the record with the highest epoch names the members (every replica that
/// held each acknowledged write); replicas it names are in sync, the others are stale.
/// A volume never opened (epoch 0 everywhere) has every replica in sync. Without any
/// member reachable the volume cannot open — unless `salvage`, which takes the
/// replicas that hold the highest epoch instead (they were members when the last
/// membership change was recorded, so they hold every write acknowledged until then).
pub fn plan(volume: &str, records: &[&ReplicaRecord], salvage: bool) -> Result<Plan, String> {
    let newest = records.iter().map(|r| r.epoch).max().unwrap_or(0);
    let mut in_sync: Vec<usize> = if newest == 0 {
        (0..records.len()).collect()
    } else {
        let members: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.epoch == newest)
            .flat_map(|r| r.members.iter().map(String::as_str))
            .collect();
        (0..records.len())
            .filter(|&i| members.contains(records[i].replica_id.as_str()))
            .collect()
    };
    if in_sync.is_empty() {
        if !salvage {
            let found: Vec<String> = records
                .iter()
                .map(|r| format!("{} at epoch {}", r.replica_id, r.epoch))
                .collect();
            return Err(format!(
                "volume {volume}: none of the replicas given is known to hold every acknowledged write \
                 (found {}); start the engine with --salvage to bring the volume back from the \
                 most up-to-date of them",
                found.join(", ")
            ));
        }
        in_sync = (0..records.len())
            .filter(|&i| records[i].epoch == newest)
            .collect();
    }
    // Reconcile from a replica that took the newest record.
    in_sync.sort_by_key(|&i| std::cmp::Reverse(records[i].epoch));
    let stale = (0..records.len())
        .filter(|i| !in_sync.contains(i))
        .map(|i| {
            (
                i,
                format!(
                    "stale: it missed writes (its record is at epoch {}, the volume's at {newest}); rebuild it with `replica add`",
                    records[i].epoch
                ),
            )
        })
        .collect();
    let dirty = regions_covering(in_sync.iter().flat_map(|&i| {
        let record = records[i];
        let size = if record.region_size == 0 {
            REGION_SIZE
        } else {
            record.region_size
        };
        record
            .dirty_regions
            .iter()
            .map(move |&region| (region.saturating_mul(size), size))
    }));
    Ok(Plan {
        in_sync,
        stale,
        dirty,
        epoch: newest + 1,
    })
}

impl<R: Replica> Replicator<R> {
    /// Opens a volume on `candidates`: applies [`plan`], refuses replicas whose
    /// snapshot chain differs from the source's, reconciles the dirty regions of the
    /// replicas in sync, and records the new epoch on them — all before any I/O.
    pub async fn open(
        volume: &str,
        size: u64,
        candidates: Vec<Candidate<R>>,
        salvage: bool,
    ) -> Result<Arc<Self>, ReplicatorError> {
        let (slots, plan) = plan_slots(volume, &candidates, salvage).await?;
        let replicator = Arc::new(Replicator::with_slots(volume, size, slots, plan.epoch)?);
        replicator.reconcile_and_record(&plan).await?;
        Ok(replicator)
    }

    /// Salvage while running: every slot is replaced by `candidates` chosen by the
    /// salvage rule, reconciled and recorded, with I/O drained.
    pub(crate) async fn salvage(
        self: &Arc<Self>,
        candidates: Vec<Candidate<R>>,
    ) -> Result<(), ReplicatorError> {
        let _drained = self.io_gate.write().await;
        let (slots, plan) = plan_slots(self.volume(), &candidates, true).await?;
        let mut members = Vec::new();
        let built: Vec<Arc<Slot<R>>> = slots
            .into_iter()
            .map(|s| {
                if s.mode == ReplicaMode::RW {
                    members.push(s.id.clone());
                }
                Arc::new(Slot::new(s.address, s.id, s.device, s.mode, s.error))
            })
            .collect();
        self.log.reset(plan.epoch, members);
        self.replace_slots(built);
        self.reconcile_and_record(&plan).await?;
        self.watch_failures();
        Ok(())
    }

    async fn reconcile_and_record(&self, plan: &Plan) -> Result<(), ReplicatorError> {
        let slots = self.slots();
        let in_sync: Vec<Arc<Slot<R>>> = slots
            .iter()
            .filter(|s| s.mode() == ReplicaMode::RW)
            .cloned()
            .collect();
        if let Some((source, others)) = in_sync.split_first() {
            if !plan.dirty.is_empty() && !others.is_empty() {
                tracing::info!(volume = %self.volume(), regions = plan.dirty.len(), source = %source.address, "reconciling regions written since the last consistent point");
                self.reconcile_offline(source, others, &plan.dirty).await;
            }
        }
        let (version, _) = self.log.content(false);
        self.persist(version)
            .await
            .map_err(|e| ReplicatorError::Recovery(format!("recording epoch {}: {e}", plan.epoch)))
    }
}

/// Applies [`plan`] and the snapshot-chain check; returns the slots to open with.
async fn plan_slots<R: Replica>(
    volume: &str,
    candidates: &[Candidate<R>],
    salvage: bool,
) -> Result<(Vec<OpenSlot<R>>, Plan), ReplicatorError> {
    let records: Vec<&ReplicaRecord> = candidates.iter().map(|c| &c.record).collect();
    let plan = plan(volume, &records, salvage).map_err(ReplicatorError::Recovery)?;
    let mut modes: Vec<(ReplicaMode, Option<String>)> =
        vec![(ReplicaMode::ERR, None); candidates.len()];
    for (index, reason) in &plan.stale {
        modes[*index].1 = Some(reason.clone());
    }
    let mut source_chain = None;
    for &index in &plan.in_sync {
        let chain = candidates[index]
            .device
            .list_snapshots()
            .await
            .map(|layers| {
                snapshot_chain(&layers)
                    .into_iter()
                    .map(|l| l.name.clone())
                    .collect::<Vec<_>>()
            });
        match (chain, &source_chain) {
            (Err(e), _) => modes[index].1 = Some(format!("listing its snapshots: {e}")),
            (Ok(chain), None) => {
                source_chain = Some(chain);
                modes[index] = (ReplicaMode::RW, None);
            }
            (Ok(chain), Some(expected)) if &chain == expected => {
                modes[index] = (ReplicaMode::RW, None);
            }
            (Ok(chain), Some(expected)) => {
                modes[index].1 = Some(format!(
                    "its snapshot chain [{}] differs from [{}] (a snapshot operation was cut short); rebuild it with `replica add`",
                    chain.join(", "),
                    expected.join(", ")
                ));
            }
        }
    }
    let slots = candidates
        .iter()
        .zip(modes)
        .map(|(c, (mode, error))| OpenSlot {
            address: c.address.clone(),
            id: c.record.replica_id.clone(),
            device: c.device.clone(),
            mode,
            error,
        })
        .collect();
    Ok((slots, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, epoch: u64, members: &[&str], dirty: &[u64]) -> ReplicaRecord {
        ReplicaRecord {
            replica_id: id.into(),
            epoch,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            region_size: REGION_SIZE,
            dirty_regions: dirty.to_vec(),
            clean: dirty.is_empty(),
        }
    }

    #[test]
    fn a_new_volume_has_every_replica_in_sync() {
        let (a, b) = (record("a", 0, &[], &[]), record("b", 0, &[], &[]));
        let plan = plan("v", &[&a, &b], false).unwrap();
        assert_eq!(plan.in_sync, vec![0, 1]);
        assert_eq!(plan.epoch, 1);
    }

    #[test]
    fn a_replica_dropped_from_the_members_is_stale() {
        let a = record("a", 5, &["a", "c"], &[3]);
        let b = record("b", 4, &["a", "b", "c"], &[1]);
        let c = record("c", 5, &["a", "c"], &[3, 4]);
        let plan = plan("v", &[&a, &b, &c], false).unwrap();
        assert_eq!(plan.in_sync, vec![0, 2]);
        assert_eq!(plan.stale.len(), 1);
        assert_eq!(plan.stale[0].0, 1);
        assert_eq!(plan.dirty, BTreeSet::from([3, 4]));
        assert_eq!(plan.epoch, 6);
    }

    #[test]
    fn a_member_that_missed_only_the_last_record_stays_in_sync() {
        // The change that dropped c reached a but not b before the crash: b is still a
        // member; no write c missed was acknowledged before both had it.
        let a = record("a", 8, &["a", "b"], &[]);
        let b = record("b", 7, &["a", "b", "c"], &[2]);
        let c = record("c", 7, &["a", "b", "c"], &[2]);
        let plan = plan("v", &[&a, &b, &c], false).unwrap();
        assert_eq!(plan.in_sync, vec![0, 1]);
        assert_eq!(plan.dirty, BTreeSet::from([2]));
    }

    #[test]
    fn without_a_member_only_salvage_opens_and_takes_the_newest() {
        let b = record("b", 4, &["a"], &[]);
        let c = record("c", 3, &["a", "b", "c"], &[9]);
        let refused = plan("v", &[&b, &c], false).unwrap_err();
        assert!(refused.contains("--salvage"), "{refused}");
        let salvaged = plan("v", &[&b, &c], true).unwrap();
        assert_eq!(salvaged.in_sync, vec![0]);
        assert_eq!(salvaged.stale[0].0, 1);
    }
}
