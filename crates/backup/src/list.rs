//! Reading what a backupstore holds: volumes, and each volume's complete backups.

use crate::error::BackupError;
use crate::format::{BackupRecord, backup_record_path, backups_dir};
use crate::target::Target;

/// Names of the volumes with backups (or leftovers of one) in the target.
pub async fn list_volumes(target: &Target) -> Result<Vec<String>, BackupError> {
    let mut volumes = target.list_dirs("volumes").await?;
    volumes.sort();
    Ok(volumes)
}

/// Every complete backup of `volume`, oldest first. Backups still running (or killed)
/// have no record yet, so they are not listed.
pub async fn list_backups(target: &Target, volume: &str) -> Result<Vec<BackupRecord>, BackupError> {
    list_backups_except(target, volume, "").await
}

/// [`list_backups`] without backup `except` (which is not read at all).
pub(crate) async fn list_backups_except(
    target: &Target,
    volume: &str,
    except: &str,
) -> Result<Vec<BackupRecord>, BackupError> {
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
pub async fn get_backup(
    target: &Target,
    volume: &str,
    name: &str,
) -> Result<BackupRecord, BackupError> {
    let path = backup_record_path(volume, name);
    let Some(record) = target.get_json::<BackupRecord>(&path).await? else {
        return Err(BackupError::NotFound {
            url: target.url().to_string(),
            volume: volume.to_string(),
            backup: name.to_string(),
        });
    };
    if record.name != name || record.volume != volume {
        return Err(BackupError::MisnamedRecord {
            url: target.url().to_string(),
            path,
            named: record.name,
            named_volume: record.volume,
        });
    }
    if let Err(source) = record.validate() {
        return Err(BackupError::CorruptRecord {
            url: target.url().to_string(),
            path,
            source: Box::new(source),
        });
    }
    Ok(record)
}
