//! The node agent: starts, stops and watches this node's engine and replica processes
//! when the manager asks, and reports the node's disks. It restarts nothing on its own;
//! a process that exits is reported (with its exit status), never hidden. What it is
//! asked is checked against this node's own record ([`crate::launch_checks`]); replica
//! directories it derives, marks and removes itself ([`crate::replica_dir`]).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use shorthorn_backup::TargetPolicy;
use tokio::sync::Mutex;

use crate::launch_checks::{
    check_clone_launch, check_engine_launch, check_process_name, check_replica_launch,
    check_replica_name, check_restore_launch,
};
use crate::node::{NodeFacts, NodeRecords};
use crate::process::Daemon;
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
}

struct Tracked {
    daemon: Daemon,
    exited: Option<String>,
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
        }
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
            old.daemon.stop().await;
        }
        let daemon = Daemon::spawn_task(format!("{what} {name}"), args, env)?;
        processes.insert(
            name,
            Tracked {
                daemon,
                exited: None,
            },
        );
        Ok(())
    }

    async fn start(&self, name: &str, what: &str, args: &[String]) -> anyhow::Result<()> {
        let mut processes = self.processes.lock().await;
        if let Some(old) = processes.remove(name) {
            old.daemon.stop().await;
        }
        let mut daemon = Daemon::spawn(format!("{what} {name}"), args)?;
        daemon.wait_ready(what).await?;
        tracing::info!(name, what, "started");
        processes.insert(
            name.to_string(),
            Tracked {
                daemon,
                exited: None,
            },
        );
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
            tracked.daemon.stop().await;
            tracing::info!(name, "stopped");
        }
    }

    /// Whether `name` runs; an exit is reported until the process is stopped or started
    /// again.
    pub async fn state(&self, name: &str) -> ProcessState {
        let mut processes = self.processes.lock().await;
        let Some(tracked) = processes.get_mut(name) else {
            return ProcessState::Absent;
        };
        if tracked.exited.is_none()
            && let Ok(Some(status)) = tracked.daemon.child.try_wait()
        {
            tracing::warn!(name, %status, "process exited");
            tracked.exited = Some(status.to_string());
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
        match tracked.exited {
            Some(_) => tracked.daemon.final_progress().await,
            None => tracked.daemon.progress(),
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

    /// Stops every process: engines first, so their final flush reaches the replicas.
    pub async fn stop_all(&self) {
        let mut processes = self.processes.lock().await;
        let (engines, replicas): (Vec<_>, Vec<_>) = processes
            .drain()
            .partition(|(_, t)| t.daemon.name().starts_with("engine"));
        for (_, tracked) in engines.into_iter().chain(replicas) {
            tracked.daemon.stop().await;
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
