//! The node agent: starts, stops and watches this node's engine and replica processes
//! when the manager asks, and reports the node's disks. It restarts nothing on its own;
//! a process that exits is reported (with its exit status), never hidden. What it is
//! asked is checked against this node's own record ([`crate::launch_checks`]); replica
//! directories it derives, marks and removes itself ([`crate::replica_dir`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use shorthorn_backup::TargetPolicy;
use tokio::sync::Mutex;

use crate::instances::{InstanceRecord, InstanceRecords};
use crate::launch_checks::{
    check_clone_launch, check_engine_launch, check_process_name, check_replica_launch,
    check_replica_name, check_restore_launch,
};
use crate::node::{NodeFacts, NodeRecords};
use crate::process::{Daemon, STOP_TIMEOUT};
use crate::protocol::{
    AgentError, CloneLaunch, EngineLaunch, ProcessState, ReplicaLaunch, RestoreLaunch,
    restore_task_name,
};
use crate::remote::NodeAgent;
use crate::replica_dir;

/// One node's agent.
pub struct Agent {
    /// This node's name: its record holds its address and disks.
    node: String,
    records: Arc<dyn NodeRecords>,
    processes: Mutex<HashMap<String, Tracked>>,
    /// Which backup targets this node may open for a caller (restores here; backups
    /// and target reads by this node's manager).
    target_policy: Arc<TargetPolicy>,
    /// Where engines and replicas that outlive this agent are recorded; `None`: they
    /// are children that end with it.
    instances: Option<InstanceRecords>,
    /// Whether [`Agent::stop_all`] stops recorded instances too (else they run on).
    stop_instances_on_exit: bool,
}

/// A process the agent watches.
enum Instance {
    /// Started by this agent.
    Child(Box<Daemon>),
    /// Started by an earlier agent on this node, taken over when this one started.
    Adopted(InstanceRecord),
}

struct Tracked {
    instance: Instance,
    exited: Option<String>,
}

impl Tracked {
    fn started(daemon: Daemon) -> Tracked {
        Tracked {
            instance: Instance::Child(Box::new(daemon)),
            exited: None,
        }
    }

    fn is_engine(&self) -> bool {
        match &self.instance {
            Instance::Child(daemon) => daemon.name().starts_with("engine"),
            Instance::Adopted(record) => record.what == "engine",
        }
    }

    fn is_task(&self) -> bool {
        matches!(&self.instance, Instance::Child(daemon) if daemon.is_task())
    }

    async fn stop(self) {
        match self.instance {
            Instance::Child(daemon) => daemon.stop().await,
            Instance::Adopted(record) => {
                if !record.stop(STOP_TIMEOUT).await {
                    tracing::warn!(name = %record.name, pid = record.pid, "did not stop within {STOP_TIMEOUT:?}; killed it");
                }
            }
        }
    }
}

impl Agent {
    /// The agent of node `node`, whose record (address, disks) is in `records`.
    pub fn new(
        node: &str,
        records: Arc<dyn NodeRecords>,
        target_policy: Arc<TargetPolicy>,
    ) -> Agent {
        Agent {
            node: node.to_string(),
            records,
            processes: Mutex::default(),
            target_policy,
            instances: None,
            stop_instances_on_exit: true,
        }
    }

    /// This agent's engines and replicas outlive it, recorded in `dir`; those an earlier
    /// agent recorded there and that still run are taken over now (a manager that asks
    /// finds them running and starts nothing). `stop_on_exit`: [`Agent::stop_all`]
    /// stops them all the same.
    pub fn keeping_instances(mut self, dir: &Path, stop_on_exit: bool) -> anyhow::Result<Agent> {
        let records = InstanceRecords::open(dir)?;
        let processes = self.processes.get_mut();
        let binary = std::env::current_exe().context("finding the shorthorn binary")?;
        for record in records.running()? {
            let current = crate::instances::runs_binary(record.pid, &binary);
            tracing::info!(name = %record.name, what = %record.what, pid = record.pid, runs_this_binary = ?current, "took over a running instance");
            processes.insert(
                record.name.clone(),
                Tracked {
                    instance: Instance::Adopted(record),
                    exited: None,
                },
            );
        }
        self.instances = Some(records);
        self.stop_instances_on_exit = stop_on_exit;
        Ok(self)
    }

    /// The backup targets this node may open for a caller.
    pub fn target_policy(&self) -> &Arc<TargetPolicy> {
        &self.target_policy
    }

    /// This node's record, read fresh: disks change through the API.
    fn own_node(&self) -> Result<NodeFacts, AgentError> {
        self.records
            .node(&self.node)?
            .with_context(|| format!("node {} is not registered", self.node))
            .map_err(AgentError::from)
    }

    /// Starts a replica in its directory on the disk named (created and marked if new)
    /// and waits until it serves.
    pub async fn start_replica(&self, launch: &ReplicaLaunch) -> Result<(), AgentError> {
        let node = self.own_node()?;
        let disk = check_replica_launch(launch, &node)?;
        let dir = replica_dir::prepare(&disk.path, &launch.name, &launch.volume)?;
        let args = vec![
            "replica".to_string(),
            dir.display().to_string(),
            "--size".into(),
            launch.size.to_string(),
            "--volume".into(),
            launch.volume.clone(),
            "--listen".into(),
            launch.listen.to_string(),
        ];
        Ok(self.start(&launch.name, "replica", &args).await?)
    }

    /// Starts an engine and waits until it serves.
    pub async fn start_engine(&self, launch: &EngineLaunch) -> Result<(), AgentError> {
        let node = self.own_node()?;
        let nodes = self.records.nodes()?;
        check_engine_launch(launch, &node, &nodes)?;
        let mut args = vec![
            "engine".to_string(),
            launch.volume.clone(),
            "--size".into(),
            launch.size.to_string(),
            "--listen".into(),
            launch.listen.to_string(),
            "--request-timeout".into(),
            format!("{}s", launch.tuning.engine_replica_timeout),
            "--slow-replica-ratio".into(),
            launch.tuning.slow_replica_ratio.to_string(),
            "--slow-replica-window".into(),
            format!("{}s", launch.tuning.slow_replica_window),
        ];
        if launch.frontend {
            args.extend([
                "--frontend".into(),
                "nbd".into(),
                "--frontend-listen".into(),
                launch.nbd.to_string(),
            ]);
        }
        for replica in &launch.replicas {
            args.extend(["--replica".into(), replica.clone()]);
        }
        if launch.salvage {
            args.push("--salvage".into());
        }
        Ok(self.start(&launch.name, "engine", &args).await?)
    }

    /// Starts `shorthorn backup restore URL --to DIR` in the background; its exit status
    /// (see [`Agent::state`]) tells how it went. S3 endpoint and credentials come from
    /// the launch's `access`, else from this process's environment.
    pub async fn start_restore(&self, launch: &RestoreLaunch) -> Result<(), AgentError> {
        let node = self.own_node()?;
        let disk = check_restore_launch(launch, &node, &self.target_policy)?;
        let dir = replica_dir::prepare(&disk.path, &launch.replica, &launch.volume)?;
        let mut args = vec![
            "backup".to_string(),
            "restore".into(),
            launch.url.clone(),
            "--to".into(),
            dir.display().to_string(),
            "--volume".into(),
            launch.volume.clone(),
        ];
        if launch.since_last_restore {
            args.push("--since-last-restore".into());
        }
        self.start_fill(
            &launch.replica,
            "restore",
            &args,
            &launch.access.environment(),
        )
        .await?;
        tracing::info!(replica = %launch.replica, url = %launch.url, to = %dir.display(), "restore started");
        Ok(())
    }

    /// Starts `shorthorn clone --from REPLICA … --to DIR` in the background, as the
    /// replica's fill task (see [`Agent::start_restore`]).
    pub async fn start_clone(&self, launch: &CloneLaunch) -> Result<(), AgentError> {
        let node = self.own_node()?;
        let nodes = self.records.nodes()?;
        let disk = check_clone_launch(launch, &node, &nodes)?;
        let dir = replica_dir::prepare(&disk.path, &launch.replica, &launch.volume)?;
        let args: Vec<String> = [
            "clone",
            "--from",
            &launch.source,
            "--from-volume",
            &launch.source_volume,
            "--snapshot",
            &launch.snapshot,
            "--to",
            &dir.display().to_string(),
            "--volume",
            &launch.volume,
            "--size",
            &launch.size.to_string(),
        ]
        .map(String::from)
        .into();
        self.start_fill(&launch.replica, "clone", &args, &[])
            .await?;
        tracing::info!(replica = %launch.replica, source = %launch.source, snapshot = %launch.snapshot, to = %dir.display(), "clone started");
        Ok(())
    }

    /// Starts the one-shot `shorthorn ARGS` (with `env`) that fills `replica`'s directory
    /// before its first start, as its task [`restore_task_name`], in place of an earlier one.
    async fn start_fill(
        &self,
        replica: &str,
        what: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<(), AgentError> {
        let name = restore_task_name(replica);
        let mut processes = self.processes.lock().await;
        if let Some(old) = processes.remove(&name) {
            old.stop().await;
        }
        let daemon = Daemon::spawn_task(format!("{what} {name}"), args, env)?;
        processes.insert(name, Tracked::started(daemon));
        Ok(())
    }

    async fn start(&self, name: &str, what: &str, args: &[String]) -> anyhow::Result<()> {
        let mut processes = self.processes.lock().await;
        if let Some(old) = processes.remove(name) {
            old.stop().await;
        }
        let label = format!("{what} {name}");
        let Some(instances) = &self.instances else {
            let mut daemon = Daemon::spawn(label, args)?;
            daemon.wait_ready(what).await?;
            tracing::info!(name, what, "started");
            processes.insert(name.to_string(), Tracked::started(daemon));
            return Ok(());
        };
        let mut daemon = Daemon::spawn_detached(label, args, &instances.output_path(name))?;
        // Recorded before it is ready: should this agent die meanwhile, the next one
        // finds it (and stops or keeps it) instead of starting a second one beside it.
        let started = async {
            let record = daemon
                .pid()
                .and_then(|pid| InstanceRecord::of(name, what, pid))
                .with_context(|| format!("{what} {name} exited as it started"))?;
            instances.save(&record)?;
            daemon.wait_ready(what).await
        }
        .await;
        if let Err(e) = started {
            // Detached: it would run on.
            let _ = daemon.child.kill().await;
            instances.remove(name);
            return Err(e);
        }
        tracing::info!(name, what, pid = ?daemon.pid(), "started");
        processes.insert(name.to_string(), Tracked::started(daemon));
        Ok(())
    }

    /// Stops a process (engine: after its final flush); nothing if it is not running.
    /// For a caller outside this process: only names that follow the naming rules.
    pub async fn stop_checked(&self, name: &str) -> Result<(), AgentError> {
        check_process_name(name)?;
        self.stop(name).await;
        Ok(())
    }

    /// [`Agent::state`] for a caller outside this process: only names that follow the
    /// naming rules.
    pub async fn state_checked(&self, name: &str) -> Result<ProcessState, AgentError> {
        check_process_name(name)?;
        Ok(self.state(name).await)
    }

    /// Stops a process (engine: after its final flush); nothing if it is not running.
    pub async fn stop(&self, name: &str) {
        let tracked = self.processes.lock().await.remove(name);
        if let Some(tracked) = tracked {
            tracked.stop().await;
            tracing::info!(name, "stopped");
        }
        if let Some(instances) = &self.instances {
            instances.remove(name);
        }
    }

    /// Whether `name` runs; an exit is reported until the process is stopped or started
    /// again.
    pub async fn state(&self, name: &str) -> ProcessState {
        let mut processes = self.processes.lock().await;
        let Some(tracked) = processes.get_mut(name) else {
            return ProcessState::Absent;
        };
        if tracked.exited.is_none() {
            let exited = match &mut tracked.instance {
                Instance::Child(daemon) => match daemon.child.try_wait() {
                    Ok(Some(status)) => Some(status.to_string()),
                    _ => None,
                },
                Instance::Adopted(record) => (!record.is_running())
                    .then(|| "exited (taken over from an earlier agent: status unknown)".into()),
            };
            if let Some(status) = exited {
                tracing::warn!(name, %status, "process exited");
                if let Some(instances) = &self.instances {
                    instances.remove(name);
                }
                tracked.exited = Some(status);
            }
        }
        match &tracked.exited {
            Some(status) => ProcessState::Exited(status.clone()),
            None => ProcessState::Running,
        }
    }

    /// A task's last progress report (a restore's or clone's), if it made one; once it
    /// exited, its very last (what it did in all).
    pub async fn progress(&self, name: &str) -> Option<String> {
        let mut processes = self.processes.lock().await;
        let tracked = processes.get_mut(name)?;
        let Instance::Child(daemon) = &mut tracked.instance else {
            return None;
        };
        match tracked.exited {
            Some(_) => daemon.final_progress().await,
            None => daemon.progress(),
        }
    }

    /// Stops a replica (and a fill of its directory) and removes its data directory, found on this node's disks by
    /// its name and removed only if its marker names it; already gone is done.
    pub async fn remove_replica(&self, name: &str) -> Result<(), AgentError> {
        check_replica_name(name)?;
        let node = self.own_node()?;
        self.stop(name).await;
        // A restore or clone still filling its directory goes first.
        self.stop(&restore_task_name(name)).await;
        let disks: Vec<&str> = node.disks.iter().map(|d| d.path.as_str()).collect();
        let removed = replica_dir::remove(&disks, name)?;
        if removed.is_empty() {
            tracing::info!(replica = name, "no directory to remove");
        }
        Ok(())
    }

    /// As the agent exits: stops every process, engines first so their final flush
    /// reaches the replicas — or, when its instances outlive it, only the one-shot
    /// tasks (a restore resumes when run again), leaving engines and replicas serving
    /// for the next agent to take over.
    pub async fn stop_all(&self) {
        let mut processes = self.processes.lock().await;
        let keep = self.instances.is_some() && !self.stop_instances_on_exit;
        let (kept, stopping): (Vec<_>, Vec<_>) =
            processes.drain().partition(|(_, t)| keep && !t.is_task());
        if !kept.is_empty() {
            let names: Vec<&str> = kept.iter().map(|(name, _)| name.as_str()).collect();
            tracing::info!(instances = ?names, "engines and replicas keep running; the next agent on this node takes them over (up --stop-instances stops them)");
        }
        let (engines, others): (Vec<_>, Vec<_>) =
            stopping.into_iter().partition(|(_, t)| t.is_engine());
        for (name, tracked) in engines.into_iter().chain(others) {
            tracked.stop().await;
            if let Some(instances) = &self.instances {
                instances.remove(&name);
            }
        }
    }
}

#[async_trait::async_trait]
impl NodeAgent for Agent {
    async fn start_replica(&self, launch: &ReplicaLaunch) -> anyhow::Result<()> {
        Ok(Agent::start_replica(self, launch).await?)
    }

    async fn start_engine(&self, launch: &EngineLaunch) -> anyhow::Result<()> {
        Ok(Agent::start_engine(self, launch).await?)
    }

    async fn start_restore(&self, launch: &RestoreLaunch) -> anyhow::Result<()> {
        Ok(Agent::start_restore(self, launch).await?)
    }

    async fn start_clone(&self, launch: &CloneLaunch) -> anyhow::Result<()> {
        Ok(Agent::start_clone(self, launch).await?)
    }

    async fn stop(&self, name: &str) -> anyhow::Result<()> {
        Agent::stop(self, name).await;
        Ok(())
    }

    async fn remove_replica(&self, name: &str) -> anyhow::Result<()> {
        Ok(Agent::remove_replica(self, name).await?)
    }

    async fn state(&self, name: &str) -> ProcessState {
        Agent::state(self, name).await
    }

    async fn progress(&self, name: &str) -> Option<String> {
        Agent::progress(self, name).await
    }
}
