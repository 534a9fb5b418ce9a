//! Data locality (`best-effort`): while a volume is attached, one of its replicas is on
//! the engine's node, where the engine reaches it over the replica's unix socket
//! instead of the network. Attached on a node without one, a replica is placed there
//! beside the others (one more than wanted); once the engine has it in sync, the least
//! useful of the others retires. If the node cannot take a replica (no disk, no room,
//! scheduling off, evicting), the volume keeps its replicas where they are and its
//! message says why.

use super::eviction::Evictions;
use crate::model::{DataLocality, Replica, ReplicaState, Volume};

/// The node that should hold a replica of `volume` for locality, if any.
pub(super) fn local_node(volume: &Volume) -> Option<&str> {
    match volume.spec.data_locality {
        DataLocality::BestEffort => volume.spec.attached_node.as_deref(),
        DataLocality::Disabled => None,
    }
}

/// What locality asks of `volume`'s replicas this pass.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Locality {
    /// Nothing: locality off, the volume detached, or a replica there in sync.
    Satisfied {
        /// The replica on the engine's node, which never retires for an excess.
        local: Option<String>,
    },
    /// A replica on the engine's node is being built (or recovering): none of the
    /// others retires for it until it is in sync.
    Building,
    /// No replica there: one is to be placed on this node.
    Missing(String),
}

impl Locality {
    /// The in-sync replica on the engine's node, if locality has one.
    pub(super) fn local_replica(&self) -> Option<&str> {
        match self {
            Locality::Satisfied { local } => local.as_deref(),
            Locality::Building | Locality::Missing(_) => None,
        }
    }
}

/// Where `volume` stands with locality among its `replicas` (those being evicted do
/// not count: they are leaving).
pub(super) fn locality(volume: &Volume, replicas: &[Replica], evictions: &Evictions) -> Locality {
    let Some(node) = local_node(volume) else {
        return Locality::Satisfied { local: None };
    };
    let local = replicas
        .iter()
        .filter(|r| r.spec.desire_running && r.spec.node == node && evictions.keeps(r))
        .min_by_key(|r| (r.status.state != ReplicaState::Running, r.name.clone()));
    match local {
        Some(r) if r.status.state == ReplicaState::Running => Locality::Satisfied {
            local: Some(r.name.clone()),
        },
        Some(_) => Locality::Building,
        None => Locality::Missing(node.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReplicaSpec, ReplicaStatus, VolumeSpec, VolumeStatus};

    fn volume(attached: Option<&str>, locality: DataLocality) -> Volume {
        Volume {
            name: "v".into(),
            spec: VolumeSpec {
                size: 1 << 30,
                replicas: 2,
                node_selector: Vec::new(),
                disk_selector: Vec::new(),
                attached_node: attached.map(str::to_string),
                recurring_jobs: Vec::new(),
                recurring_job_groups: Vec::new(),
                from_backup: None,
                from_snapshot: None,
                salvage_requests: 0,
                data_locality: locality,
                labels: Default::default(),
                standby: None,
            },
            status: VolumeStatus::default(),
        }
    }

    fn replica(name: &str, node: &str, state: ReplicaState) -> Replica {
        Replica {
            name: name.into(),
            spec: ReplicaSpec {
                volume: "v".into(),
                node: node.into(),
                disk: "d".into(),
                data_dir: format!("/d/replicas/{name}"),
                port: 20000,
                desire_running: true,
                restore_from: None,
                clone_from: None,
                retire: false,
            },
            status: ReplicaStatus {
                state,
                ..ReplicaStatus::default()
            },
        }
    }

    #[test]
    fn disabled_or_detached_asks_nothing() {
        let replicas = [replica("a", "n1", ReplicaState::Running)];
        let none = Locality::Satisfied { local: None };
        let off = volume(Some("n2"), DataLocality::Disabled);
        assert_eq!(locality(&off, &replicas, &Evictions::default()), none);
        let detached = volume(None, DataLocality::BestEffort);
        assert_eq!(locality(&detached, &replicas, &Evictions::default()), none);
    }

    #[test]
    fn attached_elsewhere_wants_a_replica_there_then_waits_for_it() {
        let on = volume(Some("n3"), DataLocality::BestEffort);
        let mut replicas = vec![
            replica("a", "n1", ReplicaState::Running),
            replica("b", "n2", ReplicaState::Running),
        ];
        let evictions = Evictions::default();
        assert_eq!(
            locality(&on, &replicas, &evictions),
            Locality::Missing("n3".into())
        );
        replicas.push(replica("c", "n3", ReplicaState::Rebuilding));
        assert_eq!(locality(&on, &replicas, &evictions), Locality::Building);
        replicas[2].status.state = ReplicaState::Running;
        assert_eq!(
            locality(&on, &replicas, &evictions),
            Locality::Satisfied {
                local: Some("c".into())
            }
        );
    }

    #[test]
    fn a_replica_given_up_on_does_not_count() {
        let on = volume(Some("n1"), DataLocality::BestEffort);
        let mut given_up = replica("a", "n1", ReplicaState::Failed);
        given_up.spec.desire_running = false;
        assert_eq!(
            locality(&on, &[given_up], &Evictions::default()),
            Locality::Missing("n1".into())
        );
    }
}
