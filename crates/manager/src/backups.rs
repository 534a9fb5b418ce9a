//! Backup targets and backups as objects.
//!
//! A backup is run by its volume's owner: it takes the snapshot (unless one is named),
//! uploads it through a replica and writes the backup's status as it goes. The leader
//! reads each target's backup list every `poll_interval` — so backups made elsewhere
//! (`shorthorn backup create`, recurring jobs, another cluster writing the same target)
//! appear as objects and backups deleted elsewhere disappear — and deletes the backups
//! users asked to delete (record, then unreferenced blocks, under the target's lock).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use shorthorn_backup::{
    BackupOptions, BackupRecord, BackupUrl, LockOptions, Progress, ReplicaSource, Target,
    TargetPolicy, create_backup, delete_backup, list_backups, list_volumes,
};
use shorthorn_proto::v1 as pb;

use crate::clock::waited;
use crate::engine_client::connect_engine;
use crate::events::{self, Happened};
use crate::model::{
    Backup, BackupSpec, BackupState, BackupStatus, BackupTarget, BackupTargetStatus, Engine,
    TargetCredentials,
};
use crate::state::{Kind, StateStore, StateStoreExt};
use shorthorn_agent::protocol::TargetAccess;

/// The target used when none is named.
pub const DEFAULT_TARGET: &str = "default";
/// Longest object name (as `shorthorn_block::validate_name` allows).
const MAX_NAME: usize = 63;
/// How often a running backup's progress is written to its status.
const PROGRESS_PERIOD: Duration = Duration::from_secs(2);

/// The URL of the backup target `target` (a URL as it is, or a backup target object's),
/// if `policy` lets this node open it: a target stored before the node's policy changed
/// is refused here, not only when it was set.
pub fn target_url(
    state: &dyn StateStore,
    policy: &TargetPolicy,
    target: &str,
) -> anyhow::Result<String> {
    let url = if target.contains("://") {
        target.to_string()
    } else {
        let object: BackupTarget = state.get(Kind::BackupTarget, target)?.with_context(|| {
            format!(
                "no backup target {target:?} (set one: shorthorn backup-target set {target} URL)"
            )
        })?;
        object.spec.url
    };
    policy.check(&url)?;
    Ok(url)
}

/// How to reach the backup target at `url`: the endpoint and credentials of the backup
/// target object with that URL, if any (each missing part falls back to the
/// environment).
pub fn target_access(state: &dyn StateStore, url: &str) -> anyhow::Result<TargetAccess> {
    let targets: Vec<BackupTarget> = state.list(Kind::BackupTarget)?;
    let Some(target) = targets.into_iter().find(|t| t.spec.url == url) else {
        return Ok(TargetAccess::default());
    };
    let credentials: Option<TargetCredentials> =
        state.get(Kind::TargetCredentials, &target.name)?;
    Ok(TargetAccess {
        endpoint: target.spec.endpoint,
        access_key_id: credentials.as_ref().map(|c| c.access_key_id.clone()),
        secret_access_key: credentials.map(|c| c.secret_access_key),
    })
}

/// The existing target at `url`, if `policy` lets this node open it, with the endpoint
/// and credentials of its backup target object ([`target_access`]).
pub fn open_target(
    state: &dyn StateStore,
    policy: &TargetPolicy,
    url: &str,
) -> anyhow::Result<Target> {
    policy.check(url)?;
    let access = target_access(state, url)?;
    Ok(Target::open(url, &access.options(false))?)
}

/// A new backup's object name: the volume, the time, and a random suffix; for a volume
/// whose name leaves no room for that (names are at most 63 bytes), `backup-` instead.
pub fn new_backup_name(volume: &str) -> String {
    let time = Utc::now().format("%Y%m%dt%H%M%S");
    let name = format!("{volume}-b-{time}-{:04x}", rand::random::<u16>());
    if name.len() <= MAX_NAME {
        name
    } else {
        format!("backup-{time}-{:08x}", rand::random::<u32>())
    }
}

/// One lock per volume, held while a recurring job or a backup works on the volume's
/// snapshots: a snapshot job's pruning (remove + purge) must not merge away a layer a
/// backup of the same volume is reading.
#[derive(Default, Clone)]
pub struct VolumeLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl VolumeLocks {
    /// Waits for `volume`'s lock; held until the guard drops.
    pub async fn lock(&self, volume: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = match self.locks.lock() {
            Ok(mut locks) => locks.entry(volume.to_string()).or_default().clone(),
            // A panic elsewhere poisoned the map: go on without serialising.
            Err(_) => Arc::default(),
        };
        lock.lock_owned().await
    }
}

/// Starts backups, deletions and target reads that are due, each in the background;
/// called every reconcile pass.
#[derive(Default)]
pub struct BackupRunner {
    /// Work running in this process: backups and deletions by backup name, target
    /// reads by `target:<name>`.
    running: Arc<Mutex<HashSet<String>>>,
    /// The URL each target had when it was last read, so a changed target is read at
    /// once.
    read_urls: Mutex<HashMap<String, String>>,
    /// Shared with the recurring jobs.
    volume_locks: VolumeLocks,
    /// Which targets this node may open.
    target_policy: Arc<TargetPolicy>,
}

impl BackupRunner {
    /// A runner whose backups take `volume_locks` (shared with the recurring jobs) and
    /// open only the targets `target_policy` allows.
    pub fn new(volume_locks: VolumeLocks, target_policy: Arc<TargetPolicy>) -> BackupRunner {
        BackupRunner {
            volume_locks,
            target_policy,
            ..BackupRunner::default()
        }
    }

    /// One pass: backups of volumes this manager owns; the leader's work if it leads.
    pub fn run_due(&self, state: &Arc<dyn StateStore>, node: &str) -> anyhow::Result<()> {
        let backups: Vec<Backup> = state.list(Kind::Backup)?;
        for backup in &backups {
            let waiting = matches!(
                backup.status.state,
                BackupState::Pending | BackupState::InProgress
            );
            if !waiting || self.is_running(&backup.name) || !state.claim(&backup.spec.volume)? {
                continue;
            }
            if backup.status.state == BackupState::InProgress {
                // Its manager stopped mid-upload: what it uploaded is not listed (the
                // record is written last); a new backup reuses the stored blocks. (A
                // deletion waits for this.)
                update_status(state.as_ref(), &backup.name, |status| {
                    status.state = BackupState::Error;
                    status.message = "interrupted: the manager running it stopped".into();
                })?;
                continue;
            }
            if backup.spec.delete_requested {
                continue;
            }
            let (state, backup, node) = (state.clone(), backup.clone(), node.to_owned());
            let volume_locks = self.volume_locks.clone();
            let policy = self.target_policy.clone();
            self.spawn(backup.name.clone(), async move {
                let name = backup.name.clone();
                let volume = backup.spec.volume.clone();
                let _volume = volume_locks.lock(&volume).await;
                let target = backup.spec.target.clone();
                let (reason, message) = match run_backup(state.as_ref(), &policy, backup).await {
                    Ok(()) => {
                        read_target_soon(state.as_ref(), &target);
                        (
                            "BackupCompleted",
                            format!("backup {name} of volume {volume} completed"),
                        )
                    }
                    Err(e) => {
                        tracing::warn!(backup = %name, error = %format!("{e:#}"), "backup failed");
                        let _ = update_status(state.as_ref(), &name, |status| {
                            status.state = BackupState::Error;
                            status.message = format!("{e:#}");
                        });
                        (
                            "BackupFailed",
                            format!("backup {name} of volume {volume} failed: {e:#}"),
                        )
                    }
                };
                let what = Happened {
                    object_kind: "backup",
                    object: &name,
                    volume: Some(&volume),
                    reason,
                    message,
                };
                events::record(state.as_ref(), &node, what);
            });
        }
        if !state.is_leader()? {
            return Ok(());
        }
        for backup in backups {
            let settled = !matches!(backup.status.state, BackupState::InProgress);
            if backup.spec.delete_requested && settled && !self.is_running(&backup.name) {
                let (state, policy) = (state.clone(), self.target_policy.clone());
                self.spawn(backup.name.clone(), async move {
                    let name = backup.name.clone();
                    if let Err(e) = remove_backup(state.as_ref(), &policy, &backup).await {
                        tracing::warn!(backup = %name, error = %format!("{e:#}"), "backup deletion failed");
                        let _ = update_status(state.as_ref(), &name, |status| {
                            status.message = format!("deletion failed: {e:#}");
                        });
                    } else {
                        read_target_soon(state.as_ref(), &backup.spec.target);
                    }
                });
            }
        }
        for target in state.list::<BackupTarget>(Kind::BackupTarget)? {
            let key = format!("target:{}", target.name);
            if self.is_running(&key) || !self.read_due(&target) {
                continue;
            }
            if let Ok(mut urls) = self.read_urls.lock() {
                urls.insert(target.name.clone(), target.spec.url.clone());
            }
            let (state, running) = (state.clone(), self.running.clone());
            let policy = self.target_policy.clone();
            self.spawn(key, async move {
                read_target(state.as_ref(), &policy, &target, &running).await;
            });
        }
        Ok(())
    }

    fn read_due(&self, target: &BackupTarget) -> bool {
        let url_changed = self
            .read_urls
            .lock()
            .map(|urls| urls.get(&target.name) != Some(&target.spec.url))
            .unwrap_or(true);
        url_changed
            || target
                .status
                .last_synced
                .as_deref()
                .is_none_or(|at| waited(at, target.spec.poll_interval))
    }

    fn is_running(&self, key: &str) -> bool {
        self.running.lock().map_or(true, |r| r.contains(key))
    }

    fn spawn(&self, key: String, work: impl Future<Output = ()> + Send + 'static) {
        if let Ok(mut running) = self.running.lock() {
            running.insert(key.clone());
        }
        let running = self.running.clone();
        tokio::spawn(async move {
            work.await;
            if let Ok(mut running) = running.lock() {
                running.remove(&key);
            }
        });
    }
}

/// Changes a backup's status in the store (nothing if the object is gone).
fn update_status(
    state: &dyn StateStore,
    name: &str,
    change: impl FnOnce(&mut BackupStatus),
) -> anyhow::Result<()> {
    let mut change = Some(change);
    let mut status = None;
    state.update::<Backup>(Kind::Backup, name, |backup| {
        // Computed once; a retry (another writer came between) applies the same result.
        if status.is_none()
            && let Some(change) = change.take()
        {
            let mut changed = backup.status.clone();
            change(&mut changed);
            status = Some(changed);
        }
        if let Some(status) = &status {
            backup.status.clone_from(status);
        }
        Ok(())
    })?;
    Ok(())
}

/// Takes the snapshot (if none is named) and uploads it.
async fn run_backup(
    state: &dyn StateStore,
    policy: &TargetPolicy,
    backup: Backup,
) -> anyhow::Result<()> {
    let volume = backup.spec.volume.as_str();
    let url = target_url(state, policy, &backup.spec.target)?;
    let engine = state
        .get::<Engine>(Kind::Engine, &Engine::name_for(volume))?
        .and_then(|engine| engine.status.address)
        .with_context(|| {
            format!(
                "volume {volume} is not attached: a backup reads its snapshot through the engine"
            )
        })?;
    let snapshot = match &backup.spec.snapshot {
        Some(snapshot) => snapshot.clone(),
        None => {
            let mut client = connect_engine(&engine).await?;
            client
                .create_snapshot(pb::EngineCreateSnapshotRequest {
                    name: backup.name.clone(),
                    system: false,
                    labels: backup.spec.labels.clone().into_iter().collect(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("taking the snapshot: {}", e.message()))?
                .into_inner()
                .name
        }
    };
    update_status(state, &backup.name, |status| {
        status.state = BackupState::InProgress;
        status.snapshot = Some(snapshot.clone());
        status.message.clear();
    })?;
    tracing::info!(backup = %backup.name, %volume, %snapshot, target = %url, "backup started");
    let progress = Arc::new(Progress::default());
    let options = BackupOptions {
        name: Some(backup.name.clone()),
        labels: backup.spec.labels.clone(),
        ..BackupOptions::default()
    };
    let access = target_access(state, &url)?;
    let upload = upload_snapshot(
        &url,
        &access,
        &engine,
        &snapshot,
        &options,
        progress.clone(),
    );
    tokio::pin!(upload);
    let record = loop {
        tokio::select! {
            done = &mut upload => break done?,
            () = tokio::time::sleep(PROGRESS_PERIOD) => {
                // Progress is a courtesy: a failed write does not stop the upload.
                if let Err(e) = update_status(state, &backup.name, |status| {
                    status.progress = progress.summary();
                }) {
                    tracing::warn!(backup = %backup.name, error = %format!("{e:#}"), "recording backup progress");
                }
            }
        }
    };
    tracing::info!(backup = %backup.name, uploaded = record.stats.uploaded_bytes, "backup completed");
    update_status(state, &backup.name, |status| {
        *status = completed_status(&url, &record);
    })
}

/// Backs up `snapshot` of the volume behind `engine` (read from one of its replicas) to
/// the target at `url`, creating a `file://` target's directory.
pub(crate) async fn upload_snapshot(
    url: &str,
    access: &TargetAccess,
    engine: &str,
    snapshot: &str,
    options: &BackupOptions,
    progress: Arc<Progress>,
) -> anyhow::Result<BackupRecord> {
    let target = Target::open(url, &access.options(true))?;
    let (source, info) = ReplicaSource::open(engine, snapshot).await?;
    Ok(create_backup(&target, Arc::new(source), &info, options, progress).await?)
}

fn completed_status(url: &str, record: &BackupRecord) -> BackupStatus {
    BackupStatus {
        state: BackupState::Completed,
        snapshot: Some(record.snapshot.clone()),
        url: Some(
            BackupUrl {
                target: url.to_string(),
                volume: record.volume.clone(),
                backup: record.name.clone(),
            }
            .to_string(),
        ),
        volume_size: record.volume_size,
        read_bytes: record.stats.read_bytes,
        uploaded_bytes: record.stats.uploaded_bytes,
        completed: Some(record.completed.clone()),
        progress: String::new(),
        message: String::new(),
    }
}

/// Deletes a backup from its target (if it got there), then its object.
async fn remove_backup(
    state: &dyn StateStore,
    policy: &TargetPolicy,
    backup: &Backup,
) -> anyhow::Result<()> {
    if backup.status.state == BackupState::Completed {
        let url = target_url(state, policy, &backup.spec.target)?;
        let target = Target::open(&url, &target_access(state, &url)?.options(false))?;
        let summary = delete_backup(
            &target,
            &backup.spec.volume,
            &backup.name,
            LockOptions::default(),
        )
        .await?;
        tracing::info!(backup = %backup.name, ?summary, "backup deleted from its target");
    }
    state.delete(Kind::Backup, &backup.name)?;
    Ok(())
}

/// Has the leader read `target` again at its next pass (its backup count and list are
/// out of date once a backup completed or went): a target never synced is due.
fn read_target_soon(state: &dyn StateStore, target: &str) {
    let forgot = state.update::<BackupTarget>(Kind::BackupTarget, target, |target| {
        target.status.last_synced = None;
        Ok(())
    });
    if let Err(e) = forgot {
        tracing::warn!(%target, error = %format!("{e:#}"), "asking for a read of the target");
    }
}

/// Reads a target's backups: objects for those made elsewhere, none for those gone.
/// `running`: backups and deletions this manager has under way, left alone.
async fn read_target(
    state: &dyn StateStore,
    policy: &TargetPolicy,
    target: &BackupTarget,
    running: &Mutex<HashSet<String>>,
) {
    let started = Utc::now();
    let read = async {
        policy.check(&target.spec.url)?;
        let access = target_access(state, &target.spec.url)?;
        let opened = Target::open(&target.spec.url, &access.options(true))?;
        let mut records = Vec::new();
        for volume in list_volumes(&opened).await? {
            records.extend(list_backups(&opened, &volume).await?);
        }
        anyhow::Ok(records)
    };
    let status = match read.await {
        Ok(records) => match adopt_backups(state, target, &records, started, running) {
            Ok(()) => BackupTargetStatus {
                available: true,
                last_synced: Some(Utc::now().to_rfc3339()),
                backups: records.len(),
                message: String::new(),
            },
            Err(e) => unavailable(&e),
        },
        Err(e) => unavailable(&e),
    };
    if !status.available {
        tracing::warn!(target = %target.name, message = %status.message, "backup target");
    }
    // Unless the target changed meanwhile (then what was read is not its).
    let written = state.update::<BackupTarget>(Kind::BackupTarget, &target.name, |stored| {
        if stored.spec == target.spec {
            stored.status.clone_from(&status);
        }
        Ok(())
    });
    if let Err(e) = written {
        tracing::warn!(target = %target.name, error = %format!("{e:#}"), "recording a backup target's status");
    }
}

fn unavailable(error: &anyhow::Error) -> BackupTargetStatus {
    BackupTargetStatus {
        available: false,
        last_synced: Some(Utc::now().to_rfc3339()),
        backups: 0,
        message: format!("{error:#}"),
    }
}

/// Makes the target's objects match `records`, read from `started` on: completed
/// backups it holds get an object; objects completed before the read whose record is
/// gone are removed. Names in `running` (being backed up or deleted here) are left
/// alone.
fn adopt_backups(
    state: &dyn StateStore,
    target: &BackupTarget,
    records: &[BackupRecord],
    started: chrono::DateTime<Utc>,
    running: &Mutex<HashSet<String>>,
) -> anyhow::Result<()> {
    let busy: HashSet<String> = running.lock().map(|r| r.clone()).unwrap_or_default();
    // Removed or changed while it was read: what was read is not its anymore.
    let current: Option<BackupTarget> = state.get(Kind::BackupTarget, &target.name)?;
    if current.is_none_or(|current| current.spec != target.spec) {
        return Ok(());
    }
    let objects: BTreeMap<String, Backup> = state
        .list::<Backup>(Kind::Backup)?
        .into_iter()
        .map(|b| (b.name.clone(), b))
        .collect();
    let held: HashSet<(&str, &str)> = records
        .iter()
        .map(|r| (r.volume.as_str(), r.name.as_str()))
        .collect();
    for record in records.iter().filter(|r| !busy.contains(&r.name)) {
        match objects.get(&record.name) {
            None => {
                let backup = Backup {
                    name: record.name.clone(),
                    spec: BackupSpec {
                        volume: record.volume.clone(),
                        snapshot: Some(record.snapshot.clone()),
                        target: target.name.clone(),
                        labels: record.labels.clone(),
                        delete_requested: false,
                    },
                    status: completed_status(&target.spec.url, record),
                };
                state.put(Kind::Backup, &backup.name, &backup)?;
                tracing::info!(backup = %record.name, volume = %record.volume, "backup found in the target");
            }
            Some(object) if object.spec.volume != record.volume => {
                tracing::warn!(backup = %record.name, volume = %record.volume, other = %object.spec.volume, "a backup of another volume has the same name; not listed");
            }
            Some(_) => {}
        }
    }
    for object in objects.values() {
        let ours = object.spec.target == target.name && !busy.contains(&object.name);
        let gone = !held.contains(&(object.spec.volume.as_str(), object.name.as_str()));
        // One completed after the read started may be missing from it.
        let before_read = object
            .status
            .completed
            .as_deref()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .is_some_and(|completed| completed < started);
        if ours && gone && before_read && object.status.state == BackupState::Completed {
            state.delete(Kind::Backup, &object.name)?;
            tracing::info!(backup = %object.name, "backup no longer in its target");
        }
    }
    Ok(())
}
