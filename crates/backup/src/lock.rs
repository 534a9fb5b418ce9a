//! Per-volume locks in the backupstore itself, so processes on different hosts agree.
//!
//! A lock is an object `volumes/<volume>/locks/<id>.json`. To acquire, a process writes
//! its lock, then lists the others: if any live lock conflicts it removes its own and
//! retries after a random pause, until the maximum wait runs out. Two conflicting
//! acquirers cannot both win: each writes before it lists, so at least one of them sees
//! the other. Backups and restores share the `backup` kind and run together; a `delete`
//! lock conflicts with every other lock, so deletions exclude backups, restores and each
//! other, and only one kind is ever active on a volume.
//!
//! A held lock is rewritten every third of its time-to-live. A lock is live while the
//! store's own clock — the modification time the store gave the newest write of it —
//! is within the time-to-live of the store's clock now (the time the store gives our
//! own latest write), so hosts with skewed clocks agree on what expired. A holder that
//! could not refresh within the time-to-live knows it lost the lock
//! ([`LockGuard::ensure_held`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::error::{Chain, LockError, TargetError};
use crate::format::locks_dir;
use crate::target::Target;

/// What a lock allows its holder to do beside others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Backups and restores: any number at once, never beside a deletion.
    Backup,
    /// Deletion and garbage collection: alone.
    Delete,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Backup => "backup",
            LockKind::Delete => "delete",
        }
    }

    fn conflicts_with(self, other: LockKind) -> bool {
        self == LockKind::Delete || other == LockKind::Delete
    }
}

/// Lock timing.
#[derive(Debug, Clone, Copy)]
pub struct LockOptions {
    /// Longest wait for a conflicting lock to go away.
    pub max_wait: Duration,
    /// How long a lock lives without a refresh (its holder may have died).
    pub ttl: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            max_wait: Duration::from_secs(300),
            ttl: Duration::from_secs(60),
        }
    }
}

/// The contents of a lock object (for people and error messages; liveness comes from
/// the object's modification time).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    id: String,
    kind: LockKind,
    operation: String,
    host: String,
    pid: u32,
    /// The holder's time-to-live in seconds: the holder decides how long its lock
    /// outlives it, and every other process judges expiry by it.
    ttl_seconds: u64,
}

/// A held lock. Clones share it; it is released when the last clone is dropped (or
/// [`LockGuard::release`] is awaited on the last one).
#[derive(Debug, Clone)]
pub struct LockGuard {
    inner: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    target: Target,
    path: String,
    description: String,
    lost: Arc<AtomicBool>,
    refresher: JoinHandle<()>,
    /// Set once [`LockGuard::release`] removed the lock, so dropping does not again.
    released: AtomicBool,
}

impl LockGuard {
    /// Fails if the lock could not be refreshed in time, so another process may now hold
    /// a conflicting one: check before anything that must happen under the lock.
    pub fn ensure_held(&self) -> Result<(), LockError> {
        if self.inner.lost.load(Ordering::SeqCst) {
            return Err(LockError::Lost {
                url: self.inner.target.url().to_string(),
                description: self.inner.description.clone(),
            });
        }
        Ok(())
    }

    /// Releases the lock now if this is its last holder; otherwise drops this clone.
    pub async fn release(self) -> Result<(), TargetError> {
        if let Some(held) = Arc::into_inner(self.inner) {
            held.refresher.abort();
            held.target.delete(&held.path).await?;
            held.released.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.refresher.abort();
        if self.released.load(Ordering::SeqCst) {
            return;
        }
        let (target, path) = (self.target.clone(), self.path.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = target.delete(&path).await {
                        tracing::warn!(error = %Chain(&e), "releasing a backupstore lock");
                    }
                });
            }
            Err(_) => tracing::warn!(%path, "lock dropped outside a runtime; it will expire"),
        }
    }
}

/// Runs `work` under a `kind` lock on `volume`, then releases the lock whether `work`
/// succeeded or not (a lock left behind would block deletions until it expired).
pub async fn with_lock<T, E: From<LockError>>(
    target: &Target,
    volume: &str,
    kind: LockKind,
    operation: &str,
    options: LockOptions,
    work: impl AsyncFnOnce(&LockGuard) -> Result<T, E>,
) -> Result<T, E> {
    let guard = acquire(target, volume, kind, operation, options).await?;
    let result = work(&guard).await;
    let released = guard.release().await;
    match (result, released) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(e)) => Err(LockError::from(e).into()),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(release)) => {
            tracing::warn!(error = %Chain(&release), "releasing a lock after a failure");
            Err(e)
        }
    }
}

/// Acquires a `kind` lock on `volume` for `operation` (named in errors others see).
pub async fn acquire(
    target: &Target,
    volume: &str,
    kind: LockKind,
    operation: &str,
    options: LockOptions,
) -> Result<LockGuard, LockError> {
    let id = format!(
        "{}-{:016x}",
        Utc::now().format("%Y%m%dT%H%M%S"),
        rand::random::<u64>()
    );
    let record = LockRecord {
        id: id.clone(),
        kind,
        operation: operation.to_string(),
        host: hostname(),
        pid: std::process::id(),
        ttl_seconds: options.ttl.as_secs().max(1),
    };
    let path = format!("{}/{id}.json", locks_dir(volume));
    let description = format!("{} lock {id} on volume {volume}", kind.name());
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let written = target.put_json_and_stat(&path, &record).await?;
        let now = written.last_modified;
        match first_conflict(target, volume, &path, kind, now, options.ttl).await {
            Ok(None) => break,
            Ok(Some(holder)) => {
                target.delete(&path).await?;
                if started.elapsed() >= options.max_wait {
                    return Err(LockError::Timeout {
                        volume: volume.to_string(),
                        max_wait: options.max_wait,
                        holder,
                    });
                }
                tracing::info!(volume, %holder, "waiting for a conflicting lock");
            }
            Err(e) => {
                let _ = target.delete(&path).await;
                return Err(e.into());
            }
        }
        let left = options.max_wait.saturating_sub(started.elapsed());
        let jitter = pause.mul_f64(rand::random::<f64>());
        tokio::time::sleep((pause + jitter).min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    let lost = Arc::new(AtomicBool::new(false));
    let refresher = tokio::spawn(refresh(
        target.clone(),
        path.clone(),
        record,
        options.ttl,
        lost.clone(),
    ));
    Ok(LockGuard {
        inner: Arc::new(Held {
            target: target.clone(),
            path,
            description,
            lost,
            refresher,
            released: AtomicBool::new(false),
        }),
    })
}

/// The first live lock (other than `own`) that conflicts with `kind`, described; expired
/// locks are removed on the way. A lock is judged by its holder's time-to-live
/// (`default_ttl` when it cannot be read).
async fn first_conflict(
    target: &Target,
    volume: &str,
    own: &str,
    kind: LockKind,
    now: DateTime<Utc>,
    default_ttl: Duration,
) -> Result<Option<String>, TargetError> {
    for meta in target.list(&locks_dir(volume)).await? {
        let relative = target.relative(&meta.location);
        if relative == own {
            continue;
        }
        let other = match target.get_json::<LockRecord>(&relative).await {
            Ok(Some(other)) => Ok(other),
            // Released since we listed it.
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        let ttl = other
            .as_ref()
            .map_or(default_ttl, |o| Duration::from_secs(o.ttl_seconds));
        let age = (now - meta.last_modified).to_std().unwrap_or_default();
        if age > ttl {
            tracing::info!(volume, lock = %relative, "removing an expired lock");
            target.delete(&relative).await?;
            continue;
        }
        // A lock we cannot read still blocks everything until it expires: better to wait
        // than to run beside an operation we cannot see.
        let holder = match other {
            Ok(other) if !kind.conflicts_with(other.kind) => continue,
            Ok(other) => format!(
                "{} ({} lock of pid {} on {})",
                other.operation,
                other.kind.name(),
                other.pid,
                other.host
            ),
            Err(e) => format!("an unreadable lock {relative} ({})", Chain(&e)),
        };
        return Ok(Some(holder));
    }
    Ok(None)
}

/// Rewrites the lock every third of its time-to-live; marks it lost when a whole
/// time-to-live passes without a successful rewrite.
async fn refresh(
    target: Target,
    path: String,
    record: LockRecord,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    let mut last_success = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match target.put_json(&path, &record).await {
            Ok(()) => last_success = Instant::now(),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), %path, "refreshing a backupstore lock");
                if last_success.elapsed() >= ttl {
                    lost.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetOptions;

    fn target(dir: &tempfile::TempDir) -> Target {
        let url = format!("file://{}", dir.path().display());
        Target::open(&url, &TargetOptions::default()).unwrap()
    }

    fn quick(max_wait_ms: u64) -> LockOptions {
        LockOptions {
            max_wait: Duration::from_millis(max_wait_ms),
            ttl: Duration::from_secs(3),
        }
    }

    #[tokio::test]
    async fn backups_share_and_deletion_waits_then_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(&dir);
        let a = acquire(&t, "v", LockKind::Backup, "backup a", quick(500))
            .await
            .unwrap();
        let b = acquire(&t, "v", LockKind::Backup, "restore b", quick(500))
            .await
            .unwrap();
        let err = acquire(&t, "v", LockKind::Delete, "delete", quick(600))
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("backup a") || format!("{err:#}").contains("restore b"),
            "{err:#}"
        );
        // Another volume is not affected.
        acquire(&t, "w", LockKind::Delete, "delete", quick(100))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        a.release().await.unwrap();
        let b2 = b.clone();
        b.release().await.unwrap();
        // Still held by the clone.
        assert!(
            acquire(&t, "v", LockKind::Delete, "delete", quick(300))
                .await
                .is_err()
        );
        b2.release().await.unwrap();
        let d = acquire(&t, "v", LockKind::Delete, "delete", quick(300))
            .await
            .unwrap();
        assert!(
            acquire(&t, "v", LockKind::Delete, "delete 2", quick(300))
                .await
                .is_err()
        );
        assert!(
            acquire(&t, "v", LockKind::Backup, "backup", quick(300))
                .await
                .is_err()
        );
        d.release().await.unwrap();
        assert!(t.list("volumes/v/locks").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_deletion_waiting_for_a_backup_proceeds_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(&dir);
        let backup = acquire(&t, "v", LockKind::Backup, "backup", quick(100))
            .await
            .unwrap();
        let t2 = t.clone();
        let deletion = tokio::spawn(async move {
            acquire(&t2, "v", LockKind::Delete, "delete", quick(10_000)).await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!deletion.is_finished());
        // Held across tasks: a clone moved into a task keeps it.
        let moved = backup.clone();
        tokio::spawn(async move { drop(moved) }).await.unwrap();
        assert!(!deletion.is_finished());
        backup.release().await.unwrap();
        deletion.await.unwrap().unwrap().release().await.unwrap();
    }
}
