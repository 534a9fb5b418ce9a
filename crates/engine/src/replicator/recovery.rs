//! Opening a volume on existing replicas: which replicas hold every acknowledged write
//! (from their consistency records), reconciling the regions that may differ between
//! them before any read is served, and salvage when no replica known in sync is left.
//! docs/consistency.md states the rules and why they are sound.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::replica::Replica;
use crate::replicator::activity_log::{REGION_SIZE, regions_covering};
use crate::replicator::{OpenSlot, Replicator, ReplicatorError, Slot};
use crate::status::ReplicaMode;
use shorthorn_block::ConsistencyRecord;
use shorthorn_block::snapshot_chain;

/// A replica found at start: where, connected how, and what its record says.
pub struct Candidate<R> {
    /// Address as given to the engine.
    pub address: String,
    /// The connected replica.
    pub device: Arc<R>,
    /// Its consistency record.
    pub record: ConsistencyRecord,
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

/// How far above the newest reachable epoch a salvage opens: salvage runs without some
/// replicas, which may hold newer records; opening far above them keeps the salvaged
/// epoch from ever equalling one of theirs (it would take 2^32 membership changes).
pub const SALVAGE_EPOCH_GAP: u64 = 1 << 32;

/// Decides from the records which replicas are in sync.
///
/// The rule (docs/consistency.md proves it): let E be the highest epoch among the
/// records read and M the members the records at E name. The volume opens only if
/// every member of M answered: then no record newer than E exists anywhere, because
/// every record is written first to members of the record before it (custody, see
/// `Replicator::persist`), and M's members hold every acknowledged write. The members
/// of M are in sync; the other replicas are stale. A volume never opened (epoch 0
/// everywhere) opens only with every replica given answering, since any absent one may
/// have been opened alone. `unreachable` lists the addresses that did not answer.
///
/// Otherwise the open is refused, naming the replicas it needs — unless `salvage`, which
/// takes the members that answered (or, without any, the replicas at the highest epoch),
/// accepting the loss of writes acknowledged only by the absent ones, and opens at an
/// epoch [`SALVAGE_EPOCH_GAP`] higher so it never collides with one of theirs.
pub fn plan(
    volume: &str,
    records: &[&ConsistencyRecord],
    unreachable: &[String],
    salvage: bool,
) -> Result<Plan, String> {
    let newest = records.iter().map(|r| r.epoch).max().unwrap_or(0);
    let newest_records = || records.iter().filter(|r| r.epoch == newest);
    let members: BTreeSet<&str> = newest_records()
        .flat_map(|r| r.members.iter().map(String::as_str))
        .collect();
    let answered: BTreeSet<&str> = records.iter().map(|r| r.replica_id.as_str()).collect();
    let missing: Vec<&str> = members.difference(&answered).copied().collect();
    let conflicting = newest_records()
        .map(|r| &r.members)
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    let found = || {
        records
            .iter()
            .map(|r| format!("{} at epoch {}", r.replica_id, r.epoch))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !salvage {
        let refusal = if newest == 0 && !unreachable.is_empty() {
            Some(format!(
                "the replicas that answered were never opened, and the ones that did not ({}) may have been opened without them",
                unreachable.join(", ")
            ))
        } else if !missing.is_empty() {
            Some(format!(
                "the newest record they hold (epoch {newest}) names {} as members, and {} did not answer{}: only they may hold the newest acknowledged writes",
                members.iter().copied().collect::<Vec<_>>().join(", "),
                missing.join(", "),
                if unreachable.is_empty() {
                    String::new()
                } else {
                    format!(" (unreachable: {})", unreachable.join(", "))
                }
            ))
        } else if conflicting {
            Some(format!(
                "records at epoch {newest} name different members (an earlier salvage ran without some of them)"
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            return Err(format!(
                "volume {volume}: refusing to open on these replicas ({}): {reason}. Start the \
                 replicas named, or start the engine with --salvage to open on the most recent \
                 replicas that answered — salvage loses any write acknowledged only by the \
                 replicas that did not answer",
                found()
            ));
        }
    }
    let mut in_sync: Vec<usize> = if newest == 0 {
        (0..records.len()).collect()
    } else {
        (0..records.len())
            .filter(|&i| members.contains(records[i].replica_id.as_str()))
            .collect()
    };
    if in_sync.is_empty() {
        in_sync = (0..records.len())
            .filter(|&i| records[i].epoch == newest)
            .collect();
    }
    let epoch = if salvage && (!missing.is_empty() || !unreachable.is_empty() || conflicting) {
        newest + SALVAGE_EPOCH_GAP
    } else {
        newest + 1
    };
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
        epoch,
    })
}

impl<R: Replica> Replicator<R> {
    /// Opens a volume on `candidates` (`unreachable`: the addresses given that did not
    /// answer): applies [`plan`], refuses replicas whose snapshot chain differs from the
    /// source's, reconciles the dirty regions of the replicas in sync, and records the
    /// new epoch on them — all before any I/O.
    pub async fn open(
        volume: &str,
        size: u64,
        candidates: Vec<Candidate<R>>,
        unreachable: &[String],
        salvage: bool,
    ) -> Result<Arc<Self>, ReplicatorError> {
        let (slots, plan) = plan_slots(volume, &candidates, unreachable, salvage).await?;
        let replicator = Arc::new(Replicator::with_slots(volume, size, slots, plan.epoch)?);
        replicator.reconcile_and_record(&plan).await?;
        Ok(replicator)
    }

    /// Salvage while running: every slot is replaced by `candidates` chosen by the
    /// salvage rule, reconciled and recorded, with I/O drained.
    pub(crate) async fn salvage(
        self: &Arc<Self>,
        candidates: Vec<Candidate<R>>,
        unreachable: &[String],
    ) -> Result<(), ReplicatorError> {
        let _drained = self.io_gate.write().await;
        let (slots, plan) = plan_slots(self.volume(), &candidates, unreachable, true).await?;
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
        self.log.reset(plan.epoch, members.clone());
        self.set_custodians(members);
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
    unreachable: &[String],
    salvage: bool,
) -> Result<(Vec<OpenSlot<R>>, Plan), ReplicatorError> {
    let records: Vec<&ConsistencyRecord> = candidates.iter().map(|c| &c.record).collect();
    let plan = plan(volume, &records, unreachable, salvage).map_err(ReplicatorError::Recovery)?;
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
                    .map(|l| l.snapshot_name().to_owned())
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

    fn record(id: &str, epoch: u64, members: &[&str], dirty: &[u64]) -> ConsistencyRecord {
        ConsistencyRecord {
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
        let plan = plan("v", &[&a, &b], &[], false).unwrap();
        assert_eq!(plan.in_sync, vec![0, 1]);
        assert_eq!(plan.epoch, 1);
    }

    #[test]
    fn a_replica_dropped_from_the_members_is_stale() {
        let a = record("a", 5, &["a", "c"], &[3]);
        let b = record("b", 4, &["a", "b", "c"], &[1]);
        let c = record("c", 5, &["a", "c"], &[3, 4]);
        let plan = plan("v", &[&a, &b, &c], &[], false).unwrap();
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
        let plan = plan("v", &[&a, &b, &c], &[], false).unwrap();
        assert_eq!(plan.in_sync, vec![0, 1]);
        assert_eq!(plan.dirty, BTreeSet::from([2]));
    }

    #[test]
    fn without_a_member_only_salvage_opens_and_takes_the_newest() {
        let b = record("b", 4, &["a"], &[]);
        let c = record("c", 3, &["a", "b", "c"], &[9]);
        let refused = plan("v", &[&b, &c], &[], false).unwrap_err();
        assert!(refused.contains("--salvage"), "{refused}");
        let salvaged = plan("v", &[&b, &c], &[], true).unwrap();
        assert_eq!(salvaged.in_sync, vec![0]);
        assert_eq!(salvaged.stale[0].0, 1);
        assert_eq!(salvaged.epoch, 4 + SALVAGE_EPOCH_GAP);
    }

    #[test]
    fn a_member_of_the_newest_record_that_does_not_answer_blocks_the_open() {
        // The sequence: r0 dropped at epoch 2, r1 at epoch 3 (recorded on r2
        // only), then the engine and r2 died. r2 may hold writes newer than r1's.
        let r0 = record("r0", 1, &["r0", "r1", "r2"], &[]);
        let r1 = record("r1", 2, &["r1", "r2"], &[0]);
        let unreachable = ["10.0.0.3:9502".to_owned()];
        let refused = plan("v", &[&r0, &r1], &unreachable, false).unwrap_err();
        for needed in ["r2 did not answer", "10.0.0.3:9502", "--salvage", "loses"] {
            assert!(refused.contains(needed), "{needed} not in: {refused}");
        }
        let salvaged = plan("v", &[&r0, &r1], &unreachable, true).unwrap();
        assert_eq!(salvaged.in_sync, vec![1]);
        assert!(
            salvaged.epoch > 3,
            "a salvage must not reuse the absent r2's epoch"
        );
    }

    #[test]
    fn every_member_answering_opens_even_with_a_stale_replica_absent() {
        let a = record("a", 6, &["a", "b"], &[]);
        let b = record("b", 6, &["a", "b"], &[]);
        let plan = plan("v", &[&a, &b], &["c-address".to_owned()], false).unwrap();
        assert_eq!(plan.in_sync, vec![0, 1]);
        assert_eq!(plan.epoch, 7);
    }

    #[test]
    fn a_volume_never_opened_needs_every_replica_given() {
        let a = record("a", 0, &[], &[]);
        let refused = plan("v", &[&a], &["b-address".to_owned()], false).unwrap_err();
        assert!(refused.contains("never opened"), "{refused}");
        assert_eq!(
            plan("v", &[&a], &["b-address".to_owned()], true)
                .unwrap()
                .in_sync,
            vec![0]
        );
    }

    #[test]
    fn records_at_one_epoch_with_different_members_are_refused() {
        let a = record("a", 5, &["a"], &[]);
        let b = record("b", 5, &["b"], &[]);
        let refused = plan("v", &[&a, &b], &[], false).unwrap_err();
        assert!(refused.contains("different members"), "{refused}");
    }
}
