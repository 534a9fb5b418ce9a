//! Recurring jobs: cron-scheduled snapshots and backups of the volumes that select a job
//! (by name or through one of its groups), pruned to the newest `retain` per volume; and
//! the two that only prune: `snapshot-cleanup` (system snapshots) and `snapshot-delete`
//! (user snapshots beyond `retain`).
//!
//! A job runs for the volumes this manager owns, if they are attached (a snapshot needs
//! the engine); detached ones are listed as skipped in the job's status. A run that is still going when the
//! job is due again is not started twice.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use shorthorn_backup::{
    BackupOptions, LockOptions, Target, TargetPolicy, delete_backup, list_backups,
};
use shorthorn_block::LayerInfo;
use shorthorn_proto::v1 as pb;

use crate::backups::{DEFAULT_TARGET, VolumeLocks, target_access, target_url, upload_snapshot};
use crate::engine_client::{EngineClient, connect_engine};
use crate::model::{Engine, JobTask, RecurringJob, Volume};
use crate::state::{Kind, StateStore, StateStoreExt};

/// The label every snapshot and backup of a job carries, with the job's name.
pub const JOB_LABEL: &str = "recurring-job";

/// Parses a job's cron expression: five fields (minute precision, UTC), or six with a
/// leading seconds field.
pub fn parse_cron(expression: &str) -> anyhow::Result<cron::Schedule> {
    let fields = expression.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expression}"),
        6 => expression.to_string(),
        _ => bail!(
            "cron {expression:?}: write 5 fields (MIN HOUR DOM MON DOW) or 6 (with seconds first)"
        ),
    };
    cron::Schedule::from_str(&full).with_context(|| format!("cron {expression:?}"))
}

/// The next time `job` fires after `after`.
fn next_run(job: &RecurringJob, after: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    parse_cron(&job.spec.cron)?
        .after(&after)
        .next()
        .with_context(|| format!("job {}: cron {:?} never fires", job.name, job.spec.cron))
}

/// Starts due jobs; called every reconcile pass.
#[derive(Default)]
pub struct JobRunner {
    running: Arc<Mutex<HashSet<String>>>,
    /// Shared with the backups.
    volume_locks: VolumeLocks,
    /// Which targets a backup job may open.
    target_policy: Arc<TargetPolicy>,
}

impl JobRunner {
    /// A runner whose jobs take `volume_locks` (shared with the backups) for each volume
    /// and back up only to targets `target_policy` allows.
    pub fn new(volume_locks: VolumeLocks, target_policy: Arc<TargetPolicy>) -> JobRunner {
        JobRunner {
            running: Arc::default(),
            volume_locks,
            target_policy,
        }
    }

    /// Starts every job whose time came (in the background) and schedules its next run.
    pub fn run_due(&self, state: &Arc<dyn StateStore>) -> anyhow::Result<()> {
        let now = Utc::now();
        for mut job in state.list::<RecurringJob>(Kind::RecurringJob)? {
            let due = match job
                .status
                .next_run
                .as_deref()
                .map(DateTime::parse_from_rfc3339)
            {
                Some(Ok(at)) => at.with_timezone(&Utc) <= now,
                // New job (or unreadable time): schedule it.
                _ => false,
            };
            let already = self
                .running
                .lock()
                .map(|r| r.contains(&job.name))
                .unwrap_or(true);
            if due && !already {
                job.status.last_run = Some(now.to_rfc3339());
                self.start(state.clone(), job.clone());
            }
            let next = next_run(&job, now).map(|t| t.to_rfc3339()).ok();
            if job.status.next_run.is_none() || due {
                let last_run = job.status.last_run.clone();
                state.update::<RecurringJob>(Kind::RecurringJob, &job.name, |stored| {
                    stored.status.next_run.clone_from(&next);
                    stored.status.last_run.clone_from(&last_run);
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn start(&self, state: Arc<dyn StateStore>, job: RecurringJob) {
        if let Ok(mut running) = self.running.lock() {
            running.insert(job.name.clone());
        }
        let running = self.running.clone();
        let volume_locks = self.volume_locks.clone();
        let policy = self.target_policy.clone();
        tokio::spawn(async move {
            let result = run_job(&state, &policy, &job, &volume_locks).await;
            let summary = match result {
                // No volume of this manager's selects it: another manager's run (with
                // etcd) says what happened, not this one.
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => Some(lines.join("; ")),
                Err(e) => Some(format!("failed: {e:#}")),
            };
            if let Some(summary) = summary {
                tracing::info!(job = %job.name, %summary, "recurring job ran");
                let written =
                    state.update::<RecurringJob>(Kind::RecurringJob, &job.name, |stored| {
                        stored.status.last_result.clone_from(&summary);
                        Ok(())
                    });
                if let Err(e) = written {
                    tracing::warn!(job = %job.name, error = %format!("{e:#}"), "recording a job's result");
                }
            }
            if let Ok(mut running) = running.lock() {
                running.remove(&job.name);
            }
        });
    }
}

/// Runs `job` once for every volume that selects it; one line per volume.
async fn run_job(
    state: &Arc<dyn StateStore>,
    policy: &TargetPolicy,
    job: &RecurringJob,
    volume_locks: &VolumeLocks,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for volume in state.list::<Volume>(Kind::Volume)? {
        let selected = volume.spec.recurring_jobs.contains(&job.name)
            || volume
                .spec
                .recurring_job_groups
                .iter()
                .any(|g| job.spec.groups.contains(g));
        if !selected {
            continue;
        }
        // The manager that owns the volume runs its jobs.
        if !state.claim(&volume.name)? {
            continue;
        }
        let engine = state
            .get::<Engine>(Kind::Engine, &Engine::name_for(&volume.name))?
            .and_then(|engine| engine.status.address);
        let engine = match (&volume.spec.attached_node, engine) {
            (Some(_), Some(engine)) => engine,
            _ => {
                lines.push(format!("{}: skipped (not attached)", volume.name));
                continue;
            }
        };
        let _volume = volume_locks.lock(&volume.name).await;
        let line = match run_for_volume(state.as_ref(), policy, job, &volume.name, &engine).await {
            Ok(done) => format!("{}: {done}", volume.name),
            Err(e) => format!("{}: failed: {e:#}", volume.name),
        };
        lines.push(line);
    }
    Ok(lines)
}

async fn run_for_volume(
    state: &dyn StateStore,
    policy: &TargetPolicy,
    job: &RecurringJob,
    volume: &str,
    engine: &str,
) -> anyhow::Result<String> {
    if !job.spec.task.takes_snapshot() {
        return prune_snapshots(job, engine).await;
    }
    let mut client = connect_engine(engine).await?;
    let mut labels: std::collections::HashMap<String, String> =
        job.spec.labels.clone().into_iter().collect();
    labels.insert(JOB_LABEL.into(), job.name.clone());
    let name = format!("{}-{}", job.name, Utc::now().format("%Y%m%dt%H%M%S%3f"));
    let snapshot = client
        .create_snapshot(pb::EngineCreateSnapshotRequest {
            name,
            system: false,
            labels,
        })
        .await
        .context("taking the snapshot")?
        .into_inner()
        .name;
    let mut done = format!("snapshot {snapshot}");
    if job.spec.task == JobTask::Backup {
        let url = target_url(
            state,
            policy,
            job.spec.target.as_deref().unwrap_or(DEFAULT_TARGET),
        )?;
        let mut backup_labels: BTreeMap<String, String> = job.spec.labels.clone();
        backup_labels.insert(JOB_LABEL.into(), job.name.clone());
        let options = BackupOptions {
            labels: backup_labels,
            ..BackupOptions::default()
        };
        let access = target_access(state, &url)?;
        let record =
            upload_snapshot(&url, &access, engine, &snapshot, &options, Arc::default()).await?;
        let target = Target::open(&url, &access.options(false))?;
        done.push_str(&format!(", backup {}", record.name));
        let mut ours: Vec<_> = list_backups(&target, volume)
            .await?
            .into_iter()
            .filter(|b| b.labels.get(JOB_LABEL) == Some(&job.name))
            .collect();
        ours.sort_by(|a, b| a.created.cmp(&b.created));
        let excess = ours.len().saturating_sub(job.spec.retain as usize);
        for old in &ours[..excess] {
            delete_backup(&target, volume, &old.name, LockOptions::default()).await?;
            done.push_str(&format!(", deleted backup {}", old.name));
        }
    }
    // Keep the newest `retain` snapshots of this job.
    let layers = list_layers(&mut client).await?;
    let mut ours: Vec<&LayerInfo> = layers
        .iter()
        .filter(|l| !l.is_head && !l.removed && l.labels.get(JOB_LABEL) == Some(&job.name))
        .collect();
    ours.sort_by(|a, b| a.created.cmp(&b.created));
    let excess = ours.len().saturating_sub(job.spec.retain as usize);
    let old: Vec<String> = ours[..excess]
        .iter()
        .map(|l| l.snapshot_name().to_owned())
        .collect();
    remove_and_purge(&mut client, &old).await?;
    for name in &old {
        done.push_str(&format!(", removed snapshot {name}"));
    }
    Ok(done)
}

/// The volume's layers, as its engine lists them.
async fn list_layers(client: &mut EngineClient) -> anyhow::Result<Vec<LayerInfo>> {
    let layers = client
        .list_snapshots(pb::ListSnapshotsRequest {})
        .await
        .context("listing snapshots")?
        .into_inner()
        .layers;
    Ok(layers.into_iter().map(LayerInfo::from).collect())
}

/// Removes the snapshots `names` and, if there were any, purges.
async fn remove_and_purge(client: &mut EngineClient, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        client
            .remove_snapshot(pb::RemoveSnapshotRequest { name: name.clone() })
            .await
            .with_context(|| format!("removing snapshot {name}"))?;
    }
    if !names.is_empty() {
        client
            .purge_snapshots(pb::PurgeSnapshotsRequest {})
            .await
            .context("purging snapshots")?;
    }
    Ok(())
}

/// The run of a `snapshot-cleanup` or `snapshot-delete` job: removes the snapshots its
/// rule names (none is an answer too) and purges.
async fn prune_snapshots(job: &RecurringJob, engine: &str) -> anyhow::Result<String> {
    let mut client = connect_engine(engine).await?;
    let layers = list_layers(&mut client).await?;
    let doomed = snapshots_to_prune(job.spec.task, job.spec.retain, &layers);
    if doomed.is_empty() {
        return Ok("nothing to remove".into());
    }
    remove_and_purge(&mut client, &doomed).await?;
    Ok(format!("removed and purged {}", doomed.join(", ")))
}

/// The snapshots a pruning job removes: for `snapshot-cleanup` every system snapshot,
/// for `snapshot-delete` the user snapshots older than the newest `retain`. The head and
/// snapshots already removed are never named.
fn snapshots_to_prune(task: JobTask, retain: u32, layers: &[LayerInfo]) -> Vec<String> {
    let mut candidates: Vec<&LayerInfo> = layers
        .iter()
        .filter(|l| !l.is_head && !l.removed && l.name.is_some())
        .filter(|l| match task {
            JobTask::SnapshotCleanup => !l.user_created,
            JobTask::SnapshotDelete => l.user_created,
            JobTask::Snapshot | JobTask::Backup => false,
        })
        .collect();
    candidates.sort_by(|a, b| a.created.cmp(&b.created));
    let keep = match task {
        JobTask::SnapshotDelete => retain as usize,
        _ => 0,
    };
    let excess = candidates.len().saturating_sub(keep);
    candidates[..excess]
        .iter()
        .map(|l| l.snapshot_name().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_takes_five_or_six_fields() {
        assert!(parse_cron("0 */6 * * *").is_ok());
        assert!(parse_cron("*/2 * * * * *").is_ok());
        assert!(parse_cron("* * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        let schedule = parse_cron("30 2 * * *").unwrap();
        let start = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = schedule.after(&start).next().unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-22T02:30:00+00:00");
    }

    fn layer(name: &str, created: &str, user: bool) -> LayerInfo {
        LayerInfo {
            name: Some(name.into()),
            created: created.into(),
            user_created: user,
            ..LayerInfo::default()
        }
    }

    fn layers() -> Vec<LayerInfo> {
        let mut removed = layer("gone", "2026-01-01T00:00:00Z", true);
        removed.removed = true;
        let head = LayerInfo {
            is_head: true,
            created: "2026-01-09T00:00:00Z".into(),
            ..LayerInfo::default()
        };
        vec![
            layer("u3", "2026-01-05T00:00:00Z", true),
            layer("sys1", "2026-01-02T00:00:00Z", false),
            removed,
            layer("u1", "2026-01-03T00:00:00Z", true),
            layer("sys2", "2026-01-06T00:00:00Z", false),
            layer("u2", "2026-01-04T00:00:00Z", true),
            head,
        ]
    }

    #[test]
    fn cleanup_names_every_system_snapshot_and_nothing_else() {
        let doomed = snapshots_to_prune(JobTask::SnapshotCleanup, 1, &layers());
        assert_eq!(doomed, ["sys1", "sys2"]);
    }

    #[test]
    fn delete_keeps_the_newest_user_snapshots() {
        assert_eq!(
            snapshots_to_prune(JobTask::SnapshotDelete, 2, &layers()),
            ["u1"]
        );
        assert_eq!(
            snapshots_to_prune(JobTask::SnapshotDelete, 1, &layers()),
            ["u1", "u2"]
        );
        assert!(snapshots_to_prune(JobTask::SnapshotDelete, 3, &layers()).is_empty());
    }

    #[test]
    fn task_names_are_the_api_names() {
        for (task, name) in JobTask::ALL {
            assert_eq!(serde_json::to_value(task).unwrap(), name);
            assert_eq!(task.takes_snapshot(), matches!(name, "snapshot" | "backup"));
        }
    }
}
