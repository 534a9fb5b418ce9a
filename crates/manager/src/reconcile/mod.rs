//! The reconcilers: every second (and at once after an API change) each volume's
//! replicas and engine are moved toward the volume's spec, and the status of volumes,
//! replicas and nodes is written from what the agent and the engine report.
//!
//! Replica failure: a replica whose process exited or that its engine dropped (ERR) is
//! marked failed. After `replica_replenishment_wait_interval` its process is started
//! again on the same data (the engine then rebuilds only what it missed); if that is not
//! possible, a new replica is scheduled in its place and rebuilt in full.
//!
//! This file holds the manager and the pass over each volume; what the pass does for
//! each object is in a file of its own: `nodes`, `replicas`, `engine`, `expansion`,
//! `status`; standby (disaster recovery) volumes have a pass of their own, `standby`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use shorthorn_backup::TargetPolicy;
use shorthorn_proto::v1::engine_control_client::EngineControlClient;
use tokio::sync::{Mutex, Notify};
use tonic::transport::Channel;

use crate::backups::{BackupRunner, VolumeLocks};
use crate::clock::waited;
use crate::cluster_agents::{ClusterAgents, NodeAgents};
use crate::engine_client::ENGINE_TIMEOUT;
use crate::jobs::JobRunner;
use crate::model::{
    Engine, EngineSpec, EngineState, EngineStatus, Node, Replica, ReplicaState, Settings, Volume,
    VolumeState,
};
use crate::state::{Kind, StateStore, StateStoreExt};
use shorthorn_agent::{Agent, NodeAgent};

mod engine;
mod events;
mod eviction;
mod expansion;
mod locality;
mod nodes;
mod replicas;
mod snapshots;
mod standby;
mod status;
#[cfg(test)]
mod tests;

use eviction::Evictions;
pub use expansion::ExpandError;
use locality::{Locality, locality};
pub(crate) use nodes::node_is_ready;
use replicas::retire_excess;
pub use snapshots::{SnapshotChange, SnapshotError};
use status::volume_status;

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

/// The control plane of one node: state, the node's agent, the reconcile loop.
pub struct Manager {
    state: Arc<dyn StateStore>,
    agent: Arc<Agent>,
    node: String,
    /// How the reconcilers reach each node's agent (this one's included).
    agents: Arc<dyn NodeAgents>,
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
    /// When this node's heartbeat was last written.
    heartbeat_written: std::sync::Mutex<Option<Instant>>,
    /// Volumes that got a replacement replica, and when.
    replaced: std::sync::Mutex<HashMap<String, Instant>>,
    /// Control clients of running engines, by address.
    engine_clients: std::sync::Mutex<HashMap<String, EngineControlClient<Channel>>>,
    /// Whether this manager reconciles volumes, runs jobs and backups and may lead;
    /// false on an agent-only node, which only reports itself.
    reconciles: bool,
    /// Standby volumes' reads of their backup targets.
    standby_reads: standby::StandbyReads,
}

impl Manager {
    /// A manager over `state` driving `agent` on node `node`, and other nodes' agents
    /// over their API with `node_token`; with `reconciles` false it only reports the
    /// node (an agent-only node).
    pub fn new(
        state: Arc<dyn StateStore>,
        agent: Arc<Agent>,
        node: &str,
        node_token: &str,
        reconciles: bool,
    ) -> Manager {
        let agents = Arc::new(ClusterAgents::new(node, agent.clone(), node_token));
        Manager::with_agents(state, agent, agents, node, reconciles)
    }

    /// A manager that reaches nodes' agents through `agents` (the reconcilers' tests
    /// give it fakes); `agent` is still this node's own, which reports its disks.
    pub fn with_agents(
        state: Arc<dyn StateStore>,
        agent: Arc<Agent>,
        agents: Arc<dyn NodeAgents>,
        node: &str,
        reconciles: bool,
    ) -> Manager {
        let volume_locks = VolumeLocks::default();
        let target_policy = agent.target_policy().clone();
        Manager {
            state,
            agent,
            node: node.to_string(),
            agents,
            busy: Mutex::new(()),
            wake: Notify::new(),
            adding: Arc::default(),
            add_failures: Arc::default(),
            jobs: JobRunner::new(volume_locks.clone(), target_policy.clone()),
            backups: BackupRunner::new(volume_locks, target_policy),
            unreachable: std::sync::Mutex::default(),
            heartbeat_written: std::sync::Mutex::default(),
            replaced: std::sync::Mutex::default(),
            engine_clients: std::sync::Mutex::default(),
            reconciles,
            standby_reads: standby::StandbyReads::default(),
        }
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// Which backup targets this node may open for an API caller.
    pub fn target_policy(&self) -> &TargetPolicy {
        self.agent.target_policy()
    }

    /// This manager's node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The existing backup target at `url`, as this node may open it
    /// ([`crate::backups::open_target`]).
    pub fn open_target(&self, url: &str) -> anyhow::Result<shorthorn_backup::Target> {
        crate::backups::open_target(self.state.as_ref(), self.target_policy(), url)
    }

    /// This node's agent.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// The agent of `node`: this process's own, or the node's over its API.
    fn agent_for(&self, node: &str) -> anyhow::Result<Arc<dyn NodeAgent>> {
        let record = if node == self.node {
            None
        } else {
            self.state.get::<Node>(Kind::Node, node)?
        };
        self.agents.agent_for(node, record.as_ref())
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
                && let Err(e) = self.backups.run_due(&self.state, &self.node)
            {
                tracing::warn!(error = %format!("{e:#}"), "backups");
            }
            if let Err(e) = crate::events::prune_if_due(self.state.as_ref()) {
                tracing::warn!(error = %format!("{e:#}"), "pruning events");
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
        let evictions = Evictions::of(&self.state.list::<Node>(Kind::Node)?);
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
            self.heartbeat_if_due()?;
            let reconciled = self
                .reconcile_volume(volume, replicas, &settings, &evictions)
                .await;
            if let Err(e) = reconciled {
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

    async fn reconcile_volume(
        &self,
        mut volume: Volume,
        mut replicas: Vec<Replica>,
        settings: &Settings,
        evictions: &Evictions,
    ) -> anyhow::Result<()> {
        if volume.spec.standby.is_some() {
            return self.reconcile_standby(volume, replicas, settings).await;
        }
        volume.status.owner = Some(self.node.clone());
        let stored_replicas: HashMap<String, Replica> = replicas
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        // A detached volume with replicas to move off an evicted node or disk gets an
        // engine for maintenance (no frontend): only an engine rebuilds their
        // replacements.
        let moving = volume.spec.attached_node.is_none()
            && volume.status.state != VolumeState::Creating
            && replicas
                .iter()
                .any(|r| r.spec.desire_running && !evictions.keeps(r));
        let engine_runs = volume.spec.attached_node.is_some() || moving;
        // 1. Processes: start what should run, report what exited.
        for replica in &mut replicas {
            self.reconcile_replica_process(&volume, replica, settings, engine_runs)
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
        // 2. Enough replicas: schedule replacements for those given up on and for those
        // that must move (eviction); more than wanted: the least useful retire.
        let usable = replicas
            .iter()
            .filter(|r| r.spec.desire_running && evictions.keeps(r))
            .count();
        let locality = locality(&volume, &replicas, evictions);
        // While a replica is built on the engine's node, the one it is to replace keeps
        // serving; once it is in sync, it is never the one that retires.
        if usable > volume.spec.replicas && locality != Locality::Building {
            retire_excess(
                &mut replicas,
                usable - volume.spec.replicas,
                evictions,
                locality.local_replica(),
            );
        }
        let usable = usable.min(volume.spec.replicas);
        let mut message = String::new();
        // Replacements (not a new volume's first replicas) at most once per
        // REPLACEMENT_BACKOFF, so a replica that cannot start is not replaced in a loop.
        let replacing = !replicas.is_empty();
        let backing_off = replacing && self.replaced_recently(&volume.name);
        // What to place: replacements, or else the replica locality wants on the
        // engine's node (one more than wanted, until it is in sync).
        let (count, only) = match &locality {
            _ if usable < volume.spec.replicas => (volume.spec.replicas - usable, None),
            Locality::Missing(node) => (1, Some(node.as_str())),
            Locality::Satisfied { .. } | Locality::Building => (0, None),
        };
        if count > 0 && backing_off {
            message = match only {
                Some(node) => {
                    format!("data locality: waiting before building a replica on node {node} again")
                }
                None => "waiting before replacing a failed replica again".into(),
            };
        } else if count > 0 {
            // A locality replica that cannot be placed is tried again each pass (only
            // the message changes); one that was placed counts as a replacement.
            if replacing && only.is_none() {
                self.note_replacement(&volume.name);
            }
            // Replicas that must move do not hold their place (a disk eviction may
            // place the new one on another disk of the same node).
            let staying: Vec<Replica> = replicas
                .iter()
                .filter(|r| evictions.keeps(r))
                .cloned()
                .collect();
            match self.schedule_replicas(&volume, &staying, count, only) {
                Ok(new) => {
                    for mut replica in new {
                        if only.is_some() {
                            self.note_replacement(&volume.name);
                            tracing::info!(volume = %volume.name, replica = %replica.name, node = %replica.spec.node, "data locality: building a replica on the engine's node");
                        }
                        self.reconcile_replica_process(
                            &volume,
                            &mut replica,
                            settings,
                            engine_runs,
                        )
                        .await?;
                        replicas.push(replica);
                    }
                }
                Err(e) => match only {
                    Some(node) => {
                        message = format!(
                            "data locality: no replica can be built on node {node}, where the volume is attached; its replicas stay where they are: {e:#}"
                        );
                    }
                    None => message = format!("{e:#}"),
                },
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
        // Maintenance only while a replacement is still to be rebuilt (none placed, as
        // when there is nowhere to go: no engine), on the node of the first one (whose
        // rebuild writes then go over its unix socket).
        let maintenance_node = replicas
            .iter()
            .filter(|_| moving)
            .find(|r| {
                r.spec.desire_running
                    && evictions.keeps(r)
                    && r.status.state != ReplicaState::Running
            })
            .map(|r| r.spec.node.clone());
        // Where the maintenance engine started, it stays until the move is done.
        let maintenance_node = maintenance_node.map(|node| {
            engine
                .status
                .node
                .clone()
                .filter(|_| engine.status.maintenance)
                .unwrap_or(node)
        });
        engine.spec.maintenance = volume.spec.attached_node.is_none() && maintenance_node.is_some();
        engine.spec.node = volume.spec.attached_node.clone().or(maintenance_node);
        self.set_engine_members(&mut engine, &replicas)?;
        self.put_engine_if_changed(&engine, &mut stored_engine)?;
        // A replica on a node that is down cannot come back soon; if the engine's open
        // rule needs it, only a salvage opens the volume (writes only it acknowledged are
        // lost: docs/consistency.md). `auto_salvage` allows that.
        let salvage_requested = volume.spec.salvage_requests > volume.status.salvages
            && volume.spec.attached_node.is_some();
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
                salvage_requested,
            )
            .await;
        // Done once the engine serves again; until then each pass salvages anew.
        if salvage_requested
            && processed.is_ok()
            && engine.status.state == EngineState::Running
            && engine.status.health != "faulted"
        {
            volume.status.salvages = volume.spec.salvage_requests;
        }
        self.put_engine_if_changed(&engine, &mut stored_engine)?;
        if let Err(e) = processed {
            // What the pass learnt about the replicas is kept all the same: an engine
            // that refuses to open until a replica is back must not keep the pass from
            // recording that replica failed (and starting it again after the wait).
            self.save_replicas(&replicas, &stored_replicas)?;
            return Err(e);
        }
        // 4. Replicas as the engine reports them; those that must move retire once
        // enough others are healthy; then the engine's membership follows.
        self.observe_replicas_in_engine(&engine, &mut replicas)?;
        evictions.retire_moved(
            &mut replicas,
            volume.spec.replicas,
            engine.status.state == EngineState::Running,
        );
        self.set_engine_members(&mut engine, &replicas)?;
        self.reconcile_engine_members(&engine).await;
        self.put_engine_if_changed(&engine, &mut stored_engine)?;
        self.remove_retired(&engine, &mut replicas).await?;
        volume.status = volume_status(&volume, &engine, &replicas, message);
        self.save_replicas(&replicas, &stored_replicas)?;
        // Write the status unless an API call changed the volume meanwhile (it has the
        // lock, so only deletion could): then the next pass sees the new spec.
        self.save_status(&volume)
    }

    /// Writes the replicas that differ from what the pass read (new ones: never read), in
    /// one write: a reader never sees the evicted replicas retired and their
    /// replacements not yet healthy.
    fn save_replicas(
        &self,
        replicas: &[Replica],
        stored: &HashMap<String, Replica>,
    ) -> anyhow::Result<()> {
        let changed: Vec<&Replica> = replicas
            .iter()
            .filter(|r| stored.get(&r.name) != Some(*r))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let objects: Vec<(&str, &Replica)> =
            changed.iter().map(|r| (r.name.as_str(), *r)).collect();
        self.state.put_all(Kind::Replica, &objects)?;
        for replica in changed {
            self.report_replica_change(stored.get(&replica.name), replica);
        }
        Ok(())
    }

    /// Writes a volume's status onto the stored volume, keeping its spec: an API call on
    /// another node's manager may have changed the spec meanwhile.
    fn save_status(&self, volume: &Volume) -> anyhow::Result<()> {
        let mut before = None;
        self.state
            .update::<Volume>(Kind::Volume, &volume.name, |stored| {
                before = Some(stored.status.clone());
                stored.status.clone_from(&volume.status);
                Ok(())
            })?;
        if let Some(before) = before {
            self.report_volume_change(&volume.name, &before, &volume.status);
        }
        Ok(())
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
        self.standby_reads.forget(name);
        tracing::info!(volume = name, "deleted");
        Ok(())
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

    /// Marks replica `replica` of `volume` to retire (it leaves the engine, then its
    /// process and data go; a new one is scheduled if the volume then has fewer than it
    /// wants). Refused for a replica of another volume, and for the volume's last
    /// running one.
    pub async fn retire_replica(
        &self,
        volume: &str,
        replica: &str,
    ) -> Result<Replica, RetireError> {
        let _busy = self.busy.lock().await;
        let replicas: Vec<Replica> = self.state.list(Kind::Replica)?;
        if !replicas
            .iter()
            .any(|r| r.name == replica && r.spec.volume == volume)
        {
            return Err(RetireError::NotFound(format!(
                "volume {volume:?} has no replica {replica:?}"
            )));
        }
        let others_running = replicas.iter().any(|r| {
            r.spec.volume == volume
                && r.name != replica
                && r.spec.desire_running
                && r.status.state == ReplicaState::Running
        });
        if !others_running {
            return Err(RetireError::Last(format!(
                "replica {replica:?} is the last running replica of volume {volume:?}; its data would be lost"
            )));
        }
        let retired = self
            .state
            .update::<Replica>(Kind::Replica, replica, |r| {
                r.spec.desire_running = false;
                r.spec.retire = true;
                r.status.message = "retiring: removed by request".into();
                Ok(())
            })?
            .with_context(|| format!("no replica {replica}"))?;
        tracing::info!(volume, replica, "replica retires by request");
        self.poke();
        Ok(retired)
    }
}

/// Why a replica could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    /// No such replica of that volume.
    #[error("{0}")]
    NotFound(String),
    /// It holds the volume's only running copy.
    #[error("{0}")]
    Last(String),
    /// The state store failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}
