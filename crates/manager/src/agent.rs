//! The node agent: starts, stops and watches this node's engine and replica processes
//! when the manager asks, and reports the node's disks. It restarts nothing on its own;
//! a process that exits is reported (with its exit status), never hidden. What it is
//! asked is checked against this node's own record ([`crate::launch_checks`]); replica
//! directories it derives, marks and removes itself ([`crate::replica_dir`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use shorthorn_backup::TargetPolicy;
use tokio::sync::Mutex;

use crate::agent_protocol::{
    AgentError, EngineLaunch, ProcessReport, ProcessState, RemoveReplica, ReplicaLaunch,
    RestoreLaunch, restore_task_name,
};
use crate::launch_checks::{
    check_engine_launch, check_process_name, check_replica_launch, check_replica_name,
    check_restore_launch,
};
use crate::model::{DiskSpec, DiskStatus, Node};
use crate::process::Daemon;
use crate::replica_dir;
use crate::state::{Kind, StateStore, StateStoreExt};

/// One node's agent.
pub struct Agent {
    /// This node's name: its record in `state` holds its address and disks.
    node: String,
    state: Arc<dyn StateStore>,
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
    /// The agent of node `node`, whose record (address, disks) is in `state`.
    pub fn new(node: &str, state: Arc<dyn StateStore>, target_policy: Arc<TargetPolicy>) -> Agent {
        Agent {
            node: node.to_string(),
            state,
            processes: Mutex::default(),
            target_policy,
        }
    }

    /// The backup targets this node may open for a caller.
    pub fn target_policy(&self) -> &Arc<TargetPolicy> {
        &self.target_policy
    }

    /// This node's record, read fresh: disks change through the API.
    fn own_node(&self) -> Result<Node, AgentError> {
        self.state
            .get::<Node>(Kind::Node, &self.node)?
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
        let nodes: Vec<Node> = self.state.list(Kind::Node)?;
        check_engine_launch(launch, &node, &nodes)?;
        let mut args = vec![
            "engine".to_string(),
            launch.volume.clone(),
            "--size".into(),
            launch.size.to_string(),
            "--listen".into(),
            launch.listen.to_string(),
            "--frontend".into(),
            "nbd".into(),
            "--frontend-listen".into(),
            launch.nbd.to_string(),
            "--request-timeout".into(),
            format!("{}s", launch.tuning.engine_replica_timeout),
            "--slow-replica-ratio".into(),
            launch.tuning.slow_replica_ratio.to_string(),
            "--slow-replica-window".into(),
            format!("{}s", launch.tuning.slow_replica_window),
        ];
        for replica in &launch.replicas {
            args.extend(["--replica".into(), replica.clone()]);
        }
        if launch.salvage {
            args.push("--salvage".into());
        }
        Ok(self.start(&launch.name, "engine", &args).await?)
    }

    /// Starts `shorthorn backup restore URL --to DIR` in the background; its exit status
    /// (see [`Agent::state`]) tells how it went. S3 credentials come from this process's
    /// environment.
    pub async fn start_restore(&self, launch: &RestoreLaunch) -> Result<(), AgentError> {
        let node = self.own_node()?;
        let disk = check_restore_launch(launch, &node, &self.target_policy)?;
        let dir = replica_dir::prepare(&disk.path, &launch.replica, &launch.volume)?;
        let args = vec![
            "backup".to_string(),
            "restore".into(),
            launch.url.clone(),
            "--to".into(),
            dir.display().to_string(),
            "--volume".into(),
            launch.volume.clone(),
        ];
        let name = restore_task_name(&launch.replica);
        let mut processes = self.processes.lock().await;
        if let Some(old) = processes.remove(&name) {
            old.daemon.stop().await;
        }
        let daemon = Daemon::spawn_task(format!("restore {name}"), &args)?;
        tracing::info!(%name, url = %launch.url, to = %dir.display(), "restore started");
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

    /// Stops a replica and removes its data directory, found on this node's disks by
    /// its name and removed only if its marker names it; already gone is done.
    pub async fn remove_replica(&self, name: &str) -> Result<(), AgentError> {
        check_replica_name(name)?;
        let node = self.own_node()?;
        self.stop(name).await;
        let disks: Vec<&str> = node.spec.disks.iter().map(|d| d.path.as_str()).collect();
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

    /// Space of each disk (of the filesystem holding its path).
    pub fn disk_status(disks: &[DiskSpec]) -> Vec<DiskStatus> {
        disks
            .iter()
            .map(|disk| {
                let (capacity, available) = filesystem_space(Path::new(&disk.path)).unwrap_or_else(|e| {
                    tracing::warn!(disk = %disk.path, error = %format!("{e:#}"), "disk unreadable");
                    (0, 0)
                });
                DiskStatus {
                    name: disk.name.clone(),
                    capacity,
                    available,
                    scheduled: 0,
                }
            })
            .collect()
    }
}

/// Total and available bytes of the filesystem holding `path`.
fn filesystem_space(path: &Path) -> anyhow::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok((
        stat.f_blocks.saturating_mul(stat.f_frsize),
        stat.f_bavail.saturating_mul(stat.f_frsize),
    ))
}

/// What the reconcilers ask of a node's agent. This process's own agent ([`Agent`]),
/// another node's over its API ([`RemoteAgent`]), or a fake in the reconcilers' tests.
#[async_trait::async_trait]
pub trait NodeAgent: Send + Sync {
    /// Starts a replica there.
    async fn start_replica(&self, launch: &ReplicaLaunch) -> anyhow::Result<()>;
    /// Starts an engine there.
    async fn start_engine(&self, launch: &EngineLaunch) -> anyhow::Result<()>;
    /// Starts a restore there.
    async fn start_restore(&self, launch: &RestoreLaunch) -> anyhow::Result<()>;
    /// Stops a process there.
    async fn stop(&self, name: &str) -> anyhow::Result<()>;
    /// Stops a replica there and removes its data (the agent finds its directory).
    async fn remove_replica(&self, name: &str) -> anyhow::Result<()>;
    /// A process's state there; `Unreachable` when the agent does not answer.
    async fn state(&self, name: &str) -> ProcessState;
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
}

/// How a manager reaches the agent of each node.
pub trait NodeAgents: Send + Sync {
    /// The agent of `node`; `record` is its node object, when registered.
    fn agent_for(&self, node: &str, record: Option<&Node>) -> anyhow::Result<Arc<dyn NodeAgent>>;
}

/// A cluster's agents as `shorthorn up` reaches them: its own in this process, the
/// others over their API with the node credential.
pub struct ClusterAgents {
    local_node: String,
    local: Arc<Agent>,
    node_token: String,
}

impl ClusterAgents {
    /// Agents seen from node `local_node`, whose own agent is `local`.
    pub fn new(local_node: &str, local: Arc<Agent>, node_token: &str) -> ClusterAgents {
        ClusterAgents {
            local_node: local_node.to_string(),
            local,
            node_token: node_token.to_string(),
        }
    }
}

impl NodeAgents for ClusterAgents {
    fn agent_for(&self, node: &str, record: Option<&Node>) -> anyhow::Result<Arc<dyn NodeAgent>> {
        if node == self.local_node {
            return Ok(self.local.clone());
        }
        let record = record.with_context(|| format!("node {node} is not registered"))?;
        Ok(Arc::new(RemoteAgent::new(
            &record.spec.api_url,
            &self.node_token,
        )?))
    }
}

/// Another node's agent, over its API.
pub struct RemoteAgent {
    /// `http://host:port` of that node's API.
    url: String,
    /// The cluster's node credential (agent routes take nothing else).
    node_token: String,
    http: reqwest::Client,
}

/// How long a call to another node's agent may take (starting a daemon included).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(40);

impl RemoteAgent {
    /// A client for the agent at `url`, calling with the node credential.
    pub fn new(url: &str, node_token: &str) -> anyhow::Result<RemoteAgent> {
        let http = reqwest::Client::builder()
            .timeout(REMOTE_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .context("HTTP client")?;
        Ok(RemoteAgent {
            url: url.trim_end_matches('/').to_string(),
            node_token: node_token.to_string(),
            http,
        })
    }

    async fn call<T: Serialize + Sync>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&T>,
    ) -> anyhow::Result<bytes::Bytes> {
        let url = &self.url;
        let mut request = self
            .http
            .request(method, format!("{url}{path}"))
            .bearer_auth(&self.node_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("agent at {url} unreachable"))?;
        let status = response.status();
        let bytes = response.bytes().await.context("agent answer")?;
        if !status.is_success() {
            bail!(
                "agent at {url}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }
}

#[async_trait::async_trait]
impl NodeAgent for RemoteAgent {
    async fn start_replica(&self, launch: &ReplicaLaunch) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/agent/v1/replicas", Some(launch))
            .await
            .map(drop)
    }

    async fn start_engine(&self, launch: &EngineLaunch) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/agent/v1/engines", Some(launch))
            .await
            .map(drop)
    }

    async fn start_restore(&self, launch: &RestoreLaunch) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/agent/v1/restores", Some(launch))
            .await
            .map(drop)
    }

    async fn stop(&self, name: &str) -> anyhow::Result<()> {
        self.call::<()>(
            reqwest::Method::DELETE,
            &format!("/agent/v1/processes/{name}"),
            None,
        )
        .await
        .map(drop)
    }

    async fn remove_replica(&self, name: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/agent/v1/replicas/{name}/remove"),
            Some(&RemoveReplica {}),
        )
        .await
        .map(drop)
    }

    async fn state(&self, name: &str) -> ProcessState {
        let answer = self
            .call::<()>(
                reqwest::Method::GET,
                &format!("/agent/v1/processes/{name}"),
                None,
            )
            .await
            .and_then(|bytes| {
                serde_json::from_slice::<ProcessReport>(&bytes).context("agent answer")
            });
        match answer {
            Ok(report) if report.state == "running" => ProcessState::Running,
            Ok(report) if report.state == "exited" => ProcessState::Exited(report.status),
            Ok(_) => ProcessState::Absent,
            Err(e) => ProcessState::Unreachable(format!("{e:#}")),
        }
    }
}
