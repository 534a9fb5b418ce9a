//! The reconcilers' rules against fake node agents: no processes, no network. Each test
//! sets up nodes and a volume in a real state store, runs passes, changes what the fake
//! agents report, and checks what the reconcilers asked of which agent and wrote.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::{ExpandError, Manager, SETTINGS_NAME};
use crate::cluster_agents::{NodeAgents, StoredNodes};
use crate::model::{
    DiskSpec, DiskStatus, Engine, Node, NodeSpec, NodeStatus, Replica, ReplicaState, Settings,
    Volume, VolumeSpec, VolumeState, VolumeStatus,
};
use crate::state::{EmbeddedStore, Kind, StateStore, StateStoreExt};
use shorthorn_agent::protocol::{
    CloneLaunch, EngineLaunch, ProcessState, ReplicaLaunch, RestoreLaunch, restore_task_name,
};
use shorthorn_agent::{Agent, NodeAgent};

const GIB: u64 = 1 << 30;

/// What a reconciler asked of an agent.
#[derive(Debug, Clone)]
enum Call {
    StartReplica(ReplicaLaunch),
    StartEngine(EngineLaunch),
    StartRestore(RestoreLaunch),
    StartClone(CloneLaunch),
    Stop(String),
    RemoveReplica(String),
}

/// One node's agent: processes it "runs" (started ones run until a test says they
/// exited), every call recorded; when `down`, it answers nothing.
#[derive(Default)]
struct FakeAgent {
    processes: Mutex<HashMap<String, ProcessState>>,
    /// Tasks' progress reports, as a test sets them.
    progress: Mutex<HashMap<String, String>>,
    calls: Mutex<Vec<Call>>,
    down: AtomicBool,
}

impl FakeAgent {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn replica_starts(&self, name: &str) -> Vec<ReplicaLaunch> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::StartReplica(l) if l.name == name => Some(l),
                _ => None,
            })
            .collect()
    }

    fn engine_starts(&self) -> Vec<EngineLaunch> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::StartEngine(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    fn set(&self, name: &str, state: ProcessState) {
        self.processes
            .lock()
            .unwrap()
            .insert(name.to_owned(), state);
    }

    fn answer(&self, call: Call, runs: Option<&str>) -> anyhow::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            anyhow::bail!("agent unreachable (fake)");
        }
        self.calls.lock().unwrap().push(call);
        if let Some(name) = runs {
            self.set(name, ProcessState::Running);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl NodeAgent for FakeAgent {
    async fn start_replica(&self, launch: &ReplicaLaunch) -> anyhow::Result<()> {
        self.answer(Call::StartReplica(launch.clone()), Some(&launch.name))
    }

    async fn start_engine(&self, launch: &EngineLaunch) -> anyhow::Result<()> {
        self.answer(Call::StartEngine(launch.clone()), Some(&launch.name))
    }

    async fn start_restore(&self, launch: &RestoreLaunch) -> anyhow::Result<()> {
        self.answer(Call::StartRestore(launch.clone()), None)
    }

    async fn start_clone(&self, launch: &CloneLaunch) -> anyhow::Result<()> {
        self.answer(Call::StartClone(launch.clone()), None)
    }

    async fn stop(&self, name: &str) -> anyhow::Result<()> {
        self.answer(Call::Stop(name.to_owned()), None)?;
        self.processes.lock().unwrap().remove(name);
        Ok(())
    }

    async fn remove_replica(&self, name: &str) -> anyhow::Result<()> {
        self.answer(Call::RemoveReplica(name.to_owned()), None)?;
        self.processes.lock().unwrap().remove(name);
        Ok(())
    }

    async fn state(&self, name: &str) -> ProcessState {
        if self.down.load(Ordering::SeqCst) {
            return ProcessState::Unreachable("agent unreachable (fake)".into());
        }
        self.processes
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or(ProcessState::Absent)
    }

    async fn progress(&self, name: &str) -> Option<String> {
        self.progress.lock().unwrap().get(name).cloned()
    }
}

struct FakeAgents(HashMap<String, Arc<FakeAgent>>);

impl NodeAgents for FakeAgents {
    fn agent_for(&self, node: &str, _record: Option<&Node>) -> anyhow::Result<Arc<dyn NodeAgent>> {
        let agent = self
            .0
            .get(node)
            .ok_or_else(|| anyhow::anyhow!("no fake agent for node {node}"))?;
        Ok(agent.clone())
    }
}

/// Nodes `n1`…`nN` (address 127.0.0.K, one 1 TiB disk each, ready), their fake
/// agents, and a manager on none of them (so every node is reached through its fake).
struct Cluster {
    _dir: tempfile::TempDir,
    state: Arc<dyn StateStore>,
    agents: HashMap<String, Arc<FakeAgent>>,
    manager: Manager,
}

impl Cluster {
    fn new(nodes: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> =
            Arc::new(EmbeddedStore::open(&dir.path().join("state.redb")).unwrap());
        let mut agents = HashMap::new();
        for i in 1..=nodes {
            let name = format!("n{i}");
            let node = Node {
                name: name.clone(),
                spec: NodeSpec {
                    address: format!("127.0.0.{i}"),
                    api_url: format!("http://127.0.0.{i}:1"),
                    zone: String::new(),
                    tags: Vec::new(),
                    allow_scheduling: true,
                    evict: false,
                    disks: vec![DiskSpec {
                        name: "d1".into(),
                        path: format!("/fake/{name}/d1"),
                        tags: Vec::new(),
                        reserved: 0,
                        allow_scheduling: true,
                        evict: false,
                    }],
                },
                status: NodeStatus {
                    ready: true,
                    heartbeat: Some(Utc::now().to_rfc3339()),
                    disks: vec![DiskStatus {
                        name: "d1".into(),
                        capacity: 1024 * GIB,
                        available: 1024 * GIB,
                        scheduled: 0,
                        replicas: 0,
                    }],
                },
            };
            state.put(Kind::Node, &name, &node).unwrap();
            agents.insert(name, Arc::new(FakeAgent::default()));
        }
        let own = Arc::new(Agent::new(
            "manager",
            Arc::new(StoredNodes(state.clone())),
            Arc::default(),
        ));
        let manager = Manager::with_agents(
            state.clone(),
            own,
            Arc::new(FakeAgents(agents.clone())),
            "manager",
            true,
        );
        let cluster = Cluster {
            _dir: dir,
            state,
            agents,
            manager,
        };
        cluster.settings(|_| {});
        cluster
    }

    fn settings(&self, change: impl FnOnce(&mut Settings)) {
        let mut settings: Settings = self
            .state
            .get(Kind::Settings, SETTINGS_NAME)
            .unwrap()
            .unwrap_or_default();
        change(&mut settings);
        self.state
            .put(Kind::Settings, SETTINGS_NAME, &settings)
            .unwrap();
    }

    fn agent(&self, node: &str) -> &FakeAgent {
        &self.agents[node]
    }

    fn create_volume(&self, name: &str, replicas: usize, attached_node: Option<&str>) {
        let volume = Volume {
            name: name.to_owned(),
            spec: VolumeSpec {
                size: GIB,
                replicas,
                node_selector: Vec::new(),
                disk_selector: Vec::new(),
                attached_node: attached_node.map(str::to_owned),
                recurring_jobs: Vec::new(),
                recurring_job_groups: Vec::new(),
                from_backup: None,
                from_snapshot: None,
                salvage_requests: 0,
                data_locality: crate::model::DataLocality::Disabled,
                labels: Default::default(),
                standby: None,
            },
            status: VolumeStatus::default(),
        };
        self.state.put(Kind::Volume, name, &volume).unwrap();
    }

    fn volume(&self, name: &str) -> Volume {
        self.state.get(Kind::Volume, name).unwrap().unwrap()
    }

    fn replicas(&self) -> Vec<Replica> {
        self.state.list(Kind::Replica).unwrap()
    }

    fn replica(&self, name: &str) -> Replica {
        self.state.get(Kind::Replica, name).unwrap().unwrap()
    }

    fn engine(&self, volume: &str) -> Engine {
        self.state
            .get(Kind::Engine, &Engine::name_for(volume))
            .unwrap()
            .unwrap()
    }

    /// One reconcile pass; an error (an engine the fakes cannot run) is the volume's
    /// message, as in a real pass.
    async fn pass(&self) {
        let _ = self.manager.reconcile_all().await;
    }

    /// Takes node `name` down (or back up): its agent stops answering and its record
    /// stops reporting ready.
    fn set_down(&self, name: &str, down: bool) {
        self.agent(name).down.store(down, Ordering::SeqCst);
        self.state
            .update::<Node>(Kind::Node, name, |node| {
                node.status.ready = !down;
                node.status.heartbeat = Some(Utc::now().to_rfc3339());
                Ok(())
            })
            .unwrap();
    }

    /// Moves a replica's failure `seconds` into the past.
    fn age_failure(&self, replica: &str, seconds: i64) {
        let at = (Utc::now() - chrono::Duration::seconds(seconds)).to_rfc3339();
        self.state
            .update::<Replica>(Kind::Replica, replica, |r| {
                r.status.failed_at = Some(at.clone());
                Ok(())
            })
            .unwrap();
    }
}

#[tokio::test]
async fn new_replicas_go_one_per_node_and_start_there() {
    let cluster = Cluster::new(3);
    cluster.create_volume("v", 3, None);
    cluster.pass().await;
    let replicas = cluster.replicas();
    assert_eq!(replicas.len(), 3);
    let mut nodes: Vec<&str> = replicas.iter().map(|r| r.spec.node.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(
        nodes,
        ["n1", "n2", "n3"],
        "hard anti-affinity: one per node"
    );
    for replica in &replicas {
        let starts = cluster
            .agent(&replica.spec.node)
            .replica_starts(&replica.name);
        assert_eq!(starts.len(), 1, "{}: started once", replica.name);
        let launch = &starts[0];
        assert_eq!(launch.volume, "v");
        assert_eq!(launch.size, GIB);
        assert_eq!(launch.disk, "d1");
        assert_eq!(launch.listen.port(), replica.spec.port);
        let node_number = &replica.spec.node[1..];
        assert_eq!(
            launch.listen.ip().to_string(),
            format!("127.0.0.{node_number}")
        );
        assert_eq!(replica.status.state, ReplicaState::Running);
    }
}

#[tokio::test]
async fn a_failed_replica_is_started_again_on_its_data_after_the_wait_interval() {
    let cluster = Cluster::new(3);
    cluster.settings(|s| s.replica_replenishment_wait_interval = 600);
    cluster.create_volume("v", 3, None);
    cluster.pass().await;
    let failed = cluster.replicas().remove(0);
    let agent = cluster.agent(&failed.spec.node);
    agent.set(&failed.name, ProcessState::Exited("exit status: 1".into()));

    cluster.pass().await;
    let replica = cluster.replica(&failed.name);
    assert_eq!(replica.status.state, ReplicaState::Failed);
    assert!(replica.status.message.contains("exited"), "{replica:?}");
    // Within the wait interval: neither started again nor replaced.
    cluster.pass().await;
    assert_eq!(agent.replica_starts(&failed.name).len(), 1);
    assert_eq!(cluster.replicas().len(), 3);
    assert!(cluster.replica(&failed.name).spec.desire_running);

    // After it: the same replica, on the same node, disk and data, starts again.
    cluster.age_failure(&failed.name, 601);
    cluster.pass().await;
    let starts = agent.replica_starts(&failed.name);
    assert_eq!(starts.len(), 2, "started again");
    assert_eq!(starts[1].disk, failed.spec.disk);
    let replica = cluster.replica(&failed.name);
    assert_eq!(replica.status.state, ReplicaState::Running);
    assert_eq!(cluster.replicas().len(), 3, "reused, not replaced");
}

#[tokio::test]
async fn a_replica_whose_node_stays_down_is_replaced_after_the_wait_interval_and_removed_after_the_stale_timeout()
 {
    let cluster = Cluster::new(4);
    cluster.settings(|s| {
        s.replica_replenishment_wait_interval = 600;
        s.stale_replica_timeout = 3600;
    });
    cluster.create_volume("v", 3, None);
    cluster.pass().await;
    let replicas = cluster.replicas();
    let spare = ["n1", "n2", "n3", "n4"]
        .into_iter()
        .find(|n| replicas.iter().all(|r| r.spec.node != *n))
        .unwrap();
    let lost = replicas[0].clone();
    cluster.set_down(&lost.spec.node, true);

    cluster.pass().await;
    let replica = cluster.replica(&lost.name);
    assert_eq!(replica.status.state, ReplicaState::Failed);
    assert!(
        replica.status.message.contains("unreachable"),
        "{replica:?}"
    );
    assert_eq!(
        cluster.replicas().len(),
        3,
        "no replacement within the wait"
    );

    cluster.age_failure(&lost.name, 601);
    cluster.pass().await;
    assert!(
        !cluster.replica(&lost.name).spec.desire_running,
        "given up on"
    );
    let replacement: Vec<Replica> = cluster
        .replicas()
        .into_iter()
        .filter(|r| r.spec.desire_running && r.spec.node == spare)
        .collect();
    assert_eq!(replacement.len(), 1, "replaced on the node that had none");
    assert_eq!(
        cluster
            .agent(spare)
            .replica_starts(&replacement[0].name)
            .len(),
        1
    );

    // Kept until the stale replica timeout (its node may come back with its data)…
    cluster.set_down(&lost.spec.node, false);
    cluster.age_failure(&lost.name, 1800);
    cluster.pass().await;
    assert_eq!(cluster.replicas().len(), 4);
    // …then its node's agent is asked to remove it, and the object goes.
    cluster.age_failure(&lost.name, 3601);
    cluster.pass().await;
    let removed = cluster
        .agent(&lost.spec.node)
        .calls()
        .iter()
        .any(|c| matches!(c, Call::RemoveReplica(n) if *n == lost.name));
    assert!(removed, "its agent removed its data");
    assert!(
        cluster
            .state
            .get_raw(Kind::Replica, &lost.name)
            .unwrap()
            .is_none()
    );
    assert_eq!(cluster.replicas().len(), 3);
}

/// Attaches `v` (3 replicas) to n1, lets its engine start, then takes the node of a
/// replica down and has the engine exit: the launch that restarts it.
async fn engine_restart_with_a_replica_node_down(auto_salvage: bool) -> (EngineLaunch, String) {
    let cluster = Cluster::new(3);
    cluster.settings(|s| s.auto_salvage = auto_salvage);
    cluster.create_volume("v", 3, Some("n1"));
    cluster.pass().await;
    let first = cluster.agent("n1").engine_starts();
    assert_eq!(
        first.len(),
        1,
        "the engine started where the volume is attached"
    );
    assert!(!first[0].salvage, "every node up: no salvage");
    assert_eq!(first[0].replicas.len(), 3);

    cluster.set_down("n3", true);
    cluster
        .agent("n1")
        .set(&first[0].name, ProcessState::Exited("signal: 9".into()));
    cluster.pass().await;
    let starts = cluster.agent("n1").engine_starts();
    assert_eq!(starts.len(), 2, "the engine started again");
    let down = cluster
        .replicas()
        .into_iter()
        .find(|r| r.spec.node == "n3")
        .unwrap();
    let address = format!("tcp://127.0.0.3:{}", down.spec.port);
    (starts[1].clone(), address)
}

#[tokio::test]
async fn auto_salvage_opens_the_engine_with_salvage_when_a_replica_s_node_is_down() {
    let (launch, down) = engine_restart_with_a_replica_node_down(true).await;
    assert!(launch.salvage);
    assert!(!launch.replicas.contains(&down), "{launch:?}");
    assert_eq!(launch.replicas.len(), 2);
}

#[tokio::test]
async fn without_auto_salvage_the_engine_is_never_opened_with_salvage() {
    let (launch, down) = engine_restart_with_a_replica_node_down(false).await;
    assert!(!launch.salvage);
    assert!(!launch.replicas.contains(&down), "{launch:?}");
}

#[tokio::test]
async fn detaching_from_a_node_that_is_down_counts_its_engine_stopped() {
    let cluster = Cluster::new(3);
    cluster.create_volume("v", 3, Some("n2"));
    cluster.pass().await;
    assert_eq!(cluster.engine("v").status.node.as_deref(), Some("n2"));

    cluster.set_down("n2", true);
    cluster
        .state
        .update::<Volume>(Kind::Volume, "v", |v| {
            v.spec.attached_node = None;
            Ok(())
        })
        .unwrap();
    cluster.pass().await;
    let engine = cluster.engine("v");
    assert_eq!(engine.status.node, None, "{engine:?}");
    assert_eq!(engine.status.address, None);
    assert_eq!(cluster.volume("v").spec.attached_node, None);

    // A node that still answers must stop the engine itself: until it does, the
    // engine is not forgotten.
    let cluster = Cluster::new(3);
    cluster.create_volume("w", 3, Some("n2"));
    cluster.pass().await;
    cluster.agent("n2").down.store(true, Ordering::SeqCst);
    cluster
        .state
        .update::<Volume>(Kind::Volume, "w", |v| {
            v.spec.attached_node = None;
            Ok(())
        })
        .unwrap();
    cluster.pass().await;
    assert_eq!(cluster.engine("w").status.node.as_deref(), Some("n2"));

    // Once it answers again, it is asked to stop the engine, and then it is forgotten.
    cluster.agent("n2").down.store(false, Ordering::SeqCst);
    cluster.pass().await;
    let engine = cluster.engine("w");
    let stopped = cluster
        .agent("n2")
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Stop(n) if *n == engine.name));
    assert!(stopped, "the engine's node stopped it");
    assert_eq!(engine.status.node, None, "{engine:?}");
}

#[tokio::test]
async fn a_volume_from_a_backup_restores_each_first_replica_before_starting_it() {
    let cluster = Cluster::new(2);
    let url = "s3://bucket/backups?volume=old&backup=b-1";
    cluster.create_volume("v", 2, None);
    cluster
        .state
        .update::<Volume>(Kind::Volume, "v", |v| {
            v.spec.from_backup = Some(url.to_owned());
            Ok(())
        })
        .unwrap();
    cluster.pass().await;
    let replicas = cluster.replicas();
    assert_eq!(replicas.len(), 2);
    for replica in &replicas {
        let agent = cluster.agent(&replica.spec.node);
        let restores: Vec<RestoreLaunch> = agent
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::StartRestore(l) => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(restores.len(), 1, "{}: one restore", replica.name);
        assert_eq!(restores[0].replica, replica.name);
        assert_eq!(restores[0].url, url);
        assert_eq!(restores[0].volume, "v");
        assert_eq!(restores[0].disk, replica.spec.disk);
        assert!(
            agent.replica_starts(&replica.name).is_empty(),
            "not started before its data is restored"
        );
        // While the restore runs, still not started.
        agent.set(&restore_task_name(&replica.name), ProcessState::Running);
    }
    cluster.pass().await;
    for replica in &replicas {
        let agent = cluster.agent(&replica.spec.node);
        assert!(agent.replica_starts(&replica.name).is_empty());
        agent.set(
            &restore_task_name(&replica.name),
            ProcessState::Exited("exit status: 0".into()),
        );
    }

    // Restored: the task is cleared away, the replica starts, and never restores again.
    cluster.pass().await;
    for replica in &replicas {
        let agent = cluster.agent(&replica.spec.node);
        let task = restore_task_name(&replica.name);
        let calls = agent.calls();
        let stop = calls
            .iter()
            .position(|c| matches!(c, Call::Stop(n) if *n == task));
        let start = calls
            .iter()
            .position(|c| matches!(c, Call::StartReplica(l) if l.name == replica.name));
        assert!(
            matches!((stop, start), (Some(a), Some(b)) if a < b),
            "{}: restore task stopped, then the replica started: {calls:?}",
            replica.name
        );
        assert_eq!(cluster.replica(&replica.name).spec.restore_from, None);
    }
}

#[tokio::test]
async fn expanding_a_detached_volume_with_a_replica_down_is_refused() {
    let cluster = Cluster::new(3);
    cluster.create_volume("v", 3, None);
    cluster.pass().await;
    let failed = cluster.replicas().remove(0);
    cluster
        .agent(&failed.spec.node)
        .set(&failed.name, ProcessState::Exited("exit status: 1".into()));
    cluster.pass().await;

    let error = cluster
        .manager
        .expand_volume("v", 2 * GIB)
        .await
        .unwrap_err();
    let ExpandError::Busy(message) = error else {
        panic!("expected a refusal, got {error:?}");
    };
    assert!(message.contains(&failed.name), "{message}");
    assert!(message.contains("every replica runs"), "{message}");
    assert_eq!(cluster.volume("v").spec.size, GIB, "the size is unchanged");
}

#[tokio::test]
async fn a_clone_fills_each_first_replica_from_a_running_replica_of_its_source() {
    let cluster = Cluster::new(2);
    cluster.create_volume("src", 1, None);
    cluster.pass().await;
    cluster.pass().await;
    let source = cluster.replicas().remove(0);
    assert_eq!(source.status.state, ReplicaState::Running, "{source:?}");
    let node_number = source.spec.node.trim_start_matches('n');
    let source_address = format!("tcp://127.0.0.{node_number}:{}", source.spec.port);
    cluster.create_volume("v", 2, None);
    cluster
        .state
        .update::<Volume>(Kind::Volume, "v", |v| {
            v.spec.from_snapshot = Some(crate::model::SnapshotRef {
                volume: "src".into(),
                snapshot: "s1".into(),
            });
            Ok(())
        })
        .unwrap();
    cluster.pass().await;
    let clones: Vec<Replica> = cluster
        .replicas()
        .into_iter()
        .filter(|r| r.spec.volume == "v")
        .collect();
    assert_eq!(clones.len(), 2);
    for replica in &clones {
        let agent = cluster.agent(&replica.spec.node);
        let launches: Vec<CloneLaunch> = agent
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::StartClone(l) => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(launches.len(), 1, "{}: one clone", replica.name);
        assert_eq!(launches[0].source, source_address);
        assert_eq!(
            (
                launches[0].source_volume.as_str(),
                launches[0].snapshot.as_str()
            ),
            ("src", "s1")
        );
        assert_eq!(launches[0].size, GIB);
        assert!(
            agent.replica_starts(&replica.name).is_empty(),
            "not started before the copy"
        );
        // The copy runs and reports how far it is: the replica's status shows it.
        let task = restore_task_name(&replica.name);
        agent.set(&task, ProcessState::Running);
        agent.progress.lock().unwrap().insert(
            task.clone(),
            "40% (400 of 1000 bytes examined, 400 transferred)".into(),
        );
    }
    cluster.pass().await;
    for replica in &clones {
        assert_eq!(
            cluster
                .replica(&replica.name)
                .status
                .fill_progress
                .as_deref(),
            Some("40% (400 of 1000 bytes examined, 400 transferred)")
        );
        cluster.agent(&replica.spec.node).set(
            &restore_task_name(&replica.name),
            ProcessState::Exited("exit status: 0".into()),
        );
    }
    cluster.pass().await;
    for replica in &clones {
        assert_eq!(cluster.replica(&replica.name).status.fill_progress, None);
        assert_eq!(cluster.replica(&replica.name).spec.clone_from, None);
        assert_eq!(
            cluster
                .agent(&replica.spec.node)
                .replica_starts(&replica.name)
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn best_effort_locality_builds_a_replica_on_the_engine_s_node_then_retires_another() {
    let cluster = Cluster::new(3);
    cluster.create_volume("v", 2, None);
    cluster.pass().await;
    let first = cluster.replicas();
    let elsewhere: Vec<&str> = first.iter().map(|r| r.spec.node.as_str()).collect();
    let free = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| !elsewhere.contains(n))
        .unwrap();
    cluster
        .state
        .update::<Volume>(Kind::Volume, "v", |v| {
            v.spec.attached_node = Some(free.to_string());
            v.spec.data_locality = crate::model::DataLocality::BestEffort;
            Ok(())
        })
        .unwrap();
    cluster.pass().await;
    let replicas = cluster.replicas();
    assert_eq!(replicas.len(), 3, "one more, on the engine's node");
    let local = replicas
        .iter()
        .find(|r| r.spec.node == free)
        .expect("a replica on the engine's node");
    assert_eq!(local.status.state, ReplicaState::Rebuilding);
    assert!(
        replicas.iter().all(|r| r.spec.desire_running),
        "none retires before the local replica is in sync: {replicas:?}"
    );
    cluster.pass().await;
    assert_eq!(cluster.replicas().len(), 3, "nothing more is placed");
    // The engine reports it in sync.
    let local = local.name.clone();
    cluster
        .state
        .update::<Replica>(Kind::Replica, &local, |r| {
            r.status.state = ReplicaState::Running;
            Ok(())
        })
        .unwrap();
    cluster.pass().await;
    let wanted: Vec<Replica> = cluster
        .replicas()
        .into_iter()
        .filter(|r| r.spec.desire_running)
        .collect();
    assert_eq!(wanted.len(), 2, "back to the replica count: {wanted:?}");
    assert!(
        wanted.iter().any(|r| r.name == local),
        "the local replica stays"
    );
    let retired: Vec<Replica> = cluster
        .replicas()
        .into_iter()
        .filter(|r| r.spec.retire)
        .collect();
    assert_eq!(retired.len(), 1, "one of the others retires");
    assert_ne!(retired[0].spec.node, free);
}

#[tokio::test]
async fn best_effort_locality_on_a_node_that_cannot_take_a_replica_moves_nothing() {
    let cluster = Cluster::new(4);
    cluster
        .state
        .update::<Node>(Kind::Node, "n4", |n| {
            n.spec.allow_scheduling = false;
            Ok(())
        })
        .unwrap();
    cluster.create_volume("v", 3, None);
    cluster.pass().await;
    cluster
        .state
        .update::<Volume>(Kind::Volume, "v", |v| {
            v.spec.attached_node = Some("n4".into());
            v.spec.data_locality = crate::model::DataLocality::BestEffort;
            Ok(())
        })
        .unwrap();
    for _ in 0..3 {
        cluster.pass().await;
    }
    let replicas = cluster.replicas();
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    assert!(replicas.iter().all(|r| r.spec.desire_running));
    assert!(replicas.iter().all(|r| r.spec.node != "n4"));
}

#[tokio::test]
async fn a_detached_volume_s_evicted_replica_is_moved_by_an_engine_without_a_frontend() {
    let cluster = Cluster::new(3);
    cluster.create_volume("v", 2, None);
    cluster.pass().await;
    cluster.pass().await;
    assert_eq!(cluster.volume("v").status.state, VolumeState::Detached);
    let first = cluster.replicas();
    let evicted = first[0].spec.node.clone();
    let spare = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| first.iter().all(|r| r.spec.node != *n))
        .unwrap();
    cluster
        .state
        .update::<Node>(Kind::Node, &evicted, |n| {
            n.spec.evict = true;
            Ok(())
        })
        .unwrap();
    cluster.pass().await;
    let replacement = cluster
        .replicas()
        .into_iter()
        .find(|r| r.spec.node == spare)
        .expect("a replacement on the spare node");
    assert_eq!(
        replacement.status.state,
        ReplicaState::Rebuilding,
        "an engine must rebuild it before it counts"
    );
    let engine = cluster.engine("v");
    assert!(engine.spec.maintenance, "{engine:?}");
    assert_eq!(engine.spec.node.as_deref(), Some(spare));
    let launches = cluster.agent(spare).engine_starts();
    assert_eq!(launches.len(), 1, "{launches:?}");
    assert!(!launches[0].frontend, "no frontend for maintenance");
    assert!(cluster.volume("v").spec.attached_node.is_none());
    // Nothing to move (the eviction stopped, the replacement in sync): no engine.
    cluster
        .state
        .update::<Node>(Kind::Node, &evicted, |n| {
            n.spec.evict = false;
            Ok(())
        })
        .unwrap();
    cluster
        .state
        .update::<Replica>(Kind::Replica, &replacement.name, |r| {
            r.status.state = ReplicaState::Running;
            Ok(())
        })
        .unwrap();
    cluster.pass().await;
    let engine = cluster.engine("v");
    assert!(
        !engine.spec.maintenance && engine.spec.node.is_none(),
        "{engine:?}"
    );
}
