//! This node's record (disk space, heartbeat) and what the reconcilers know of other
//! nodes: which are ready, which did not answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;

use super::{HEARTBEAT_PERIOD, Manager, NODE_TIMEOUT};
use crate::clock::waited;
use crate::model::{Node, Replica, Volume};
use crate::scheduler::{DiskCandidate, NodeCandidate};
use crate::state::{Kind, StateStoreExt};

impl Manager {
    /// Writes each node's disk space and the bytes scheduled on each disk.
    pub(super) fn update_nodes(
        &self,
        volumes: &[Volume],
        replicas: &[Replica],
    ) -> anyhow::Result<()> {
        let sizes: HashMap<&str, u64> = volumes
            .iter()
            .map(|v| (v.name.as_str(), v.spec.size))
            .collect();
        for node in self.state.list::<Node>(Kind::Node)? {
            if node.name != self.node {
                continue;
            }
            let mut disks = shorthorn_agent::disk_status(&node.spec.disks);
            for disk in &mut disks {
                let here = || {
                    replicas
                        .iter()
                        .filter(|r| r.spec.node == node.name && r.spec.disk == disk.name)
                };
                disk.scheduled = here()
                    .filter_map(|r| sizes.get(r.spec.volume.as_str()))
                    .sum();
                disk.replicas = here().count() as u64;
            }
            // Written when something changed, and as a heartbeat every HEARTBEAT_PERIOD
            // (an idle node does not rewrite its state every second).
            let stale = node
                .status
                .heartbeat
                .as_deref()
                .is_none_or(|at| waited(at, HEARTBEAT_PERIOD.as_secs()));
            let changed = disks_changed(&node.status.disks, &disks);
            if stale || !node.status.ready || changed {
                // A heartbeat alone keeps the disks as reported, so that it changes
                // nothing but its time (a watch does not send it): free space that
                // drifted less than the slack is not news.
                if !changed {
                    disks.clone_from(&node.status.disks);
                }
                let status = crate::model::NodeStatus {
                    ready: true,
                    heartbeat: Some(Utc::now().to_rfc3339()),
                    disks,
                };
                // The status only: the API may be changing the node's spec.
                self.state
                    .update::<Node>(Kind::Node, &node.name, |stored| {
                        stored.status.clone_from(&status);
                        Ok(())
                    })?;
                self.note_heartbeat();
            }
        }
        Ok(())
    }

    /// Writes this node's heartbeat when one is due, between two volumes of a pass: a
    /// pass over many volumes (a thousand created at once, each replica started in
    /// turn) outlasts NODE_TIMEOUT, and a heartbeat that waited for the pass to end
    /// would make this node count as down — its new volumes unschedulable — meanwhile.
    pub(super) fn heartbeat_if_due(&self) -> anyhow::Result<()> {
        let due = self
            .heartbeat_written
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_none_or(|at| at.elapsed() >= HEARTBEAT_PERIOD);
        if !due {
            return Ok(());
        }
        // The heartbeat only: disks are measured at the start of each pass.
        self.state
            .update::<Node>(Kind::Node, &self.node, |stored| {
                stored.status.ready = true;
                stored.status.heartbeat = Some(Utc::now().to_rfc3339());
                Ok(())
            })?;
        self.note_heartbeat();
        Ok(())
    }

    fn note_heartbeat(&self) {
        if let Ok(mut at) = self.heartbeat_written.lock() {
            *at = Some(Instant::now());
        }
    }

    pub(super) fn node_address(&self, name: &str) -> anyhow::Result<IpAddr> {
        let node: Node = self
            .state
            .get(Kind::Node, name)?
            .with_context(|| format!("node {name} is not registered"))?;
        node.spec
            .address
            .parse()
            .with_context(|| format!("node {name}: bad address {:?}", node.spec.address))
    }

    pub(super) fn note_unreachable(&self, node: &str) {
        if let Ok(mut unreachable) = self.unreachable.lock() {
            unreachable.insert(node.to_string(), Instant::now());
        }
    }

    pub(super) fn recently_unreachable(&self, node: &str) -> bool {
        self.unreachable
            .lock()
            .ok()
            .and_then(|u| u.get(node).copied())
            .is_some_and(|at| at.elapsed() < NODE_TIMEOUT)
    }

    /// Whether `node`'s manager reported in lately.
    pub(super) fn node_ready(&self, node: &str) -> bool {
        self.state
            .get::<Node>(Kind::Node, node)
            .ok()
            .flatten()
            .is_some_and(|n| node_is_ready(&n))
    }
}

/// Whether disk space changed enough to record (free space moves with every write).
pub(super) fn disks_changed(
    old: &[crate::model::DiskStatus],
    new: &[crate::model::DiskStatus],
) -> bool {
    const SLACK: u64 = 64 << 20;
    old.len() != new.len()
        || old.iter().zip(new).any(|(a, b)| {
            a.name != b.name
                || a.capacity != b.capacity
                || a.scheduled != b.scheduled
                || a.replicas != b.replicas
                || a.available.abs_diff(b.available) > SLACK
        })
}

/// A node is ready while its manager reports in: its heartbeat is recent.
pub(crate) fn node_is_ready(node: &Node) -> bool {
    node.status.ready
        && node
            .status
            .heartbeat
            .as_deref()
            .is_some_and(|at| !waited(at, NODE_TIMEOUT.as_secs()))
}

pub(super) fn candidate(node: &Node) -> NodeCandidate {
    NodeCandidate {
        name: node.name.clone(),
        zone: node.spec.zone.clone(),
        tags: node.spec.tags.clone(),
        ready: node_is_ready(node),
        allow_scheduling: node.spec.allow_scheduling,
        evicting: node.spec.evict,
        disks: node
            .spec
            .disks
            .iter()
            .map(|disk| {
                let status = node.status.disks.iter().find(|s| s.name == disk.name);
                DiskCandidate {
                    name: disk.name.clone(),
                    tags: disk.tags.clone(),
                    allow_scheduling: disk.allow_scheduling,
                    evicting: disk.evict,
                    capacity: status.map_or(0, |s| s.capacity),
                    available: status.map_or(0, |s| s.available),
                    reserved: disk.reserved,
                    scheduled: status.map_or(0, |s| s.scheduled),
                }
            })
            .collect(),
    }
}
