//! The reconcilers: every second (and at once after an API change) each volume's
//! replicas and engine are moved toward the volume's spec, and the status of volumes,
//! replicas and nodes is written from what the agent and the engine report.
//!
//! Replica failure: a replica whose process exited or that its engine dropped (ERR) is
//! marked failed. After `replica_replenishment_wait_interval` its process is started
//! again on the same data (the engine then rebuilds only what it missed); if that is not
//! possible, a new replica is scheduled in its place and rebuilt in full.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use shorthorn_proto::v1 as pb;
use shorthorn_proto::v1::engine_control_client::EngineControlClient;
use shorthorn_proto::v1::replica_control_client::ReplicaControlClient;
use tokio::sync::{Mutex, Notify};
use tonic::transport::Channel;

use crate::agent::{
    Agent, AgentClient, EngineLaunch, PORT_RANGE, ProcessState, ReplicaLaunch, RestoreLaunch,
    exited_cleanly, restore_task_name,
};
use crate::backups::{BackupRunner, VolumeLocks};
use crate::jobs::JobRunner;
use crate::model::{
    Engine, EngineReplicaStatus, EngineSpec, EngineState, EngineStatus, Node, Replica, ReplicaSpec,
    ReplicaState, ReplicaStatus, Robustness, Settings, Volume, VolumeState, VolumeStatus,
};
use crate::replica_dir::replica_dir;
use crate::scheduler::{DiskCandidate, NodeCandidate, Placement, ScheduleRequest, schedule};
use crate::state::{Kind, StateStore, StateStoreExt};

/// The one settings object's name.
pub const SETTINGS_NAME: &str = "cluster";
/// Shortest time between two reconcile passes.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(200);
/// Shortest time between two replacement replicas of one volume.
const REPLACEMENT_BACKOFF: Duration = Duration::from_secs(10);
/// How often a node's manager reports in when nothing else changed.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(4);
/// A node whose manager did not report for this long is not ready.
const NODE_TIMEOUT: Duration = Duration::from_secs(15);
/// Failed starts of a replica process (each on new ports) before it is replaced.
const MAX_START_FAILURES: u32 = 3;
/// How long an engine RPC may take before the reconciler moves on.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// The control plane of one node: state, the node's agent, the reconcile loop.
pub struct Manager {
    state: Arc<dyn StateStore>,
    agent: Arc<Agent>,
    node: String,
    /// The cluster's node credential, for calls to other nodes' agents.
    node_token: String,
    /// Serialises reconciling and API changes that touch processes.
    busy: Mutex<()>,
    /// Wakes the loop early after an API change.
    wake: Notify,
    /// Replicas an engine is adding right now (address), so they are not added twice.
    adding: Arc<std::sync::Mutex<HashSet<String>>>,
    /// Why the last add of a replica failed, until the reconciler reads it.
    add_failures: Arc<std::sync::Mutex<HashMap<String, String>>>,
    /// Recurring jobs in progress.
    jobs: JobRunner,
    /// Backups, backup deletions and backup target reads in progress.
    backups: BackupRunner,
    /// Nodes whose agent did not answer, and when.
    unreachable: std::sync::Mutex<HashMap<String, Instant>>,
    /// Volumes that got a replacement replica, and when.
    replaced: std::sync::Mutex<HashMap<String, Instant>>,
    /// Control clients of running engines, by address.
    engine_clients: std::sync::Mutex<HashMap<String, EngineControlClient<Channel>>>,
    /// Whether this manager reconciles volumes, runs jobs and backups and may lead;
    /// false on an agent-only node, which only reports itself.
    reconciles: bool,
}

impl Manager {
    /// A manager over `state` driving `agent` on node `node`; with `reconciles` false it
    /// only reports the node (an agent-only node).
    pub fn new(
        state: Arc<dyn StateStore>,
        agent: Arc<Agent>,
        node: &str,
        node_token: &str,
        reconciles: bool,
    ) -> Manager {
        let volume_locks = VolumeLocks::default();
        Manager {
            state,
            agent,
            node: node.to_string(),
            node_token: node_token.to_string(),
            busy: Mutex::new(()),
            wake: Notify::new(),
            adding: Arc::default(),
            add_failures: Arc::default(),
            jobs: JobRunner::new(volume_locks.clone()),
            backups: BackupRunner::new(volume_locks),
            unreachable: std::sync::Mutex::default(),
            replaced: std::sync::Mutex::default(),
            engine_clients: std::sync::Mutex::default(),
            reconciles,
        }
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// This manager's node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's agent.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// The agent of `node`: this process's own, or the node's over its API.
    fn agent_for(&self, node: &str) -> anyhow::Result<AgentClient> {
        if node == self.node {
            return Ok(AgentClient::Local(self.agent.clone()));
        }
        let spec = self
            .state
            .get::<Node>(Kind::Node, node)?
            .with_context(|| format!("node {node} is not registered"))?;
        AgentClient::remote(&spec.spec.api_url, &self.node_token)
    }

    /// The cluster settings (defaults until someone sets them).
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Ok(self
            .state
            .get(Kind::Settings, SETTINGS_NAME)?
            .unwrap_or_default())
    }

    /// Asks the loop to run now.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Runs the reconcile loop until `stop` resolves, then stops every process.
    pub async fn run(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let changes = self.state.changes();
        loop {
            let pass = Instant::now();
            if let Err(e) = self.reconcile_all().await {
                tracing::warn!(error = %format!("{e:#}"), "reconcile");
            }
            if self.reconciles
                && let Err(e) = self.jobs.run_due(&self.state)
            {
                tracing::warn!(error = %format!("{e:#}"), "recurring jobs");
            }
            if self.reconciles
                && let Err(e) = self.backups.run_due(&self.state)
            {
                tracing::warn!(error = %format!("{e:#}"), "backups");
            }
            // Changes by other managers (the etcd watch) wake the loop too, but passes
            // stay MIN_PASS_INTERVAL apart: our own writes come back as changes.
            tokio::time::sleep(MIN_PASS_INTERVAL.saturating_sub(pass.elapsed())).await;
            // A change that came while the pass ran left a permit: it is not lost.
            let changed = async {
                match &changes {
                    Some(changes) => changes.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut stop => break,
                () = self.wake.notified() => {}
                () = changed => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let _busy = self.busy.lock().await;
        self.agent.stop_all().await;
    }

    /// One pass over nodes and volumes.
    pub async fn reconcile_all(&self) -> anyhow::Result<()> {
        let _busy = self.busy.lock().await;
        let settings = self.settings()?;
        // Read once per pass: each volume's reconciler changes only its own replicas.
        let volumes: Vec<Volume> = self.state.list(Kind::Volume)?;
        let replicas: Vec<Replica> = self.state.list(Kind::Replica)?;
        self.update_nodes(&volumes, &replicas)?;
        if !self.reconciles {
            return Ok(());
        }
        let mut by_volume: HashMap<String, Vec<Replica>> = HashMap::new();
        for replica in replicas {
            by_volume
                .entry(replica.spec.volume.clone())
                .or_default()
                .push(replica);
        }
        for volume in volumes {
            let name = volume.name.clone();
            // Another live manager reconciles it.
            if !self.state.claim(&name)? {
                continue;
            }
            let replicas = by_volume.remove(&name).unwrap_or_default();
            if let Err(e) = self.reconcile_volume(volume, replicas, &settings).await {
                tracing::warn!(volume = %name, error = %format!("{e:#}"), "reconcile volume");
                if let Some(mut volume) = self.state.get::<Volume>(Kind::Volume, &name)? {
                    volume.status.message = format!("{e:#}");
                    volume.status.owner = Some(self.node.clone());
                    self.state.put(Kind::Volume, &name, &volume)?;
                }
            }
        }
        Ok(())
    }

    /// Writes each node's disk space and the bytes scheduled on each disk.
    fn update_nodes(&self, volumes: &[Volume], replicas: &[Replica]) -> anyhow::Result<()> {
        let sizes: HashMap<&str, u64> = volumes
            .iter()
            .map(|v| (v.name.as_str(), v.spec.size))
            .collect();
        for node in self.state.list::<Node>(Kind::Node)? {
            if node.name != self.node {
                continue;
            }
            let mut disks = Agent::disk_status(&node.spec.disks);
            for disk in &mut disks {
                disk.scheduled = replicas
                    .iter()
                    .filter(|r| r.spec.node == node.name && r.spec.disk == disk.name)
                    .filter_map(|r| sizes.get(r.spec.volume.as_str()))
                    .sum();
            }
            // Written when something changed, and as a heartbeat every HEARTBEAT_PERIOD
            // (an idle node does not rewrite its state every second).
            let stale = node
                .status
                .heartbeat
                .as_deref()
                .is_none_or(|at| waited(at, HEARTBEAT_PERIOD.as_secs()));
            if stale || !node.status.ready || disks_changed(&node.status.disks, &disks) {
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
            }
        }
        Ok(())
    }

    async fn reconcile_volume(
        &self,
        mut volume: Volume,
        mut replicas: Vec<Replica>,
        settings: &Settings,
    ) -> anyhow::Result<()> {
        volume.status.owner = Some(self.node.clone());
        let stored_replicas: HashMap<String, Replica> = replicas
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        // 1. Processes: start what should run, report what exited.
        for replica in &mut replicas {
            self.reconcile_replica_process(&volume, replica, settings)
                .await?;
        }
        // Replicas given up on (replaced) are deleted after the stale replica timeout.
        let mut kept = Vec::new();
        for replica in replicas {
            let stale = !replica.spec.desire_running
                && replica
                    .status
                    .failed_at
                    .as_deref()
                    .is_some_and(|at| waited(at, settings.stale_replica_timeout));
            if stale {
                self.remove_replica(&replica).await?;
            } else {
                kept.push(replica);
            }
        }
        let mut replicas = kept;
        // 2. Enough replicas: schedule replacements for those given up on.
        let usable = replicas.iter().filter(|r| r.spec.desire_running).count();
        let mut message = String::new();
        // Replacements (not a new volume's first replicas) at most once per
        // REPLACEMENT_BACKOFF, so a replica that cannot start is not replaced in a loop.
        let replacing = !replicas.is_empty();
        let backing_off = replacing && self.replaced_recently(&volume.name);
        if usable < volume.spec.replicas && backing_off {
            message = "waiting before replacing a failed replica again".into();
        } else if usable < volume.spec.replicas {
            if replacing {
                self.note_replacement(&volume.name);
            }
            match self.schedule_replicas(&volume, &replicas, volume.spec.replicas - usable) {
                Ok(new) => {
                    for mut replica in new {
                        self.reconcile_replica_process(&volume, &mut replica, settings)
                            .await?;
                        replicas.push(replica);
                    }
                }
                Err(e) => message = format!("{e:#}"),
            }
        }
        // 3. Engine: the volume says where it runs and which replicas it holds; the
        // engine's reconciler starts or stops it there and reports what it sees.
        let engine_name = Engine::name_for(&volume.name);
        // What the store holds, so the engine is written only when it changed, without
        // reading it back each time.
        let mut stored_engine: Option<Engine> = self.state.get(Kind::Engine, &engine_name)?;
        let mut engine: Engine = stored_engine.clone().unwrap_or_else(|| Engine {
            name: engine_name,
            spec: EngineSpec {
                volume: volume.name.clone(),
                ..EngineSpec::default()
            },
            status: EngineStatus::default(),
        });
        engine.spec.node = volume.spec.attached_node.clone();
        self.set_engine_members(&mut engine, &replicas)?;
        self.put_engine_if_changed(&engine, &mut stored_engine)?;
        // A replica on a node that is down cannot come back soon; if the engine's open
        // rule needs it, only a salvage opens the volume (writes only it acknowledged are
        // lost: docs/consistency.md). `auto_salvage` allows that.
        let salvage = settings.auto_salvage
            && replicas
                .iter()
                .any(|r| r.status.state != ReplicaState::Running && !self.node_ready(&r.spec.node));
        let processed = self
            .reconcile_engine_process(
                &mut engine,
                &mut stored_engine,
                volume.spec.size,
                settings,
                salvage,
            )
            .await;
        self.put_engine_if_changed(&engine, &mut stored_engine)?;
        if let Err(e) = processed {
            // What the pass learnt about the replicas is kept all the same: an engine
            // that refuses to open until a replica is back must not keep the pass from
            // recording that replica failed (and starting it again after the wait).
            self.save_replicas(&replicas, &stored_replicas)?;
            return Err(e);
        }
        // 4. Replicas as the engine reports them; then the engine's membership follows.
        self.observe_replicas_in_engine(&engine, &mut replicas)?;
        self.set_engine_members(&mut engine, &replicas)?;
        self.reconcile_engine_members(&engine).await;
        self.put_engine_if_changed(&engine, &mut stored_engine)?;
        volume.status = volume_status(&volume, &engine, &replicas, message);
        self.save_replicas(&replicas, &stored_replicas)?;
        // Write the status unless an API call changed the volume meanwhile (it has the
        // lock, so only deletion could): then the next pass sees the new spec.
        self.save_status(&volume)
    }

    /// Writes the replicas that differ from what the pass read (new ones: never read).
    fn save_replicas(
        &self,
        replicas: &[Replica],
        stored: &HashMap<String, Replica>,
    ) -> anyhow::Result<()> {
        for replica in replicas {
            if stored.get(&replica.name) != Some(replica) {
                self.state.put(Kind::Replica, &replica.name, replica)?;
            }
        }
        Ok(())
    }

    /// The engine's members from its replicas: those meant to run whose process runs
    /// serve; failed ones still meant to run are kept (for an incremental rebuild, or a
    /// salvage); replaced ones go.
    fn set_engine_members(&self, engine: &mut Engine, replicas: &[Replica]) -> anyhow::Result<()> {
        engine.spec.replicas.clear();
        engine.spec.failed.clear();
        for replica in replicas.iter().filter(|r| r.spec.desire_running) {
            let address = self.replica_address(replica)?;
            match replica.status.state {
                ReplicaState::Running | ReplicaState::Rebuilding => {
                    engine.spec.replicas.push(address);
                }
                _ => engine.spec.failed.push(address),
            }
        }
        Ok(())
    }

    /// Writes the engine object if it differs from `stored` (what the store holds; only
    /// the volume's owner writes it), unless its volume was deleted meanwhile (through
    /// another manager's API): no orphan engine object is left behind.
    fn put_engine_if_changed(
        &self,
        engine: &Engine,
        stored: &mut Option<Engine>,
    ) -> anyhow::Result<()> {
        if stored.as_ref() == Some(engine)
            || self
                .state
                .get_raw(Kind::Volume, &engine.spec.volume)?
                .is_none()
        {
            return Ok(());
        }
        self.state.put(Kind::Engine, &engine.name, engine)?;
        *stored = Some(engine.clone());
        Ok(())
    }

    /// Writes a volume's status onto the stored volume, keeping its spec: an API call on
    /// another node's manager may have changed the spec meanwhile.
    fn save_status(&self, volume: &Volume) -> anyhow::Result<()> {
        self.state
            .update::<Volume>(Kind::Volume, &volume.name, |stored| {
                stored.status.clone_from(&volume.status);
                Ok(())
            })?;
        Ok(())
    }

    /// Starts a replica that should run and does not (first start, or after a manager
    /// restart), marks one whose process exited failed, and after the wait interval
    /// starts a failed one again on its data.
    async fn reconcile_replica_process(
        &self,
        volume: &Volume,
        replica: &mut Replica,
        settings: &Settings,
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
        if !start || !self.restore_first(&agent, replica).await? {
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
                // An attached volume's engine must add it (and rebuild what it lacks).
                let state = if volume.spec.attached_node.is_some() {
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

    /// For a replica to be restored from a backup before its first start: starts the
    /// restore on its node, or reads how it went. True once the replica may start.
    async fn restore_first(
        &self,
        agent: &AgentClient,
        replica: &mut Replica,
    ) -> anyhow::Result<bool> {
        let Some(url) = replica.spec.restore_from.clone() else {
            return Ok(true);
        };
        let task = restore_task_name(&replica.name);
        match agent.state(&task).await {
            ProcessState::Running => Ok(false),
            ProcessState::Exited(status) if exited_cleanly(&status) => {
                agent.stop(&task).await?;
                tracing::info!(replica = %replica.name, %url, "restored from the backup");
                // Done for good: a later restart must never restore over newer data.
                replica.spec.restore_from = None;
                replica.status.message.clear();
                Ok(true)
            }
            ProcessState::Exited(status) => {
                agent.stop(&task).await?;
                let reason = format!("restoring from {url}: {status} (see its node's log)");
                replica.status.start_failures += 1;
                if replica.status.start_failures >= MAX_START_FAILURES {
                    // Given up on: a new replica is scheduled (and restores) in its place.
                    replica.spec.desire_running = false;
                    mark_failed(replica, &reason);
                } else {
                    replica.status.message = format!("{reason}; retrying");
                }
                Ok(false)
            }
            ProcessState::Absent => {
                let launch = RestoreLaunch {
                    replica: replica.name.clone(),
                    disk: replica.spec.disk.clone(),
                    url,
                    volume: replica.spec.volume.clone(),
                };
                agent.start_restore(&launch).await?;
                replica.status.message = format!("restoring from {}", launch.url);
                Ok(false)
            }
            ProcessState::Unreachable(reason) => {
                replica.status.message = format!("restoring: node unreachable: {reason}");
                Ok(false)
            }
        }
    }

    fn node_address(&self, name: &str) -> anyhow::Result<IpAddr> {
        let node: Node = self
            .state
            .get(Kind::Node, name)?
            .with_context(|| format!("node {name} is not registered"))?;
        node.spec
            .address
            .parse()
            .with_context(|| format!("node {name}: bad address {:?}", node.spec.address))
    }

    /// Places `count` new replicas of `volume` and stores them (pending).
    fn schedule_replicas(
        &self,
        volume: &Volume,
        existing: &[Replica],
        count: usize,
    ) -> anyhow::Result<Vec<Replica>> {
        let settings = self.settings()?;
        let nodes: Vec<Node> = self.state.list(Kind::Node)?;
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
        let chosen = schedule(&request, &candidates, &settings.scheduling)?;
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
                },
                status: ReplicaStatus::default(),
            };
            self.state.put(Kind::Replica, &name, &replica)?;
            tracing::info!(volume = %volume.name, replica = %name, node = %node.name, disk = %disk.name, "replica scheduled");
            created.push(replica);
        }
        Ok(created)
    }

    fn ports_in_use(&self) -> anyhow::Result<HashSet<u16>> {
        let mut used = HashSet::new();
        for replica in self.state.list::<Replica>(Kind::Replica)? {
            used.extend([replica.spec.port, replica.spec.port + 1]);
        }
        for engine in self.state.list::<Engine>(Kind::Engine)? {
            if let Some((control, nbd)) = engine.status.ports {
                used.extend([control, nbd]);
            }
        }
        Ok(used)
    }

    /// The engine's reconciler, first half: its process runs where its spec says (and is
    /// stopped anywhere else), and its status says what it reports. Writes only the
    /// engine's status.
    async fn reconcile_engine_process(
        &self,
        engine: &mut Engine,
        stored: &mut Option<Engine>,
        size: u64,
        settings: &Settings,
        salvage: bool,
    ) -> anyhow::Result<()> {
        engine.status.message.clear();
        if let Some(old) = engine
            .status
            .node
            .clone()
            .filter(|n| engine.spec.node.as_ref() != Some(n))
        {
            engine.status.state = EngineState::Stopping;
            self.put_engine_if_changed(engine, stored)?;
            match self.agent_for(&old)?.stop(&engine.name).await {
                Ok(()) => {}
                // Its node is down (its processes died with its agent): the volume may
                // be attached elsewhere. A node that still reports in must stop it.
                Err(e) if !self.node_ready(&old) => {
                    tracing::warn!(engine = %engine.name, node = %old, error = %format!("{e:#}"), "engine's node is down; counting the engine stopped");
                }
                Err(e) => return Err(e),
            }
            if let Some(address) = &engine.status.address {
                self.forget_engine_client(address);
            }
            engine.status = EngineStatus::default();
        }
        let Some(node) = engine.spec.node.clone() else {
            return Ok(());
        };
        let agent = self.agent_for(&node)?;
        let address = self.node_address(&node)?;
        let process = agent.state(&engine.name).await;
        if let ProcessState::Unreachable(reason) = &process {
            // Reported, not an error: the rest of the volume's status is still written
            // (detach it to attach it elsewhere once the node counts as down).
            engine.status.state = EngineState::Error;
            engine.status.message =
                format!("node {node}, where the volume is attached, is unreachable: {reason}");
            return Ok(());
        }
        if let ProcessState::Exited(status) = &process {
            tracing::warn!(engine = %engine.name, %status, "engine exited; starting it again");
            engine.status.message = format!("engine exited ({status}); restarted");
        }
        if process != ProcessState::Running {
            // Whatever runs: the engine's recovery tells in-sync from stale replicas.
            if engine.spec.replicas.is_empty() {
                engine.status.state = EngineState::Starting;
                engine.status.message = "no replica runs; the engine waits for one".into();
                return Ok(());
            }
            let (control, nbd) = match engine.status.ports {
                Some(ports) => ports,
                None => {
                    let used = self.ports_in_use()?;
                    let port = free_port_pair(address, node == self.node, &used)?;
                    (port, port + 1)
                }
            };
            engine.status.state = EngineState::Starting;
            engine.status.ports = Some((control, nbd));
            self.put_engine_if_changed(engine, stored)?;
            let launch = EngineLaunch {
                name: engine.name.clone(),
                volume: engine.spec.volume.clone(),
                size,
                listen: SocketAddr::new(address, control),
                nbd: SocketAddr::new(address, nbd),
                replicas: engine.spec.replicas.clone(),
                salvage,
                tuning: settings.engine,
            };
            if salvage {
                tracing::warn!(engine = %engine.name, replicas = ?launch.replicas, "a replica's node is down: starting the engine with --salvage (auto_salvage), which loses writes only that replica acknowledged");
            }
            if let Err(e) = agent.start_engine(&launch).await {
                // Perhaps its ports were taken meanwhile: new ones next time.
                engine.status.ports = None;
                engine.status.state = EngineState::Error;
                engine.status.message = format!("starting the engine on {node}: {e:#}");
                return Err(e);
            }
            engine.status.address = Some(launch.listen.to_string());
            engine.status.node = Some(node.clone());
            engine.status.endpoint = Some(format!("nbd://{}/{}", launch.nbd, engine.spec.volume));
            // Recorded at once: a later step failing must not forget a running engine.
            self.put_engine_if_changed(engine, stored)?;
        }
        let engine_address = engine
            .status
            .address
            .clone()
            .context("a running engine without an address")?;
        let mut client = self.engine_client(&engine_address).await?;
        let info = tokio::time::timeout(ENGINE_TIMEOUT, client.info(pb::EngineInfoRequest {}))
            .await
            .context("engine info timed out")
            .and_then(|answer| answer.context("engine info"));
        let info = match info {
            Ok(info) => info.into_inner(),
            Err(e) => {
                // A new connection next pass (the engine may have restarted).
                self.forget_engine_client(&engine_address);
                engine.status.state = EngineState::Error;
                engine.status.message = format!("{e:#}");
                return Err(e);
            }
        };
        if info.state == "faulted" && settings.auto_salvage {
            tracing::warn!(engine = %engine.name, "every replica failed; salvaging");
            match tokio::time::timeout(ENGINE_TIMEOUT, client.salvage(pb::SalvageRequest {})).await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(engine = %engine.name, error = %e, "salvage"),
                Err(_) => tracing::warn!(engine = %engine.name, "salvage timed out"),
            }
        }
        engine.status.state = EngineState::Running;
        engine.status.health = info.state;
        engine.status.replicas =
            info.replicas
                .iter()
                .map(|replica| {
                    let mode = match replica.mode() {
                        pb::ReplicaMode::Rw => "RW",
                        pb::ReplicaMode::Wo => "WO",
                        pb::ReplicaMode::Err | pb::ReplicaMode::Unspecified => "ERR",
                    };
                    let status = EngineReplicaStatus {
                        mode: mode.to_string(),
                        rebuild: replica.rebuild.as_ref().map(|p| {
                            format!("{} {}/{} bytes", p.phase, p.done_bytes, p.total_bytes)
                        }),
                        error: replica.error.clone(),
                    };
                    (replica.address.clone(), status)
                })
                .collect();
        Ok(())
    }

    /// The engine's reconciler, second half: replicas to serve with that are not in it
    /// (or failed in it) are added and rebuilt; replicas in it that are in neither of
    /// its spec's lists are removed. One add per replica at a time.
    async fn reconcile_engine_members(&self, engine: &Engine) {
        if engine.status.state != EngineState::Running {
            return;
        }
        let Some(engine_address) = engine.status.address.clone() else {
            return;
        };
        for (address, status) in &engine.status.replicas {
            let member =
                engine.spec.replicas.contains(address) || engine.spec.failed.contains(address);
            if member || self.is_adding(address) {
                continue;
            }
            let removed = match self.engine_client(&engine_address).await {
                Ok(mut client) => client
                    .remove_replica(pb::RemoveReplicaRequest {
                        address: address.clone(),
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message())),
                Err(e) => Err(e),
            };
            match removed {
                Ok(_) => {
                    tracing::info!(engine = %engine.name, replica = %address, mode = %status.mode, "replica removed from the engine");
                }
                Err(e) => {
                    tracing::warn!(engine = %engine.name, replica = %address, error = %format!("{e:#}"), "removing a replica from the engine");
                }
            }
        }
        for address in &engine.spec.replicas {
            let present = engine
                .status
                .replicas
                .get(address)
                .is_some_and(|s| s.mode != "ERR");
            if !present {
                self.add_to_engine(&engine.spec.volume, &engine_address, address);
            }
        }
    }

    /// The replicas' side of what their engine reports: modes, rebuild progress, and
    /// failures (the engine failed it, or adding it failed).
    fn observe_replicas_in_engine(
        &self,
        engine: &Engine,
        replicas: &mut [Replica],
    ) -> anyhow::Result<()> {
        let running = engine.status.state == EngineState::Running;
        for replica in replicas.iter_mut() {
            let address = self.replica_address(replica)?;
            if !running {
                if engine.spec.node.is_none() {
                    replica.status.mode = None;
                    replica.status.rebuild = None;
                }
                continue;
            }
            let in_engine = engine.status.replicas.get(&address);
            let mode = in_engine.map(|s| s.mode.as_str());
            replica.status.mode = mode.map(str::to_string);
            replica.status.rebuild = in_engine.and_then(|s| s.rebuild.clone());
            if !replica.spec.desire_running {
                continue;
            }
            let adding = self.is_adding(&address);
            match replica.status.state {
                ReplicaState::Running if mode == Some("ERR") && !adding => {
                    let reason = in_engine.map(|s| s.error.as_str()).unwrap_or_default();
                    mark_failed(replica, &format!("the engine failed it: {reason}"));
                }
                ReplicaState::Running if mode.is_none() && !adding => {
                    replica.status.state = ReplicaState::Rebuilding;
                }
                ReplicaState::Rebuilding => {
                    if let Some(error) = self.take_add_failure(&address) {
                        mark_failed(replica, &format!("rebuild failed: {error}"));
                    } else if mode == Some("RW") && !adding {
                        replica.status.state = ReplicaState::Running;
                        replica.status.message.clear();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn take_add_failure(&self, address: &str) -> Option<String> {
        self.add_failures.lock().ok()?.remove(address)
    }

    /// A client of the engine at `address`: one connection kept per engine, not a new
    /// one every pass.
    async fn engine_client(&self, address: &str) -> anyhow::Result<EngineControlClient<Channel>> {
        let cached = self
            .engine_clients
            .lock()
            .ok()
            .and_then(|c| c.get(address).cloned());
        if let Some(client) = cached {
            return Ok(client);
        }
        let client = connect_engine(address).await?;
        if let Ok(mut clients) = self.engine_clients.lock() {
            clients.insert(address.to_string(), client.clone());
        }
        Ok(client)
    }

    fn forget_engine_client(&self, address: &str) {
        if let Ok(mut clients) = self.engine_clients.lock() {
            clients.remove(address);
        }
    }

    fn is_adding(&self, address: &str) -> bool {
        self.adding
            .lock()
            .map(|a| a.contains(address))
            .unwrap_or(false)
    }

    /// Has the engine add (and rebuild) a replica, in the background.
    fn add_to_engine(&self, volume: &str, engine: &str, address: &str) {
        {
            let Ok(mut adding) = self.adding.lock() else {
                return;
            };
            if !adding.insert(address.to_string()) {
                return;
            }
        }
        let (volume, engine, address) =
            (volume.to_string(), engine.to_string(), address.to_string());
        let adding = self.adding.clone();
        let failures = self.add_failures.clone();
        tokio::spawn(async move {
            tracing::info!(%volume, replica = %address, "adding the replica to the engine (rebuild)");
            let result = async {
                let mut client = connect_engine(&engine).await?;
                client
                    .add_replica(pb::AddReplicaRequest {
                        address: address.clone(),
                        bandwidth: 0,
                    })
                    .await
                    .context("replica add")
            }
            .await;
            match result {
                Ok(done) => {
                    let done = done.into_inner();
                    tracing::info!(%volume, replica = %address, copied = done.copied_bytes, seconds = done.seconds, "replica rebuilt");
                }
                Err(e) => {
                    tracing::warn!(%volume, replica = %address, error = %format!("{e:#}"), "replica add");
                    if let Ok(mut failures) = failures.lock() {
                        failures.insert(address.clone(), format!("{e:#}"));
                    }
                }
            }
            if let Ok(mut adding) = adding.lock() {
                adding.remove(&address);
            }
        });
    }

    /// Stops a volume's engine and replicas, removes their data and the objects.
    pub async fn delete_volume(&self, name: &str) -> anyhow::Result<()> {
        let _busy = self.busy.lock().await;
        let engine: Option<Engine> = self.state.get(Kind::Engine, &Engine::name_for(name))?;
        if let Some(engine) = engine {
            if let Some(node) = &engine.status.node {
                self.agent_for(node)?.stop(&engine.name).await?;
            }
            self.state.delete(Kind::Engine, &engine.name)?;
        }
        for replica in self.state.list::<Replica>(Kind::Replica)? {
            if replica.spec.volume == name {
                self.remove_replica(&replica).await?;
            }
        }
        self.state.delete(Kind::Volume, name)?;
        tracing::info!(volume = name, "deleted");
        Ok(())
    }

    /// Grows a volume: attached, every replica through its engine; detached, every
    /// replica directly. Then the spec.
    pub async fn expand_volume(&self, name: &str, size: u64) -> Result<Volume, ExpandError> {
        let _busy = self.busy.lock().await;
        let volume: Volume = self
            .state
            .get(Kind::Volume, name)?
            .ok_or_else(|| ExpandError::Invalid(format!("no volume {name:?}")))?;
        if size <= volume.spec.size || size % 4096 != 0 {
            return Err(ExpandError::Invalid(format!(
                "size {size} must be a multiple of 4096 larger than {}",
                volume.spec.size
            )));
        }
        let engine = self
            .state
            .get::<Engine>(Kind::Engine, &Engine::name_for(name))?;
        if volume.spec.attached_node.is_none()
            && let Some(node) = engine.as_ref().and_then(|e| e.status.node.as_ref())
        {
            return Err(ExpandError::Busy(format!(
                "volume {name:?} is detaching (its engine still runs on {node}); expand it once detached"
            )));
        }
        match (
            &volume.spec.attached_node,
            engine.and_then(|engine| engine.status.address),
        ) {
            (Some(_), Some(engine)) => {
                let mut client = connect_engine(&engine).await?;
                client
                    .expand(pb::ExpandRequest { size })
                    .await
                    .map_err(|e| expand_error("engine", &e))?;
            }
            (Some(node), None) => {
                return Err(ExpandError::Busy(format!(
                    "volume {name:?} is being attached to {node}; expand it once it is attached"
                )));
            }
            (None, _) => self.expand_detached(&volume, size).await?,
        }
        let volume = self
            .state
            .update::<Volume>(Kind::Volume, name, |stored| {
                stored.spec.size = size;
                Ok(())
            })?
            .ok_or_else(|| ExpandError::Invalid(format!("no volume {name:?}")))?;
        tracing::info!(volume = name, size, "expanded");
        Ok(volume)
    }

    /// Grows every replica of a detached volume through its control API. All of them
    /// must run: a replica left at the old size could not be opened at the new one.
    async fn expand_detached(&self, volume: &Volume, size: u64) -> Result<(), ExpandError> {
        let replicas: Vec<Replica> = self
            .state
            .list::<Replica>(Kind::Replica)?
            .into_iter()
            .filter(|r| r.spec.volume == volume.name && r.spec.desire_running)
            .collect();
        if let Some(down) = replicas
            .iter()
            .find(|r| r.status.state != ReplicaState::Running)
        {
            return Err(ExpandError::Busy(format!(
                "replica {} of volume {:?} is {}: expand when every replica runs",
                down.name,
                volume.name,
                serde_json::to_value(down.status.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )));
        }
        for replica in &replicas {
            let address = self.node_address(&replica.spec.node)?;
            let control = format!("http://{}", SocketAddr::new(address, replica.spec.port + 1));
            let endpoint = tonic::transport::Endpoint::from_shared(control.clone())
                .with_context(|| format!("replica {}: control address {control}", replica.name))?
                .connect_timeout(ENGINE_TIMEOUT);
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to replica {} at {control}", replica.name))?;
            ReplicaControlClient::new(channel)
                .expand(pb::ExpandRequest { size })
                .await
                .map_err(|e| expand_error(&format!("replica {}", replica.name), &e))?;
        }
        Ok(())
    }

    /// Stops a replica's process, removes its data and its object.
    async fn remove_replica(&self, replica: &Replica) -> anyhow::Result<()> {
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

    fn note_replacement(&self, volume: &str) {
        if let Ok(mut replaced) = self.replaced.lock() {
            replaced.insert(volume.to_string(), Instant::now());
        }
    }

    fn replaced_recently(&self, volume: &str) -> bool {
        self.replaced
            .lock()
            .ok()
            .and_then(|r| r.get(volume).copied())
            .is_some_and(|at| at.elapsed() < REPLACEMENT_BACKOFF)
    }

    fn note_unreachable(&self, node: &str) {
        if let Ok(mut unreachable) = self.unreachable.lock() {
            unreachable.insert(node.to_string(), Instant::now());
        }
    }

    fn recently_unreachable(&self, node: &str) -> bool {
        self.unreachable
            .lock()
            .ok()
            .and_then(|u| u.get(node).copied())
            .is_some_and(|at| at.elapsed() < NODE_TIMEOUT)
    }

    /// `tcp://address:port` of a replica.
    fn replica_address(&self, replica: &Replica) -> anyhow::Result<String> {
        Ok(format!(
            "tcp://{}:{}",
            self.node_address(&replica.spec.node)?,
            replica.spec.port
        ))
    }

    /// Whether `node`'s manager reported in lately.
    fn node_ready(&self, node: &str) -> bool {
        self.state
            .get::<Node>(Kind::Node, node)
            .ok()
            .flatten()
            .is_some_and(|n| node_is_ready(&n))
    }

    /// Runs `change` on the stored volume `name` (atomically; it may run again if another
    /// manager wrote the volume meanwhile) under the reconcile lock, then wakes the loop.
    pub async fn update_volume(
        &self,
        name: &str,
        change: impl FnMut(&mut Volume) -> anyhow::Result<()>,
    ) -> anyhow::Result<Volume> {
        let _busy = self.busy.lock().await;
        let volume = self
            .state
            .update(Kind::Volume, name, change)?
            .with_context(|| format!("no volume {name}"))?;
        self.poke();
        Ok(volume)
    }
}

/// Why a volume could not be expanded.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// The request makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// Not now: the volume is attaching, or a replica is down.
    #[error("{0}")]
    Busy(String),
    /// The engine or the state store failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// An expansion a replica or engine refused as invalid (a size its filesystem cannot
/// hold) is the request's fault; anything else is a failure.
fn expand_error(who: &str, status: &tonic::Status) -> ExpandError {
    let message = format!("{who} expand: {}", status.message());
    if status.code() == tonic::Code::InvalidArgument {
        ExpandError::Invalid(message)
    } else {
        ExpandError::Failed(anyhow::anyhow!(message))
    }
}

/// A volume's status from its placement `message`, its engine's and its replicas'.
fn volume_status(
    volume: &Volume,
    engine: &Engine,
    replicas: &[Replica],
    message: String,
) -> VolumeStatus {
    let message = if message.is_empty() {
        engine.status.message.clone()
    } else {
        message
    };
    let mut status = VolumeStatus {
        message,
        endpoint: None,
        ..volume.status.clone()
    };
    if volume.spec.attached_node.is_some() {
        status.endpoint = engine.status.endpoint.clone();
        status.state = match engine.status.state {
            EngineState::Running => VolumeState::Attached,
            EngineState::Error if status.state == VolumeState::Attached => VolumeState::Attached,
            _ => VolumeState::Attaching,
        };
        status.robustness = match engine.status.health.as_str() {
            _ if engine.status.state != EngineState::Running => Robustness::Faulted,
            "healthy" if engine.status.replicas.len() >= volume.spec.replicas => {
                Robustness::Healthy
            }
            "healthy" | "degraded" => Robustness::Degraded,
            _ => Robustness::Faulted,
        };
        return status;
    }
    let running = replicas
        .iter()
        .filter(|r| r.status.state == ReplicaState::Running)
        .count();
    status.state = if engine.status.node.is_some() {
        VolumeState::Detaching
    } else if running == 0 && replicas.is_empty() && !status.message.is_empty() {
        VolumeState::Failed
    } else if running == 0 && status.state == VolumeState::Creating {
        VolumeState::Creating
    } else {
        VolumeState::Detached
    };
    status.robustness = match running {
        0 => Robustness::Faulted,
        n if n >= volume.spec.replicas => Robustness::Healthy,
        _ => Robustness::Degraded,
    };
    status
}

fn mark_failed(replica: &mut Replica, reason: &str) {
    tracing::warn!(replica = %replica.name, reason, "replica failed");
    replica.status.state = ReplicaState::Failed;
    replica.status.message = reason.to_string();
    replica.status.failed_at = Some(Utc::now().to_rfc3339());
}

/// Whether `interval` seconds passed since `since` (RFC 3339).
pub(crate) fn waited(since: &str, interval: u64) -> bool {
    chrono::DateTime::parse_from_rfc3339(since)
        .map(|at| {
            let interval = i64::try_from(interval).unwrap_or(i64::MAX);
            (Utc::now() - at.with_timezone(&Utc)).num_seconds() >= interval
        })
        .unwrap_or(true)
}

/// Whether disk space changed enough to record (free space moves with every write).
fn disks_changed(old: &[crate::model::DiskStatus], new: &[crate::model::DiskStatus]) -> bool {
    const SLACK: u64 = 64 << 20;
    old.len() != new.len()
        || old.iter().zip(new).any(|(a, b)| {
            a.name != b.name
                || a.capacity != b.capacity
                || a.scheduled != b.scheduled
                || a.available.abs_diff(b.available) > SLACK
        })
}

/// A node is ready while its manager reports in: its heartbeat is recent.
fn node_is_ready(node: &Node) -> bool {
    node.status.ready
        && node
            .status
            .heartbeat
            .as_deref()
            .is_some_and(|at| !waited(at, NODE_TIMEOUT.as_secs()))
}

fn candidate(node: &Node) -> NodeCandidate {
    NodeCandidate {
        name: node.name.clone(),
        zone: node.spec.zone.clone(),
        tags: node.spec.tags.clone(),
        ready: node_is_ready(node),
        allow_scheduling: node.spec.allow_scheduling,
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
                    capacity: status.map_or(0, |s| s.capacity),
                    available: status.map_or(0, |s| s.available),
                    reserved: disk.reserved,
                    scheduled: status.map_or(0, |s| s.scheduled),
                }
            })
            .collect(),
    }
}

/// A port p in the range with p and p+1 unused by our objects and, when `ip` is this
/// host's (`local`), free to bind now. The search starts at a random pair, so managers
/// sharing a host (or other programs) rarely race for the same ports; a daemon that
/// still loses the race fails to start and gets new ports on the next pass.
fn free_port_pair(ip: IpAddr, local: bool, used: &HashSet<u16>) -> anyhow::Result<u16> {
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

pub(crate) async fn connect_engine(address: &str) -> anyhow::Result<EngineControlClient<Channel>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .with_context(|| format!("engine address {address}"))?
        .connect_timeout(ENGINE_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to the engine at {address}"))?;
    Ok(EngineControlClient::new(channel))
}
