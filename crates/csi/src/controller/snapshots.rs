//! The controller's snapshots: `snap` ones in a volume's replicas, `bak` ones as backups
//! in a target, and their CSI forms.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use shorthorn_manager::api::Snapshot;
use shorthorn_manager::model::{Backup, BackupState, Volume};
use tonic::Status;

use super::{BACKUP_WAIT, CSI_NAME_LABEL, ControllerService, SNAPSHOT_LIST_PATIENCE, refusal};
use crate::ids::{SnapshotId, shorthorn_name};
use crate::pb;

/// How many volumes' snapshot lists are asked for at once.
const SNAPSHOT_LISTS_AT_ONCE: usize = 8;

impl ControllerService {
    /// Every volume (by name) with its snapshots. A volume's snapshots live in its
    /// replicas, so there is one manager call per volume; they run a few at a time,
    /// not one after another. A volume that cannot answer now is left out.
    async fn volumes_with_snapshots(&self) -> Result<Vec<(Volume, Vec<Snapshot>)>, Status> {
        let listed: Vec<_> = futures::stream::iter(self.volumes().await?)
            .map(|volume| async move {
                let snapshots = self.snapshots(&volume.name).await;
                (volume, snapshots)
            })
            .buffered(SNAPSHOT_LISTS_AT_ONCE)
            .collect()
            .await;
        Ok(listed
            .into_iter()
            .filter_map(|(volume, snapshots)| Some((volume, snapshots.ok()?)))
            .collect())
    }

    /// [`Self::snapshots`], tried again for a while when the volume cannot answer yet
    /// (its replicas starting, its engine stopping after a detach).
    pub(super) async fn snapshots_retrying(&self, volume: &str) -> Result<Vec<Snapshot>, Status> {
        let deadline = Instant::now() + SNAPSHOT_LIST_PATIENCE;
        loop {
            match self.snapshots(volume).await {
                Err(e) if e.code() != tonic::Code::NotFound && Instant::now() < deadline => {
                    tracing::debug!(%volume, error = %e, "listing snapshots; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                answer => return answer,
            }
        }
    }

    /// A volume's snapshots (user ones, not removed).
    pub(super) async fn snapshots(&self, volume: &str) -> Result<Vec<Snapshot>, Status> {
        match self
            .manager
            .get::<Vec<Snapshot>>(&format!("/v1/volumes/{volume}/snapshots"))
            .await
        {
            Ok(all) => Ok(all
                .into_iter()
                .filter(|s| s.user_created && !s.removed)
                .collect()),
            Err(e) if e.status() == Some(404) => {
                Err(Status::not_found(format!("no volume {volume:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn backup(&self, name: &str) -> Result<Option<Backup>, Status> {
        match self.manager.get(&format!("/v1/backups/{name}")).await {
            Ok(backup) => Ok(Some(backup)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every CSI snapshot: each volume's snapshots and the completed backups, by id.
    pub(super) async fn all_snapshots(&self) -> Result<Vec<pb::Snapshot>, Status> {
        let mut out = Vec::new();
        for (volume, snapshots) in self.volumes_with_snapshots().await? {
            out.extend(snapshots.iter().map(|s| snap_of(s, volume.spec.size)));
        }
        let backups: Vec<Backup> = self.manager.get("/v1/backups").await?;
        out.extend(backups.iter().filter_map(bak_of));
        out.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        Ok(out)
    }

    pub(super) async fn create_snap(
        &self,
        source: &str,
        csi_name: &str,
        size: u64,
    ) -> Result<pb::Snapshot, Status> {
        let name = shorthorn_name(csi_name)?;
        // A CSI snapshot name is unique in the cluster, a Shorthorn one only per volume.
        for (volume, snapshots) in self.volumes_with_snapshots().await? {
            if let Some(taken) = snapshots.iter().find(|s| s.name == name) {
                if volume.name == source {
                    return Ok(snap_of(taken, size));
                }
                return Err(Status::already_exists(format!(
                    "snapshot {csi_name:?} exists, of volume {}",
                    volume.name
                )));
            }
        }
        let body = json!({"name": name, "labels": {CSI_NAME_LABEL: csi_name}});
        let created: Snapshot = self
            .manager
            .post(&format!("/v1/volumes/{source}/snapshots"), body)
            .await
            .map_err(|e| refusal(e, "taking the snapshot"))?;
        Ok(snap_of(&created, size))
    }

    pub(super) async fn create_bak(
        &self,
        source: &str,
        csi_name: &str,
        target: Option<&str>,
    ) -> Result<pb::Snapshot, Status> {
        let backups: Vec<Backup> = self.manager.get("/v1/backups").await?;
        let named =
            |b: &&Backup| b.spec.labels.get(CSI_NAME_LABEL).map(String::as_str) == Some(csi_name);
        let backup = match backups.iter().find(named) {
            Some(b) if b.spec.volume != source => {
                return Err(Status::already_exists(format!(
                    "snapshot {csi_name:?} exists, of volume {}",
                    b.spec.volume
                )));
            }
            Some(b) => b.clone(),
            None => {
                let mut body = json!({"volume": source, "labels": {CSI_NAME_LABEL: csi_name}});
                if let Some(target) = target {
                    body["target"] = json!(target);
                }
                self.manager
                    .post("/v1/backups", body)
                    .await
                    .map_err(|e| refusal(e, "starting the backup"))?
            }
        };
        let deadline = Instant::now() + BACKUP_WAIT;
        let mut backup = backup;
        loop {
            match backup.status.state {
                BackupState::Completed => break,
                BackupState::Error => {
                    return Err(Status::internal(format!(
                        "backup {} of volume {source} failed: {}",
                        backup.name, backup.status.message
                    )));
                }
                BackupState::Pending | BackupState::InProgress if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    backup = self.backup(&backup.name).await?.ok_or_else(|| {
                        Status::aborted(format!("backup {} went away", backup.name))
                    })?;
                }
                BackupState::Pending | BackupState::InProgress => break,
            }
        }
        let mut snapshot = bak_of(&backup).unwrap_or_else(|| pb::Snapshot {
            snapshot_id: SnapshotId::Bak {
                volume: source.to_string(),
                backup: backup.name.clone(),
            }
            .to_string(),
            source_volume_id: source.to_string(),
            ready_to_use: false,
            ..pb::Snapshot::default()
        });
        snapshot.ready_to_use = backup.status.state == BackupState::Completed;
        Ok(snapshot)
    }
}

/// The CSI form of a replica snapshot of a volume of `size` bytes.
pub(super) fn snap_of(snapshot: &Snapshot, size: u64) -> pb::Snapshot {
    pb::Snapshot {
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        snapshot_id: SnapshotId::Snap {
            volume: snapshot.volume.clone(),
            name: snapshot.name.clone(),
        }
        .to_string(),
        source_volume_id: snapshot.volume.clone(),
        creation_time: timestamp(&snapshot.created),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// The CSI form of a completed backup.
pub(super) fn bak_of(backup: &Backup) -> Option<pb::Snapshot> {
    (backup.status.state == BackupState::Completed).then(|| pb::Snapshot {
        size_bytes: i64::try_from(backup.status.volume_size).unwrap_or(i64::MAX),
        snapshot_id: SnapshotId::Bak {
            volume: backup.spec.volume.clone(),
            backup: backup.name.clone(),
        }
        .to_string(),
        source_volume_id: backup.spec.volume.clone(),
        creation_time: backup.status.completed.as_deref().and_then(timestamp),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    })
}

pub(super) fn timestamp(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    })
}
