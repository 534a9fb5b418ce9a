//! The events a volume pass reports: what changed between the status it read and the
//! one it wrote, for the volume and for each of its replicas.

use super::Manager;
use crate::events::{Happened, record};
use crate::model::{
    Replica, ReplicaState, ReplicaStatus, Robustness, VolumeState, VolumeStatus, json_name,
};

/// A reason and its message.
type Change = (&'static str, String);

impl Manager {
    /// Records an event for each change from `before` to `after` of volume `name`.
    pub(super) fn report_volume_change(
        &self,
        name: &str,
        before: &VolumeStatus,
        after: &VolumeStatus,
    ) {
        for (reason, message) in volume_changes(name, before, after) {
            self.report("volume", name, name, reason, message);
        }
    }

    /// Records an event for each change of `replica` since `before` (`None`: new).
    pub(super) fn report_replica_change(&self, before: Option<&Replica>, replica: &Replica) {
        for (reason, message) in replica_changes(before, replica) {
            self.report(
                "replica",
                &replica.name,
                &replica.spec.volume,
                reason,
                message,
            );
        }
    }

    /// Records an event of the API or a runner about `volume`.
    pub fn report(
        &self,
        object_kind: &str,
        object: &str,
        volume: &str,
        reason: &str,
        message: String,
    ) {
        let what = Happened {
            object_kind,
            object,
            volume: Some(volume),
            reason,
            message,
        };
        record(self.state.as_ref(), self.node(), what);
    }
}

fn volume_changes(name: &str, before: &VolumeStatus, after: &VolumeStatus) -> Vec<Change> {
    let mut changes = Vec::new();
    if before.state != after.state {
        let reason = match after.state {
            VolumeState::Creating => "Creating",
            VolumeState::Detached => "Detached",
            VolumeState::Attaching => "Attaching",
            VolumeState::Attached => "Attached",
            VolumeState::Detaching => "Detaching",
            VolumeState::Failed => "VolumeFailed",
            VolumeState::Standby => "Standby",
        };
        let mut message = format!(
            "volume {name}: {} → {}",
            json_name(&before.state),
            json_name(&after.state)
        );
        if let (VolumeState::Attached, Some(endpoint)) = (after.state, &after.endpoint) {
            message.push_str(&format!(", serving {endpoint}"));
        }
        if !after.message.is_empty() && after.state == VolumeState::Failed {
            message.push_str(&format!(": {}", after.message));
        }
        changes.push((reason, message));
    }
    if before.robustness != after.robustness && after.robustness != Robustness::Unknown {
        let reason = match after.robustness {
            Robustness::Healthy => "Healthy",
            Robustness::Degraded => "Degraded",
            Robustness::Faulted | Robustness::Unknown => "Faulted",
        };
        changes.push((
            reason,
            format!(
                "volume {name}: {} → {}",
                json_name(&before.robustness),
                json_name(&after.robustness)
            ),
        ));
    }
    let standby = |status: &VolumeStatus| status.standby.clone().unwrap_or_default();
    let (was, now) = (standby(before), standby(after));
    if now.restoring.is_some() && now.restoring != was.restoring {
        changes.push((
            "StandbyRestoring",
            format!(
                "volume {name}: restoring backup {} onto its replicas",
                now.restoring.as_deref().unwrap_or_default()
            ),
        ));
    }
    if now.last_restored.is_some() && now.last_restored != was.last_restored {
        changes.push((
            "StandbyRestored",
            format!(
                "volume {name}: holds backup {} ({} bytes fetched); {} newer backups",
                now.last_restored.as_deref().unwrap_or_default(),
                now.last_restore_bytes,
                now.lag_backups
            ),
        ));
    }
    if !now.message.is_empty() && now.message != was.message {
        changes.push((
            "StandbyNotFollowing",
            format!("volume {name}: {}", now.message),
        ));
    }
    changes
}

fn replica_changes(before: Option<&Replica>, after: &Replica) -> Vec<Change> {
    let name = &after.name;
    let mut changes = Vec::new();
    // A replica placed in this pass may have been started in it too: both are said.
    let pending = ReplicaStatus::default();
    let was = match before {
        Some(before) => &before.status,
        None => {
            changes.push((
                "Scheduled",
                format!(
                    "replica {name} of volume {} placed on node {} disk {}",
                    after.spec.volume, after.spec.node, after.spec.disk
                ),
            ));
            &pending
        }
    };
    let is = &after.status;
    if was.state != is.state {
        let reason = match is.state {
            ReplicaState::Pending => "Pending",
            ReplicaState::Running => "ReplicaStarted",
            ReplicaState::Rebuilding => "RebuildStarted",
            ReplicaState::Failed => "ReplicaFailed",
            ReplicaState::Stopped => "ReplicaStopped",
        };
        let mut message = format!(
            "replica {name} on node {}: {} → {}",
            after.spec.node,
            json_name(&was.state),
            json_name(&is.state)
        );
        if is.state == ReplicaState::Failed && !is.message.is_empty() {
            message.push_str(&format!(": {}", is.message));
        }
        changes.push((reason, message));
    }
    if was.state == ReplicaState::Rebuilding && is.state == ReplicaState::Running {
        changes.push((
            "RebuildFinished",
            format!("replica {name} is rebuilt and serves"),
        ));
    }
    if after.spec.retire && before.is_none_or(|b| !b.spec.retire) {
        // The message says why (see `retire_excess` and `Evictions::retire_moved`).
        let reason = if is.message.contains("is being evicted") {
            "Evicted"
        } else {
            "ReplicaRetiring"
        };
        changes.push((
            reason,
            format!(
                "replica {name} of volume {} {}",
                after.spec.volume, is.message
            ),
        ));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReplicaSpec;

    fn replica(state: ReplicaState) -> Replica {
        let mut replica = Replica {
            name: "v-r1".into(),
            spec: ReplicaSpec {
                volume: "v".into(),
                node: "n1".into(),
                disk: "d1".into(),
                data_dir: "/d1/replicas/v-r1".into(),
                port: 10_000,
                desire_running: true,
                restore_from: None,
                clone_from: None,
                retire: false,
            },
            status: Default::default(),
        };
        replica.status.state = state;
        replica
    }

    #[test]
    fn a_volume_reports_state_and_robustness_changes_and_nothing_else() {
        let before = VolumeStatus::default();
        let mut after = before.clone();
        assert!(volume_changes("v", &before, &after).is_empty());
        after.state = VolumeState::Attached;
        after.endpoint = Some("nbd://h:1".into());
        after.robustness = Robustness::Healthy;
        let changes = volume_changes("v", &before, &after);
        let reasons: Vec<_> = changes.iter().map(|(r, _)| *r).collect();
        assert_eq!(reasons, ["Attached", "Healthy"]);
        assert_eq!(
            changes[0].1,
            "volume v: creating → attached, serving nbd://h:1"
        );
    }

    #[test]
    fn a_replica_reports_placement_failure_and_rebuild() {
        let new = replica(ReplicaState::Pending);
        assert_eq!(replica_changes(None, &new)[0].0, "Scheduled");
        let started: Vec<_> = replica_changes(None, &replica(ReplicaState::Running))
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(started, ["Scheduled", "ReplicaStarted"]);
        assert!(replica_changes(Some(&new), &new).is_empty());
        let rebuilding = replica(ReplicaState::Rebuilding);
        let running = replica(ReplicaState::Running);
        let reasons: Vec<_> = replica_changes(Some(&rebuilding), &running)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(reasons, ["ReplicaStarted", "RebuildFinished"]);
        let mut evicted = running.clone();
        evicted.spec.retire = true;
        evicted.status.message =
            "retiring: node n1 is being evicted; 2 healthy replicas elsewhere".into();
        let changes = replica_changes(Some(&running), &evicted);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, "Evicted");
        assert!(
            changes[0].1.contains("node n1 is being evicted"),
            "{}",
            changes[0].1
        );
        assert!(replica_changes(Some(&evicted), &evicted).is_empty());
        let mut fewer = running.clone();
        fewer.spec.retire = true;
        fewer.status.message = "retiring: the volume wants fewer replicas".into();
        assert_eq!(
            replica_changes(Some(&running), &fewer)[0].0,
            "ReplicaRetiring"
        );
        let mut failed = replica(ReplicaState::Failed);
        failed.status.message = "connection refused".into();
        let changes = replica_changes(Some(&running), &failed);
        assert_eq!(changes[0].0, "ReplicaFailed");
        assert!(
            changes[0].1.ends_with(": connection refused"),
            "{}",
            changes[0].1
        );
    }
}
