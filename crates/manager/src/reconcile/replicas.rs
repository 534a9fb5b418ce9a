//! Replica processes: started where they should run, marked failed when they exit,
//! started again on their data after the wait interval, replaced after it, scheduled
//! onto nodes and disks, and removed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;

use super::eviction::Evictions;
use super::nodes::candidate;
use super::{MAX_START_FAILURES, Manager, REPLACEMENT_BACKOFF};
use crate::clock::waited;
use crate::model::{
    Engine, EngineState, Node, Replica, ReplicaSpec, ReplicaState, ReplicaStatus, Settings, Volume,
    VolumeState,
};
use crate::scheduler::{NodeCandidate, Placement, ScheduleError, ScheduleRequest, schedule};
use crate::state::{Kind, StateStoreExt};
use shorthorn_agent::NodeAgent;
use shorthorn_agent::protocol::{
    CloneLaunch, PORT_RANGE, ProcessState, ReplicaLaunch, RestoreLaunch, exited_cleanly,
    restore_task_name,
};
use shorthorn_agent::replica_dir::replica_dir;

/// Where the scheduler put new replicas, or why it could not.
type Placed = Result<Vec<Placement>, ScheduleError>;

impl Manager {
    /// Starts a replica that should run and does not (first start, or after a manager
    /// restart), marks one whose process exited failed, and after the wait interval
    /// starts a failed one again on its data. `engine_runs`: the volume's engine runs (or
    /// is to), so a started replica must be rebuilt by it before it counts as running.
    pub(super) async fn reconcile_replica_process(
        &self,
        volume: &Volume,
        replica: &mut Replica,
        settings: &Settings,
        engine_runs: bool,
    ) -> anyhow::Result<()> {
        if !replica.spec.desire_running {
            return Ok(());
        }
        let agent = self.agent_for(&replica.spec.node)?;
        let process = agent.state(&replica.name).await;
        if let ProcessState::Unreachable(reason) = &process {
            self.note_unreachable(&replica.spec.node);
            if replica.status.state != ReplicaState::Failed {
                mark_failed(
                    replica,
                    &format!("node {} unreachable: {reason}", replica.spec.node),
                );
            } else if replica
                .status
                .failed_at
                .as_deref()
                .is_some_and(|at| waited(at, settings.replica_replenishment_wait_interval))
            {
                // Its node did not come back in time: a new replica takes its place.
                replica.spec.desire_running = false;
                replica.status.message =
                    format!("node {} did not come back; replaced", replica.spec.node);
            }
            return Ok(());
        }
        if let ProcessState::Exited(status) = &process
            && replica.status.state != ReplicaState::Failed
        {
            mark_failed(replica, &format!("replica process exited ({status})"));
        }
        let running = process == ProcessState::Running;
        let recovering = replica.status.state == ReplicaState::Failed
            && replica
                .status
                .failed_at
                .as_deref()
                .is_none_or(|at| waited(at, settings.replica_replenishment_wait_interval));
        if recovering && running {
            // The engine dropped a replica whose process still runs (a cut link, a full
            // disk): its data is reused, the engine rebuilds what it missed.
            replica.status = ReplicaStatus {
                state: ReplicaState::Rebuilding,
                message: "re-adding to the engine after a failure".into(),
                ..ReplicaStatus::default()
            };
            return Ok(());
        }
        let start = match replica.status.state {
            ReplicaState::Pending | ReplicaState::Stopped => !running,
            // Runs no more without having exited: the manager restarted.
            ReplicaState::Running | ReplicaState::Rebuilding => process == ProcessState::Absent,
            ReplicaState::Failed => recovering,
        };
        if !start || !self.fill_first(agent.as_ref(), volume, replica).await? {
            return Ok(());
        }
        let address = self.node_address(&replica.spec.node)?;
        let launch = ReplicaLaunch {
            name: replica.name.clone(),
            volume: volume.name.clone(),
            size: volume.spec.size,
            disk: replica.spec.disk.clone(),
            listen: SocketAddr::new(address, replica.spec.port),
        };
        match agent.start_replica(&launch).await {
            Ok(()) => {
                // A running engine must add it (and rebuild what it lacks).
                let state = if engine_runs {
                    ReplicaState::Rebuilding
                } else {
                    ReplicaState::Running
                };
                replica.status = ReplicaStatus {
                    state,
                    ..ReplicaStatus::default()
                };
            }
            Err(e) if replica.status.start_failures < MAX_START_FAILURES => {
                // Perhaps its port was taken while it was down: a new port, and again on
                // the next pass.
                let failures = replica.status.start_failures + 1;
                let used = self.ports_in_use()?;
                replica.spec.port = free_port_pair(address, replica.spec.node == self.node, &used)?;
                mark_failed(
                    replica,
                    &format!(
                        "starting the replica process: {e:#}; retrying on port {}",
                        replica.spec.port
                    ),
                );
                replica.status.failed_at = None;
                replica.status.start_failures = failures;
            }
            Err(e) => {
                let reason = format!("starting the replica process: {e:#}");
                // Given up on: a new replica is scheduled in its place.
                replica.spec.desire_running = false;
                mark_failed(replica, &reason);
            }
        }
        Ok(())
    }

    /// For a replica to be filled before its first start (restored from a backup, or a
    /// clone's copy of another volume's snapshot): starts that on its node, or reads how
    /// it went. True once the replica may start.
    pub(super) async fn fill_first(
        &self,
        agent: &dyn NodeAgent,
        volume: &Volume,
        replica: &mut Replica,
    ) -> anyhow::Result<bool> {
        let what = match (&replica.spec.restore_from, &replica.spec.clone_from) {
            (Some(url), _) => format!("restoring from {url}"),
            (None, Some(source)) => format!("cloning from snapshot {source}"),
            (None, None) => return Ok(true),
        };
        let task = restore_task_name(&replica.name);
        match agent.state(&task).await {
            ProcessState::Running => {
                if let Some(progress) = agent.progress(&task).await {
                    replica.status.fill_progress = Some(progress);
                }
                Ok(false)
            }
            ProcessState::Exited(status) if exited_cleanly(&status) => {
                // Its last report (what it transferred in all) stays until the replica
                // starts; a standby volume reads it.
                let report = agent.progress(&task).await;
                agent.stop(&task).await?;
                if replica.spec.restore_from.is_some() {
                    tracing::info!(replica = %replica.name, "{what}: restored from the backup");
                } else {
                    tracing::info!(replica = %replica.name, "{what}: cloned from the snapshot");
                }
                // Done for good: a later restart must never fill over newer data.
                replica.spec.restore_from = None;
                replica.spec.clone_from = None;
                replica.status.message.clear();
                replica.status.fill_progress = report;
                Ok(true)
            }
            ProcessState::Exited(status) => {
                agent.stop(&task).await?;
                let reason = format!("{what}: {status} (see its node's log)");
                replica.status.start_failures += 1;
                if replica.status.start_failures >= MAX_START_FAILURES {
                    // Given up on: a new replica is scheduled (and filled) in its place.
                    replica.spec.desire_running = false;
                    mark_failed(replica, &reason);
                } else {
                    replica.status.message = format!("{reason}; retrying");
                }
                Ok(false)
            }
            ProcessState::Absent => {
                if let Some(url) = replica.spec.restore_from.clone() {
                    let target = shorthorn_backup::BackupUrl::parse(&url)
                        .with_context(|| format!("replica {}: backup URL {url:?}", replica.name))?
                        .target;
                    let launch = RestoreLaunch {
                        replica: replica.name.clone(),
                        disk: replica.spec.disk.clone(),
                        access: crate::backups::target_access(self.state.as_ref(), &target)?,
                        url,
                        volume: replica.spec.volume.clone(),
                        // A standby's replicas never run: what they hold is exactly
                        // their last complete restore.
                        since_last_restore: volume.spec.standby.is_some(),
                    };
                    agent.start_restore(&launch).await?;
                    replica.status.message = what;
                } else if let Some(source) = replica.spec.clone_from.clone() {
                    let Some(from) = self.clone_source(&source.volume)? else {
                        replica.status.message = format!(
                            "{what}: waiting for a running replica of volume {}",
                            source.volume
                        );
                        return Ok(false);
                    };
                    let launch = CloneLaunch {
                        replica: replica.name.clone(),
                        disk: replica.spec.disk.clone(),
                        volume: replica.spec.volume.clone(),
                        size: volume.spec.size,
                        source: from,
                        source_volume: source.volume.clone(),
                        snapshot: source.snapshot.clone(),
                    };
                    agent.start_clone(&launch).await?;
                    replica.status.message = format!("{what} (replica {})", launch.source);
                }
                Ok(false)
            }
            ProcessState::Unreachable(reason) => {
                replica.status.message = format!("{what}: node unreachable: {reason}");
                Ok(false)
            }
        }
    }

    /// The address of a replica of `volume` a clone may read: running and, while the
    /// volume is attached, in RW mode (a replica being rebuilt lacks data).
    fn clone_source(&self, volume: &str) -> anyhow::Result<Option<String>> {
        let engine: Option<Engine> = self.state.get(Kind::Engine, &Engine::name_for(volume))?;
        let attached = engine.is_some_and(|e| e.status.state == EngineState::Running);
        let replicas: Vec<Replica> = self.state.list(Kind::Replica)?;
        let source = replicas.iter().find(|r| {
            r.spec.volume == volume
                && r.spec.desire_running
                && r.status.state == ReplicaState::Running
                && (!attached || r.status.mode.as_deref() == Some("RW"))
        });
        source.map(|r| self.replica_address(r)).transpose()
    }

    /// Where `count` new replicas of `volume` would go beside `existing` (only on node
    /// `only`, when given), with the nodes they were chosen from; nothing is stored.
    fn place(
        &self,
        volume: &Volume,
        existing: &[Replica],
        count: usize,
        only: Option<&str>,
    ) -> anyhow::Result<(Vec<Node>, Placed)> {
        let nodes: Vec<Node> = self.state.list(Kind::Node)?;
        let nodes_given: Vec<Node> = nodes
            .iter()
            .filter(|n| only.is_none_or(|only| n.name == only))
            .cloned()
            .collect();
        let chosen = self.place_among(&nodes_given, volume, existing, count)?;
        Ok((nodes, chosen))
    }

    /// [`Manager::place`] on `nodes` as given (not as stored).
    fn place_among(
        &self,
        nodes: &[Node],
        volume: &Volume,
        existing: &[Replica],
        count: usize,
    ) -> anyhow::Result<Placed> {
        let settings = self.settings()?;
        let mut candidates: Vec<NodeCandidate> = nodes.iter().map(candidate).collect();
        // A node whose agent just did not answer gets nothing new, heartbeat or not.
        for node in &mut candidates {
            if self.recently_unreachable(&node.name) {
                node.ready = false;
            }
        }
        let placements: Vec<Placement> = existing
            .iter()
            .filter(|r| r.spec.desire_running)
            .map(|r| Placement {
                node: r.spec.node.clone(),
                disk: r.spec.disk.clone(),
            })
            .collect();
        let request = ScheduleRequest {
            volume: &volume.name,
            size: volume.spec.size,
            count,
            node_selector: &volume.spec.node_selector,
            disk_selector: &volume.spec.disk_selector,
            existing: &placements,
        };
        Ok(schedule(&request, &candidates, &settings.scheduling))
    }

    /// Why evicting node `node` (or only its disk `disk`) would leave a replica with
    /// nowhere to go, with what would change that; `None` if every replica there can be
    /// placed elsewhere (each volume on its own: they may still compete for space).
    pub fn eviction_blocked(
        &self,
        node: &str,
        disk: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        let mut nodes: Vec<Node> = self.state.list(Kind::Node)?;
        for candidate in nodes.iter_mut().filter(|n| n.name == node) {
            match disk {
                None => candidate.spec.evict = true,
                Some(disk) => candidate
                    .spec
                    .disks
                    .iter_mut()
                    .filter(|d| d.name == disk)
                    .for_each(|d| d.evict = true),
            }
        }
        let evictions = Evictions::of(&nodes);
        let replicas: Vec<Replica> = self.state.list(Kind::Replica)?;
        for volume in self.state.list::<Volume>(Kind::Volume)? {
            let wanted: Vec<&Replica> = replicas
                .iter()
                .filter(|r| r.spec.volume == volume.name && r.spec.desire_running)
                .collect();
            let Some(moving) = wanted.iter().find(|r| !evictions.keeps(r)) else {
                continue;
            };
            let staying: Vec<Replica> = wanted
                .iter()
                .filter(|r| evictions.keeps(r))
                .map(|r| (*r).clone())
                .collect();
            let missing = volume.spec.replicas.saturating_sub(staying.len());
            if missing == 0 {
                continue;
            }
            if let Err(error) = self.place_among(&nodes, &volume, &staying, missing)? {
                let remedies = error.remedies(&self.settings()?.scheduling);
                return Ok(Some(format!(
                    "nowhere to move replica {} of volume {} to: {error}. To place it: {}",
                    moving.name,
                    volume.name,
                    remedies.join("; or ")
                )));
            }
        }
        Ok(None)
    }

    /// Why `volume`'s replicas could not all be placed now, with what would change that
    /// (the API refuses such a create at once instead of accepting a volume that waits).
    pub fn unschedulable(&self, volume: &Volume) -> anyhow::Result<Option<String>> {
        let replicas: Vec<Replica> = self
            .state
            .list::<Replica>(Kind::Replica)?
            .into_iter()
            .filter(|r| r.spec.volume == volume.name && r.spec.desire_running)
            .collect();
        let missing = volume.spec.replicas.saturating_sub(replicas.len());
        if missing == 0 {
            return Ok(None);
        }
        let (_, chosen) = self.place(volume, &replicas, missing, None)?;
        let Err(error) = chosen else {
            return Ok(None);
        };
        let remedies = error.remedies(&self.settings()?.scheduling);
        Ok(Some(format!(
            "{error}. To place them: {}",
            remedies.join("; or ")
        )))
    }

    /// Places `count` new replicas of `volume` (only on node `only`, when given) and
    /// stores them (pending).
    pub(super) fn schedule_replicas(
        &self,
        volume: &Volume,
        existing: &[Replica],
        count: usize,
        only: Option<&str>,
    ) -> anyhow::Result<Vec<Replica>> {
        let (nodes, chosen) = self.place(volume, existing, count, only)?;
        let chosen = chosen?;
        let mut used = self.ports_in_use()?;
        let mut created = Vec::new();
        for placement in chosen {
            let node = nodes
                .iter()
                .find(|n| n.name == placement.node)
                .context("scheduled on an unknown node")?;
            let disk = node
                .spec
                .disks
                .iter()
                .find(|d| d.name == placement.disk)
                .context("scheduled on an unknown disk")?;
            let name = Replica::new_name(&volume.name);
            let ip: IpAddr = node
                .spec
                .address
                .parse()
                .with_context(|| format!("node {}: bad address", node.name))?;
            let port = free_port_pair(ip, node.name == self.node, &used)?;
            used.extend([port, port + 1]);
            let replica = Replica {
                name: name.clone(),
                spec: ReplicaSpec {
                    volume: volume.name.clone(),
                    node: node.name.clone(),
                    disk: disk.name.clone(),
                    data_dir: replica_dir(&disk.path, &name).display().to_string(),
                    port,
                    desire_running: true,
                    // Only a new volume's first replicas; later ones are rebuilt.
                    restore_from: volume
                        .spec
                        .from_backup
                        .clone()
                        .filter(|_| volume.status.state == VolumeState::Creating),
                    clone_from: volume
                        .spec
                        .from_snapshot
                        .clone()
                        .filter(|_| volume.status.state == VolumeState::Creating),
                    retire: false,
                },
                status: ReplicaStatus::default(),
            };
            self.state.put(Kind::Replica, &name, &replica)?;
            tracing::info!(volume = %volume.name, replica = %name, node = %node.name, disk = %disk.name, "replica scheduled");
            created.push(replica);
        }
        Ok(created)
    }

    pub(super) fn ports_in_use(&self) -> anyhow::Result<HashSet<u16>> {
        let mut used = HashSet::new();
        for replica in self.state.list::<Replica>(Kind::Replica)? {
            used.insert(replica.spec.port);
            used.extend(shorthorn_wire::control_port(replica.spec.port));
        }
        for engine in self.state.list::<Engine>(Kind::Engine)? {
            if let Some((control, nbd)) = engine.status.ports {
                used.extend([control, nbd]);
            }
        }
        Ok(used)
    }

    /// Stops a replica's process, removes its data and its object.
    pub(super) async fn remove_replica(&self, replica: &Replica) -> anyhow::Result<()> {
        match self
            .agent_for(&replica.spec.node)?
            .remove_replica(&replica.name)
            .await
        {
            Ok(()) => {}
            // Its node is gone: nothing left to stop; its data goes with the node.
            Err(e) if !self.node_ready(&replica.spec.node) => {
                tracing::warn!(replica = %replica.name, error = %format!("{e:#}"), "replica's node is down; forgetting it");
            }
            Err(e) => return Err(e),
        }
        self.state.delete(Kind::Replica, &replica.name)?;
        tracing::info!(replica = %replica.name, "replica deleted");
        Ok(())
    }

    /// Removes the retiring replicas the engine no longer holds (it was told to let them
    /// go when they left its members), or all of them when no engine runs; drops them
    /// from `replicas`.
    pub(super) async fn remove_retired(
        &self,
        engine: &Engine,
        replicas: &mut Vec<Replica>,
    ) -> anyhow::Result<()> {
        let mut removed = Vec::new();
        for replica in replicas.iter().filter(|r| r.spec.retire) {
            let address = self.replica_address(replica)?;
            let held = engine.status.state == EngineState::Running
                && engine.status.replicas.contains_key(&address);
            if !held {
                self.remove_replica(replica).await?;
                removed.push(replica.name.clone());
            }
        }
        replicas.retain(|r| !removed.contains(&r.name));
        Ok(())
    }

    pub(super) fn note_replacement(&self, volume: &str) {
        if let Ok(mut replaced) = self.replaced.lock() {
            replaced.insert(volume.to_string(), Instant::now());
        }
    }

    pub(super) fn replaced_recently(&self, volume: &str) -> bool {
        self.replaced
            .lock()
            .ok()
            .and_then(|r| r.get(volume).copied())
            .is_some_and(|at| at.elapsed() < REPLACEMENT_BACKOFF)
    }

    /// `tcp://address:port` of a replica.
    pub(super) fn replica_address(&self, replica: &Replica) -> anyhow::Result<String> {
        Ok(format!(
            "tcp://{}:{}",
            self.node_address(&replica.spec.node)?,
            replica.spec.port
        ))
    }
}

/// Marks the `count` least useful wanted replicas to retire: first those not running,
/// then those rebuilding, then those sharing a node with another replica of the
/// volume; by name among equals, so every pass picks the same. Replicas being evicted
/// are not among them: they retire by [`Evictions::retire_moved`]; nor is `local`, the
/// replica data locality keeps on the engine's node.
pub(super) fn retire_excess(
    replicas: &mut [Replica],
    count: usize,
    evictions: &Evictions,
    local: Option<&str>,
) {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for replica in replicas.iter().filter(|r| r.spec.desire_running) {
        *per_node.entry(replica.spec.node.clone()).or_default() += 1;
    }
    let mut ranked: Vec<(u8, bool, String)> = replicas
        .iter()
        .filter(|r| r.spec.desire_running && evictions.keeps(r))
        .filter(|r| local != Some(r.name.as_str()))
        .map(|r| {
            let state = match r.status.state {
                ReplicaState::Running => 0,
                ReplicaState::Rebuilding => 1,
                _ => 2,
            };
            let shares_node = per_node.get(&r.spec.node).copied().unwrap_or(0) > 1;
            (state, shares_node, r.name.clone())
        })
        .collect();
    // Least useful first.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    let chosen: HashSet<String> = ranked
        .into_iter()
        .take(count)
        .map(|(_, _, name)| name)
        .collect();
    for replica in replicas.iter_mut().filter(|r| chosen.contains(&r.name)) {
        tracing::info!(replica = %replica.name, volume = %replica.spec.volume, "replica retires: more replicas than wanted");
        replica.spec.desire_running = false;
        replica.spec.retire = true;
        replica.status.message = "retiring: the volume wants fewer replicas".into();
    }
}

pub(super) fn mark_failed(replica: &mut Replica, reason: &str) {
    tracing::warn!(replica = %replica.name, reason, "replica failed");
    replica.status.state = ReplicaState::Failed;
    replica.status.message = reason.to_string();
    replica.status.failed_at = Some(Utc::now().to_rfc3339());
}

/// A port p in the range with p and p+1 unused by our objects and, when `ip` is this
/// host's (`local`), free to bind now. The search starts at a random pair, so managers
/// sharing a host (or other programs) rarely race for the same ports; a daemon that
/// still loses the race fails to start and gets new ports on the next pass.
pub(super) fn free_port_pair(ip: IpAddr, local: bool, used: &HashSet<u16>) -> anyhow::Result<u16> {
    let pairs = (PORT_RANGE.end - PORT_RANGE.start) / 2;
    let first = rand::random_range(0..pairs);
    for i in 0..pairs {
        let port = PORT_RANGE.start + 2 * ((first + i) % pairs);
        // Only this host's ports can be tried; another node's daemon that loses a port
        // fails to start and gets new ones.
        let free = !used.contains(&port)
            && !used.contains(&(port + 1))
            && (!local
                || TcpListener::bind((ip, port)).is_ok()
                    && TcpListener::bind((ip, port + 1)).is_ok());
        if free {
            return Ok(port);
        }
    }
    bail!("no free port pair in {PORT_RANGE:?} on {ip}")
}
