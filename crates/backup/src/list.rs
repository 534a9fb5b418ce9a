//! Reading what a backupstore holds: volumes, and each volume's complete backups.

use anyhow::{Context, bail};

use crate::format::{BackupRecord, backup_record_path, backups_dir};
use crate::target::Target;

/// Names of the volumes with backups (or leftovers of one) in the target.
pub async fn list_volumes(target: &Target) -> anyhow::Result<Vec<String>> {
    let mut volumes = target.list_dirs("volumes").await?;
    volumes.sort();
    Ok(volumes)
}

/// Every complete backup of `volume`, oldest first. Backups still running (or killed)
/// have no record yet, so they are not listed.
pub async fn list_backups(target: &Target, volume: &str) -> anyhow::Result<Vec<BackupRecord>> {
    list_backups_except(target, volume, "").await
}

/// [`list_backups`] without backup `except` (which is not read at all).
pub(crate) async fn list_backups_except(
    target: &Target,
    volume: &str,
    except: &str,
) -> anyhow::Result<Vec<BackupRecord>> {
    let mut records = Vec::new();
    for meta in target.list(&backups_dir(volume)).await? {
        let relative = target.relative(&meta.location);
        let Some(name) = relative
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if name == except {
            continue;
        }
        records.push(get_backup(target, volume, name).await?);
    }
    records.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(records)
}

/// Backup `name` of `volume`, checked.
pub async fn get_backup(target: &Target, volume: &str, name: &str) -> anyhow::Result<BackupRecord> {
    let path = backup_record_path(volume, name);
    let Some(record) = target.get_json::<BackupRecord>(&path).await? else {
        bail!("{}: volume {volume} has no backup {name}", target.url());
    };
    if record.name != name || record.volume != volume {
        bail!(
            "{}: {path} is corrupt: it names backup {} of volume {}",
            target.url(),
            record.name,
            record.volume
        );
    }
    record
        .validate()
        .with_context(|| format!("{}: {path} is corrupt", target.url()))?;
    Ok(record)
}
