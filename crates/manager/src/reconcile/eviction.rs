//! Eviction of a node or a disk: no new replica is placed there (the scheduler sees it
//! as evicting), each replica there gets a replacement elsewhere, and it retires only
//! once the volume has as many healthy replicas elsewhere as it wants — so an eviction
//! never leaves a volume with fewer healthy replicas than before. When there is nowhere
//! to go the replica stays, and the volume's message says why.

use std::collections::HashSet;

use crate::model::{Node, Replica, ReplicaState};

/// The nodes and disks being evicted, as read once per pass.
#[derive(Debug, Default)]
pub(super) struct Evictions {
    nodes: HashSet<String>,
    disks: HashSet<(String, String)>,
}

impl Evictions {
    pub(super) fn of(nodes: &[Node]) -> Evictions {
        let mut evictions = Evictions::default();
        for node in nodes {
            if node.spec.evict {
                evictions.nodes.insert(node.name.clone());
            }
            for disk in node.spec.disks.iter().filter(|d| d.evict) {
                evictions
                    .disks
                    .insert((node.name.clone(), disk.name.clone()));
            }
        }
        evictions
    }

    /// Why `replica` must move, if it must.
    pub(super) fn reason(&self, replica: &Replica) -> Option<String> {
        let node = &replica.spec.node;
        if self.nodes.contains(node) {
            return Some(format!("node {node} is being evicted"));
        }
        self.disks
            .contains(&(node.clone(), replica.spec.disk.clone()))
            .then(|| format!("disk {} of node {node} is being evicted", replica.spec.disk))
    }

    /// Whether `replica` stays where it is.
    pub(super) fn keeps(&self, replica: &Replica) -> bool {
        self.reason(replica).is_none()
    }

    /// Retires the wanted replicas that must move once the engine (running) holds
    /// `wanted` healthy (RW) replicas elsewhere; until then, says in each what it waits
    /// for. Returns how many retired.
    pub(super) fn retire_moved(
        &self,
        replicas: &mut [Replica],
        wanted: usize,
        engine_running: bool,
    ) -> usize {
        let healthy_elsewhere = replicas
            .iter()
            .filter(|r| r.spec.desire_running && self.keeps(r))
            .filter(|r| r.status.state == ReplicaState::Running)
            .filter(|r| r.status.mode.as_deref() == Some("RW"))
            .count();
        let done = engine_running && healthy_elsewhere >= wanted;
        let mut retired = 0;
        for replica in replicas.iter_mut().filter(|r| r.spec.desire_running) {
            let Some(reason) = self.reason(replica) else {
                continue;
            };
            if done {
                tracing::info!(replica = %replica.name, volume = %replica.spec.volume, %reason, healthy_elsewhere, "replica retires: evicted");
                replica.spec.desire_running = false;
                replica.spec.retire = true;
                replica.status.message =
                    format!("retiring: {reason}; {healthy_elsewhere} healthy replicas elsewhere");
                retired += 1;
            } else if replica.status.state != ReplicaState::Failed {
                // A failure's reason is kept: it says more than the wait.
                replica.status.message = if engine_running {
                    format!(
                        "evicting: {reason}; {healthy_elsewhere} of {wanted} replicas elsewhere healthy, waiting for the others to be rebuilt"
                    )
                } else {
                    format!(
                        "evicting: {reason}; waiting for the volume's engine (attached, or started without a frontend for the move) to rebuild the replicas elsewhere"
                    )
                };
            }
        }
        retired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReplicaSpec, ReplicaStatus};

    fn replica(name: &str, node: &str, disk: &str, state: ReplicaState, mode: &str) -> Replica {
        Replica {
            name: name.into(),
            spec: ReplicaSpec {
                volume: "v".into(),
                node: node.into(),
                disk: disk.into(),
                data_dir: String::new(),
                port: 0,
                desire_running: true,
                restore_from: None,
                clone_from: None,
                retire: false,
            },
            status: ReplicaStatus {
                state,
                mode: (!mode.is_empty()).then(|| mode.to_string()),
                ..ReplicaStatus::default()
            },
        }
    }

    fn evicting_node_a() -> Evictions {
        Evictions {
            nodes: ["a".to_string()].into(),
            disks: [("b".to_string(), "slow".to_string())].into(),
        }
    }

    #[test]
    fn an_evicted_replica_waits_until_enough_others_are_healthy() {
        let evictions = evicting_node_a();
        let mut replicas = vec![
            replica("r1", "a", "d", ReplicaState::Running, "RW"),
            replica("r2", "c", "d", ReplicaState::Running, "RW"),
            replica("r3", "d", "d", ReplicaState::Rebuilding, "WO"),
        ];
        assert_eq!(evictions.retire_moved(&mut replicas, 2, true), 0);
        assert!(replicas[0].spec.desire_running);
        assert!(
            replicas[0].status.message.contains("1 of 2"),
            "{}",
            replicas[0].status.message
        );
        // Detached: nothing can be rebuilt, so nothing moves.
        replicas[2].status.state = ReplicaState::Running;
        replicas[2].status.mode = Some("RW".into());
        assert_eq!(evictions.retire_moved(&mut replicas, 2, false), 0);
        assert!(replicas[0].status.message.contains("attached"));
        // Rebuilt: the evicted one retires.
        assert_eq!(evictions.retire_moved(&mut replicas, 2, true), 1);
        assert!(replicas[0].spec.retire && !replicas[0].spec.desire_running);
        assert!(replicas[1].spec.desire_running && replicas[2].spec.desire_running);
    }

    #[test]
    fn a_disk_eviction_moves_only_the_replicas_on_that_disk() {
        let evictions = evicting_node_a();
        let on_slow = replica("r1", "b", "slow", ReplicaState::Running, "RW");
        let on_fast = replica("r2", "b", "fast", ReplicaState::Running, "RW");
        assert!(
            evictions
                .reason(&on_slow)
                .unwrap()
                .contains("disk slow of node b")
        );
        assert!(evictions.keeps(&on_fast));
        let mut failed = replica("r3", "a", "d", ReplicaState::Failed, "");
        failed.status.message = "its process exited".into();
        let mut replicas = vec![failed];
        evictions.retire_moved(&mut replicas, 1, true);
        assert_eq!(replicas[0].status.message, "its process exited");
    }
}
