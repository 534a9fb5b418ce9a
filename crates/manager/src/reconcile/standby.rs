//! Standby (disaster recovery) volumes: replicas that follow the backups of a volume in
//! a backup target, and never run until the volume is activated.
//!
//! Each standby's owner reads the target's list of the source volume's backups in the
//! background (every `backup_poll_interval`, and at once on `volume sync`). When it
//! lists a backup newer than the one the replicas hold, every replica's directory is
//! restored to it by the restore task the node agent runs — the restore compares the
//! directory with the backup block by block and fetches only the blocks that differ, so
//! after the first restore each one costs what changed. Replicas are identical after
//! each restore: they restore the same backup. Activation waits for the newest backup
//! to be applied (or not, with `at_last_restored`), then drops the standby spec: from
//! the next pass on the replicas start and the volume is an ordinary one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use shorthorn_backup::{BackupSource, Target, list_backups};

use super::replicas::mark_failed;
use super::{MAX_START_FAILURES, Manager};
use crate::clock::waited;
use crate::model::{
    Replica, ReplicaState, Robustness, Settings, StandbySpec, StandbyStatus, Volume, VolumeState,
};
use crate::state::{Kind, StateStoreExt};
use shorthorn_agent::protocol::restore_task_name;

/// One backup of a standby's source, as the target lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    name: String,
    /// When it completed (RFC 3339).
    completed: String,
    volume_size: u64,
}

/// What one read of the target found.
struct ReadOutcome {
    /// The source read (`spec.standby.source` then).
    source: String,
    /// `spec.standby.sync_requests` when the read started.
    syncs: u64,
    /// The source's backups, oldest first, or why they could not be read.
    backups: Result<Vec<Listed>, String>,
}

/// The list a read found, and which read it was.
#[derive(Clone)]
struct Listing {
    /// The source it lists.
    source: String,
    /// When it was read (RFC 3339): it is used only while `status.last_read` says this
    /// (another manager may have read since, or the volume have been made again).
    read_at: String,
    backups: Vec<Listed>,
}

/// How long after a failed read the target is read again.
const READ_RETRY: Duration = Duration::from_secs(10);

/// The standby volumes' reads of their targets, run in the background so that a slow
/// or unreachable target never holds up a reconcile pass.
#[derive(Default)]
pub(super) struct StandbyReads {
    /// Volumes whose read runs.
    running: Arc<Mutex<HashSet<String>>>,
    /// Reads finished and not yet applied, by volume.
    finished: Arc<Mutex<HashMap<String, ReadOutcome>>>,
    /// The last list read for each volume (kept in memory: a restarted manager reads
    /// again at once).
    listings: Mutex<HashMap<String, Listing>>,
    /// When a volume's last read failed.
    failed: Mutex<HashMap<String, Instant>>,
}

impl StandbyReads {
    fn is_running(&self, volume: &str) -> bool {
        self.running.lock().is_ok_and(|r| r.contains(volume))
    }

    fn failed_lately(&self, volume: &str) -> bool {
        self.failed
            .lock()
            .is_ok_and(|f| f.get(volume).is_some_and(|at| at.elapsed() < READ_RETRY))
    }

    fn note_failure(&self, volume: &str) {
        if let Ok(mut failed) = self.failed.lock() {
            failed.insert(volume.to_string(), Instant::now());
        }
    }

    fn take_finished(&self, volume: &str) -> Option<ReadOutcome> {
        self.finished.lock().ok()?.remove(volume)
    }

    /// The list last read for `volume` from `source`, if that read is the one its
    /// status records (`last_read`).
    fn listing(&self, volume: &str, source: &str, last_read: Option<&str>) -> Option<Vec<Listed>> {
        let listings = self.listings.lock().ok()?;
        let listing = listings.get(volume)?;
        (listing.source == source && Some(listing.read_at.as_str()) == last_read)
            .then(|| listing.backups.clone())
    }

    fn keep_listing(&self, volume: &str, listing: Listing) {
        if let Ok(mut listings) = self.listings.lock() {
            listings.insert(volume.to_string(), listing);
        }
    }

    /// Forgets a volume that is no longer a standby (activated or deleted).
    pub(super) fn forget(&self, volume: &str) {
        if let Ok(mut listings) = self.listings.lock() {
            listings.remove(volume);
        }
        if let Ok(mut finished) = self.finished.lock() {
            finished.remove(volume);
        }
        if let Ok(mut failed) = self.failed.lock() {
            failed.remove(volume);
        }
    }

    /// Starts reading `source`'s backups for `volume` with `target` (already opened).
    fn start(&self, volume: &str, source: BackupSource, url: &str, target: Target, syncs: u64) {
        if let Ok(mut running) = self.running.lock()
            && !running.insert(volume.to_string())
        {
            return;
        }
        let (running, finished, volume, url) = (
            self.running.clone(),
            self.finished.clone(),
            volume.to_string(),
            url.to_string(),
        );
        tokio::spawn(async move {
            let backups = list_backups(&target, &source.volume)
                .await
                .map(|records| {
                    let mut listed: Vec<Listed> = records
                        .into_iter()
                        .map(|r| Listed {
                            name: r.name,
                            completed: r.completed,
                            volume_size: r.volume_size,
                        })
                        .collect();
                    listed.sort_by_key(|l| completed_at(&l.completed));
                    listed
                })
                .map_err(|e| {
                    format!(
                        "reading the backups of volume {} in {}: {:#}",
                        source.volume,
                        source.target,
                        anyhow::Error::from(e)
                    )
                });
            if let Ok(mut finished) = finished.lock() {
                finished.insert(
                    volume.clone(),
                    ReadOutcome {
                        source: url,
                        syncs,
                        backups,
                    },
                );
            }
            if let Ok(mut running) = running.lock() {
                running.remove(&volume);
            }
        });
    }
}

/// A backup's completion time; unreadable ones sort first.
fn completed_at(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The bytes a restore task's last report says it transferred:
/// `100% (… of … bytes examined, N transferred)`.
fn transferred_bytes(report: &str) -> Option<u64> {
    let (_, last) = report.rsplit_once(", ")?;
    last.strip_suffix(" transferred)")?.parse().ok()
}

/// How far `status.last_restored` is behind the newest backup of `listing`.
fn measure_lag(status: &mut StandbyStatus, listing: &[Listed]) {
    let newest = listing.last();
    status.newest = newest.map(|l| l.name.clone());
    status.newest_completed = newest.map(|l| l.completed.clone());
    let restored = status
        .last_restored
        .as_deref()
        .and_then(|name| listing.iter().position(|l| l.name == name));
    if let Some(at) = restored {
        status.last_restored_completed = Some(listing[at].completed.clone());
    }
    status.lag_backups = match restored {
        Some(at) => (listing.len() - at - 1) as u64,
        None => listing.len() as u64,
    };
    let seconds = |text: Option<&String>| text.and_then(|t| completed_at(t));
    status.lag_seconds = match (
        seconds(status.last_restored_completed.as_ref()),
        seconds(status.newest_completed.as_ref()),
    ) {
        (Some(restored), Some(newest)) => (newest - restored).num_seconds().max(0) as u64,
        (None, Some(newest)) => (Utc::now() - newest).num_seconds().max(0) as u64,
        _ => 0,
    };
}

impl Manager {
    /// One pass over a standby volume: read the target when due, restore the newest
    /// backup onto every replica, keep the replica count, activate when asked and
    /// caught up.
    pub(super) async fn reconcile_standby(
        &self,
        mut volume: Volume,
        mut replicas: Vec<Replica>,
        settings: &Settings,
    ) -> anyhow::Result<()> {
        let Some(spec) = volume.spec.standby.clone() else {
            return Ok(());
        };
        volume.status.owner = Some(self.node.clone());
        let source = BackupSource::parse(&spec.source)
            .with_context(|| format!("volume {}: standby source", volume.name))?;
        let stored_replicas: HashMap<String, Replica> = replicas
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        let mut status = volume
            .status
            .standby
            .clone()
            .unwrap_or_else(|| StandbyStatus {
                // The create request chose the first backup (the newest then).
                restoring: volume
                    .spec
                    .from_backup
                    .as_deref()
                    .and_then(|url| shorthorn_backup::BackupUrl::parse(url).ok())
                    .map(|url| url.backup),
                ..StandbyStatus::default()
            });

        // 1. The target's list: apply a finished read, start one when due.
        let mut fresh_read = false;
        if let Some(read) = self.standby_reads.take_finished(&volume.name)
            && read.source == spec.source
        {
            match read.backups {
                Ok(backups) => {
                    let now = Utc::now().to_rfc3339();
                    status.last_read = Some(now.clone());
                    status.syncs = read.syncs;
                    status.message.clear();
                    fresh_read = true;
                    self.standby_reads.keep_listing(
                        &volume.name,
                        Listing {
                            source: read.source,
                            read_at: now,
                            backups,
                        },
                    );
                }
                // Not a sync: `volume sync --wait` and activation wait for a read that
                // worked.
                Err(why) => {
                    self.standby_reads.note_failure(&volume.name);
                    status.message = why;
                }
            }
        }
        let listing =
            self.standby_reads
                .listing(&volume.name, &spec.source, status.last_read.as_deref());
        if let Some(listing) = &listing {
            measure_lag(&mut status, listing);
        }
        let read_due = listing.is_none()
            || spec.sync_requests > status.syncs
            || status
                .last_read
                .as_deref()
                .is_none_or(|at| waited(at, settings.backup_poll_interval));
        if read_due
            && !self.standby_reads.is_running(&volume.name)
            && !self.standby_reads.failed_lately(&volume.name)
        {
            match self.open_target(&source.target) {
                Ok(target) => self.standby_reads.start(
                    &volume.name,
                    source.clone(),
                    &spec.source,
                    target,
                    spec.sync_requests,
                ),
                Err(e) => {
                    self.standby_reads.note_failure(&volume.name);
                    status.message = format!("opening {}: {e:#}", source.target);
                }
            }
        }

        // 2. A newer backup than the replicas hold: restore it (unless activating with
        // what is there) once no replica is still filling. A restore whose backup went
        // from the target meanwhile switches to the newest.
        let at_last = spec.activation.as_ref().is_some_and(|a| a.at_last_restored);
        let idle = replicas.iter().all(|r| r.spec.restore_from.is_none());
        let newest = listing.as_ref().and_then(|l| l.last()).cloned();
        let restoring_gone = status.restoring.as_deref().is_some_and(|restoring| {
            listing
                .as_ref()
                .is_some_and(|l| !l.iter().any(|b| b.name == restoring))
        });
        let mut started = None;
        if let Some(newest) = &newest
            && (restoring_gone || (status.restoring.is_none() && idle && !at_last))
            && status.last_restored.as_deref() != Some(newest.name.as_str())
            && status.restoring.as_deref() != Some(newest.name.as_str())
        {
            let older = match (
                status
                    .last_restored_completed
                    .as_deref()
                    .and_then(completed_at),
                completed_at(&newest.completed),
            ) {
                (Some(held), Some(newest)) => newest <= held,
                _ => false,
            };
            if newest.volume_size != volume.spec.size {
                status.message = format!(
                    "backup {} holds {} bytes and the volume {}: a standby does not follow a source that changed size (create a new standby)",
                    newest.name, newest.volume_size, volume.spec.size
                );
            } else if older {
                status.message = format!(
                    "the newest backup in the target, {}, is not newer than backup {} the replicas hold: a standby never goes back",
                    newest.name,
                    status.last_restored.as_deref().unwrap_or_default()
                );
            } else {
                let listed = listing.as_deref().unwrap_or_default();
                if let Some(gone) = status
                    .last_restored
                    .as_deref()
                    .filter(|last| !listed.iter().any(|l| l.name == *last))
                {
                    self.report(
                        "volume",
                        &volume.name,
                        &volume.name,
                        "StandbyFullRestore",
                        format!(
                            "volume {}: backup {gone}, restored last, is gone from the target; restoring {} in full (every block checked against it)",
                            volume.name, newest.name
                        ),
                    );
                }
                if restoring_gone {
                    tracing::info!(volume = %volume.name, backup = %newest.name, "the backup being restored is gone from the target; restoring the newest instead");
                }
                status.restoring = Some(newest.name.clone());
                started = Some(newest.name.clone());
            }
        }
        let holds = status.restoring.clone().or(status.last_restored.clone());
        let url_of = |backup: &str| source.backup_url(backup).to_string();
        if let Some(backup) = &started {
            for replica in replicas.iter_mut().filter(|r| r.spec.desire_running) {
                // A fill still running restores another backup: stopped, so that the
                // next pass starts the new one (onto what it left, compared in full).
                if replica.spec.restore_from.is_some() {
                    let agent = self.agent_for(&replica.spec.node)?;
                    agent.stop(&restore_task_name(&replica.name)).await?;
                }
                replica.spec.restore_from = Some(url_of(backup));
            }
        }

        // 3. Replicas: those given up on go at once (all they held is in the target),
        // missing ones are placed and filled with what the others hold or are getting.
        let mut kept = Vec::new();
        for replica in replicas {
            if replica.spec.desire_running {
                kept.push(replica);
            } else {
                self.remove_replica(&replica).await?;
            }
        }
        let mut replicas = kept;
        let mut message = String::new();
        if replicas.len() < volume.spec.replicas
            && let Some(backup) = &holds
        {
            if !replicas.is_empty() && self.replaced_recently(&volume.name) {
                message = "waiting before replacing a failed replica again".into();
            } else {
                if !replicas.is_empty() {
                    self.note_replacement(&volume.name);
                }
                match self.schedule_replicas(
                    &volume,
                    &replicas,
                    volume.spec.replicas - replicas.len(),
                    None,
                ) {
                    Ok(new) => {
                        for mut replica in new {
                            replica.spec.restore_from = Some(url_of(backup));
                            replicas.push(replica);
                        }
                    }
                    Err(e) => message = format!("{e:#}"),
                }
            }
        }

        // 4. Fills: each replica restores what it is given; a failing restore is tried
        // again after the next read of the target (never given up on: the replica holds
        // a complete earlier backup); a replica whose node stays down is replaced.
        let mut progress = None;
        for replica in &mut replicas {
            if fresh_read {
                replica.status.start_failures = 0;
            }
            if !self.node_ready(&replica.spec.node) {
                match replica.status.failed_at.as_deref() {
                    None => mark_failed(replica, &format!("node {} is down", replica.spec.node)),
                    Some(at) if waited(at, settings.replica_replenishment_wait_interval) => {
                        replica.spec.desire_running = false;
                        replica.status.message =
                            format!("node {} did not come back; replaced", replica.spec.node);
                    }
                    Some(_) => {}
                }
                continue;
            }
            replica.status.failed_at = None;
            if replica.spec.restore_from.is_some() {
                if replica.status.start_failures >= MAX_START_FAILURES {
                    replica.status.message = format!(
                        "restore failed {} times; tried again after the next read of the target",
                        replica.status.start_failures
                    );
                    continue;
                }
                // One replica's trouble (a restore that cannot start) is its own: the
                // pass goes on and the status is saved.
                let filled = match self.agent_for(&replica.spec.node) {
                    Ok(agent) => self.fill_first(agent.as_ref(), &volume, replica).await,
                    Err(e) => Err(e),
                };
                // Never given up on (see above).
                replica.spec.desire_running = true;
                match filled {
                    Ok(true) => replica.status.start_failures = 0,
                    Ok(false) => {
                        progress = progress.or(replica.status.fill_progress.clone());
                        continue;
                    }
                    Err(e) => {
                        replica.status.message = format!("{e:#}");
                        message = format!("replica {}: {e:#}", replica.name);
                        continue;
                    }
                }
            }
            replica.status.state = ReplicaState::Stopped;
            if let Some(backup) = &status.last_restored
                && replica.status.fill_progress.is_none()
            {
                replica.status.message = format!("standby: holds backup {backup}");
            }
        }
        status.progress = status.restoring.as_ref().and(progress);

        // 5. A restore is complete once every replica has it.
        let filled = replicas
            .iter()
            .filter(|r| r.spec.desire_running && r.spec.restore_from.is_none())
            .count();
        let all_filled = filled > 0 && filled == replicas.len();
        if status.restoring.is_some() && all_filled {
            status.last_restore_bytes = replicas
                .iter()
                .filter_map(|r| r.status.fill_progress.as_deref())
                .filter_map(transferred_bytes)
                .max()
                .unwrap_or_default();
            status.last_restored = status.restoring.take();
            status.restored_at = Some(Utc::now().to_rfc3339());
            status.progress = None;
            for replica in &mut replicas {
                replica.status.fill_progress = None;
                replica.status.message = format!(
                    "standby: holds backup {}",
                    status.last_restored.as_deref().unwrap_or_default()
                );
            }
            if let Some(listing) = &listing {
                measure_lag(&mut status, listing);
            }
        }
        self.save_replicas(&replicas, &stored_replicas)?;

        // 6. Activation, once caught up.
        let activated = spec.activation.as_ref().is_some_and(|activation| {
            let caught_up = activation.at_last_restored
                || (status.syncs >= activation.after_sync
                    && listing.is_some()
                    && status.newest == status.last_restored);
            caught_up && status.restoring.is_none() && status.last_restored.is_some() && all_filled
        });
        if activated {
            self.activate(&volume.name, &spec, &status)?;
        }

        volume.status.endpoint = None;
        volume.status.message = if message.is_empty() {
            status.message.clone()
        } else {
            message
        };
        volume.status.state = if replicas.is_empty() && !volume.status.message.is_empty() {
            VolumeState::Failed
        } else if activated {
            VolumeState::Detached
        } else {
            VolumeState::Standby
        };
        // A replica in step holds the backup, or is restoring the next one with the
        // others; one whose node is down or whose restore keeps failing is not.
        let in_step = replicas
            .iter()
            .filter(|r| {
                r.spec.desire_running
                    && r.status.failed_at.is_none()
                    && r.status.start_failures < MAX_START_FAILURES
            })
            .count();
        volume.status.robustness = match in_step {
            _ if status.last_restored.is_none() => Robustness::Unknown,
            0 => Robustness::Faulted,
            n if n >= volume.spec.replicas => Robustness::Healthy,
            _ => Robustness::Degraded,
        };
        volume.status.standby = (!activated).then_some(status);
        self.save_status(&volume)
    }

    /// Turns standby volume `name` into an ordinary one (its spec loses `standby`).
    fn activate(
        &self,
        name: &str,
        spec: &StandbySpec,
        status: &StandbyStatus,
    ) -> anyhow::Result<()> {
        self.state.update::<Volume>(Kind::Volume, name, |volume| {
            volume.spec.standby = None;
            Ok(())
        })?;
        self.standby_reads.forget(name);
        let backup = status.last_restored.as_deref().unwrap_or_default();
        tracing::info!(volume = name, backup, source = %spec.source, "standby volume activated");
        self.report(
            "volume",
            name,
            name,
            "Activated",
            format!(
                "volume {name}: activated with backup {backup} of {} ({} newer backups not applied)",
                spec.source, status.lag_backups
            ),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, completed: &str) -> Listed {
        Listed {
            name: name.into(),
            completed: completed.into(),
            volume_size: 4096,
        }
    }

    #[test]
    fn a_restore_report_gives_the_bytes_transferred() {
        assert_eq!(
            transferred_bytes("100% (1000 of 1000 bytes examined, 400 transferred)"),
            Some(400)
        );
        assert_eq!(transferred_bytes("noise"), None);
    }

    #[test]
    fn the_lag_counts_backups_and_seconds_behind_the_newest() {
        let listing = [
            listed("b1", "2026-12-01T10:00:00+00:00"),
            listed("b2", "2026-12-01T10:00:20+00:00"),
            listed("b3", "2026-12-01T10:01:00+00:00"),
        ];
        let mut status = StandbyStatus {
            last_restored: Some("b1".into()),
            ..StandbyStatus::default()
        };
        measure_lag(&mut status, &listing);
        assert_eq!(status.newest.as_deref(), Some("b3"));
        assert_eq!((status.lag_backups, status.lag_seconds), (2, 60));
        assert_eq!(
            status.last_restored_completed.as_deref(),
            Some("2026-12-01T10:00:00+00:00")
        );
        status.last_restored = Some("b3".into());
        measure_lag(&mut status, &listing);
        assert_eq!((status.lag_backups, status.lag_seconds), (0, 0));
    }
}
