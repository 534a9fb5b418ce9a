//! Several nodes sharing etcd, each in its own network namespace with its own address:
//!
//! ```text
//!   hub ns: etcd 10.78.1.1:2379, clients   ──veth──  node i ns 10.78.i.2 (i = 1..4):
//!   (routes between the nodes)                        `shorthorn up --etcd …` (manager,
//!                                                     agent, API :9600), its replicas
//!                                                     and engines
//! ```
//!
//! A 3-replica volume lands on three different nodes (hard anti-affinity, the default
//! with etcd). Attached on node 1 and written; then a node holding a replica is killed
//! (its manager, agent and replica: every process in its namespace): its replica is
//! reported failed, writes go on, and the volume returns to healthy with a replica
//! rebuilt on the spare node. Before that, a node holding a replica is evicted while fio
//! writes and verifies: its replica moves to the spare node, and the engine never holds
//! fewer than three RW replicas. Detached and attached on another node, it reads back everything written.
//! Finally the manager that owns the volume is killed: ownership moves to a surviving
//! manager within a bounded time (its etcd lease expires after 6 s). Last, the node the
//! volume is attached to dies as well: once it counts as down the volume detaches and
//! attaches on the one node left, reading back everything written. Every node sees the
//! same leader; when the leader's node dies first, another manager leads within the
//! lease's time-to-live and the node rejoins as a follower; at the end a live node leads.
//! Every node holds the same node credential (which the managers call each other's
//! agents with), and none has it in its `manager.json`.
//!
//! Dropping the cluster kills everything in its namespaces and deletes them. Needs root.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{BIN, Outcome, path_str, run_command};
use crate::netns::{Namespaces, ip, kill_namespace_pids};
use tempfile::TempDir;

pub(super) const NODES: usize = 4;
pub(super) const VOLUME: &str = "mvol";
const ETCD: &str = "http://10.78.1.1:2379";
static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// The hub and node namespaces, etcd, and one `shorthorn up` per node.
pub(super) struct Cluster {
    hub: String,
    nodes: Vec<String>,
    dir: TempDir,
    processes: Vec<Child>,
    token: String,
    /// Nodes that run `shorthorn agent` instead of `up`.
    agents: Vec<usize>,
    /// The hub's and the nodes' namespaces; deleted after the processes are killed.
    namespaces: Namespaces,
}

pub(super) fn address(node: usize) -> String {
    format!("10.78.{node}.2")
}

impl Cluster {
    /// Starts etcd and every node; those in `agents` run only the agent.
    pub(super) fn start(agents: &[usize]) -> Cluster {
        let tag = format!(
            "sh{}m{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::SeqCst)
        );
        let mut cluster = Cluster {
            hub: format!("{tag}h"),
            nodes: (1..=NODES).map(|i| format!("{tag}n{i}")).collect(),
            dir: tempfile::Builder::new().prefix("shmn").tempdir().unwrap(),
            processes: Vec::new(),
            token: String::new(),
            agents: agents.to_vec(),
            namespaces: Namespaces::default(),
        };
        let hub = cluster.hub.clone();
        cluster.namespaces.add(&hub);
        let forward = run_command(
            cluster.in_ns(&hub, "sysctl", &["-w", "net.ipv4.ip_forward=1"]),
            Duration::from_secs(10),
        );
        assert!(forward.success(), "{forward:?}");
        for (i, ns) in cluster.nodes.clone().iter().enumerate() {
            let i = i + 1;
            cluster.namespaces.add(ns);
            cluster.namespaces.link(
                (&hub, &format!("h{i}"), &format!("10.78.{i}.1/24")),
                (ns, "eth0", &format!("{}/24", address(i))),
            );
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.78.{i}.1"),
            ]);
        }
        let etcd_dir = cluster.dir.path().join("etcd");
        let etcd = cluster.spawn(
            &hub,
            "etcd",
            &[
                "--data-dir",
                path_str(&etcd_dir),
                "--listen-client-urls",
                ETCD,
                "--advertise-client-urls",
                ETCD,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
            ],
            "etcd.log",
        );
        cluster.processes.push(etcd);
        for i in 1..=NODES {
            cluster.start_node(i);
            if i == 1 {
                cluster.token = std::fs::read_to_string(cluster.data_dir(1).join("token"))
                    .unwrap()
                    .trim()
                    .to_string();
            }
        }
        cluster
    }

    /// Starts `program args` in node `node`'s network namespace but this process's mount
    /// namespace (`nsenter --net`, not `ip netns exec`, which makes a mount namespace of
    /// its own), so the mounts it makes are seen here; its output in the log file `log`;
    /// killed with the cluster.
    pub(super) fn spawn_on_node(&mut self, node: usize, program: &str, args: &[&str], log: &str) {
        let file = std::fs::File::create(self.dir.path().join(log)).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.nodes[node - 1]))
            .arg(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.processes.push(child);
    }

    /// The cluster's API token.
    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// The directory the cluster's data and logs live in.
    pub(super) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn in_ns(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]).args(args);
        command
    }

    fn spawn(&self, ns: &str, program: &str, args: &[&str], log: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        self.in_ns(ns, program, args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// `shorthorn watch --json ARGS` from the hub against node `via`'s API, its output
    /// into the log file `log`; the caller kills it.
    fn watch(&self, via: usize, args: &[&str], log: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        self.in_ns(&self.hub, BIN, &[&["watch", "--json"], args].concat())
            .env("SHORTHORN_URL", format!("http://{}:9600", address(via)))
            .env("SHORTHORN_TOKEN", &self.token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn data_dir(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("node{node}"))
    }

    /// Starts `up` on node `i` (1-based) and waits until its API answers.
    fn start_node(&mut self, i: usize) {
        let data = self.data_dir(i);
        let listen = format!("{}:9600", address(i));
        let role = if self.agents.contains(&i) {
            "agent"
        } else {
            "up"
        };
        let backups = path_str(&self.dir.path().join("backups")).to_owned();
        let args = [
            role,
            "--data-dir",
            path_str(&data),
            "--listen",
            &listen,
            "--address",
            &address(i),
            "--node",
            &format!("n{i}"),
            "--etcd",
            ETCD,
            // One directory for file:// backup targets, shared by the nodes (they
            // share this host's filesystem), as an NFS export would be.
            "--file-target-root",
            &backups,
        ];
        let child = self.spawn(
            &self.nodes[i - 1].clone(),
            BIN,
            &args,
            &format!("node{i}.log"),
        );
        self.processes.push(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !data.join("manager.json").exists() {
            let exited = self.processes.last_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none(),
                "node {i} exited ({exited:?}):\n{}",
                self.log(&format!("node{i}.log"))
            );
            assert!(
                Instant::now() < deadline,
                "node {i} did not come up:\n{}",
                self.log(&format!("node{i}.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(super) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub(super) fn logs(&self) -> String {
        (1..=NODES)
            .map(|i| {
                format!(
                    "--- node {i}:\n{}",
                    tail(&self.log(&format!("node{i}.log")), 30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `shorthorn ARGS` from the hub, against node `via`'s API.
    pub(super) fn cli(&self, via: usize, args: &[&str]) -> Outcome {
        let mut command = self.in_ns(&self.hub, BIN, args);
        command
            .env("SHORTHORN_URL", format!("http://{}:9600", address(via)))
            .env("SHORTHORN_TOKEN", &self.token);
        run_command(command, Duration::from_secs(180))
    }

    pub(super) fn cli_ok(&self, via: usize, args: &[&str]) -> String {
        let outcome = self.cli(via, args);
        assert!(outcome.success(), "{args:?}: {outcome:?}\n{}", self.logs());
        outcome.stdout
    }

    pub(super) fn volume(&self, via: usize) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(via, &["volume", "get", VOLUME, "--json"])).unwrap()
    }

    pub(super) fn wait_for(
        &self,
        via: usize,
        what: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let volume = self.volume(via);
            if check(&volume) {
                return volume;
            }
            assert!(
                Instant::now() < deadline,
                "volume not {what} within {limit:?}: {volume:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `qemu-io` from the hub; every command must succeed.
    pub(super) fn qemu_io(&self, uri: &str, commands: &[&str]) {
        let mut args = vec!["-f", "raw", uri];
        for command in commands {
            args.extend(["-c", command]);
        }
        let outcome = run_command(
            self.in_ns(&self.hub, "qemu-io", &args),
            Duration::from_secs(120),
        );
        assert!(
            outcome.success()
                && !outcome.all().contains("failed")
                && !outcome.all().contains("Pattern verification"),
            "qemu-io {commands:?} on {uri}: {outcome:?}"
        );
    }

    /// Kills every process of node `i` (its manager, agent, replicas, engines).
    pub(super) fn kill_node(&self, i: usize) {
        kill_namespace_pids(&self.nodes[i - 1]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.namespaces.delete_all();
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The nodes of the replicas that should run, if all three are RW and the volume is
/// healthy.
fn healthy_nodes(volume: &serde_json::Value) -> Option<BTreeSet<String>> {
    if volume["status"]["robustness"] != "healthy" {
        return None;
    }
    let wanted: Vec<&serde_json::Value> = volume["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spec"]["desire_running"] == true)
        .collect();
    let all_rw = wanted
        .iter()
        .all(|r| r["status"]["mode"] == "RW" || volume["status"]["state"] == "detached");
    let nodes: BTreeSet<String> = wanted
        .iter()
        .map(|r| r["spec"]["node"].as_str().unwrap().to_string())
        .collect();
    (wanted.len() == 3 && all_rw && nodes.len() == 3).then_some(nodes)
}

/// fio's verify jobs during the eviction: in the volume's last 16 MiB, which nothing
/// else in the test writes or reads.
const FIO_JOBS: u32 = 2;
const FIO_PER_JOB: u64 = 8 << 20;
const FIO_OFFSET: u64 = 48 << 20;

fn node_number(name: &str) -> usize {
    name.trim_start_matches('n').parse().unwrap()
}

#[test]
fn volumes_spread_heal_move_and_change_owner_across_nodes() {
    let mut cluster = Cluster::start(&[]);
    cluster.cli_ok(1, &["setting", "set", "minimal_available_percentage", "0"]);
    cluster.cli_ok(
        1,
        &["setting", "set", "replica_replenishment_wait_interval", "3"],
    );
    let nodes = cluster.cli_ok(2, &["node", "ls"]);
    assert_eq!(nodes.matches("ready=true").count(), NODES, "{nodes}");
    // One leader, the same seen from every node.
    let first_leader = leader(&cluster, 2);
    for via in 1..=NODES {
        assert_eq!(leader(&cluster, via), first_leader, "seen from n{via}");
    }
    // The leader dies: the role moves to a live manager once its lease expires; the
    // node comes back as a follower.
    let dead = node_number(&first_leader);
    let via = if dead == 1 { 2 } else { 1 };
    cluster.kill_node(dead);
    let killed = Instant::now();
    let next_leader = loop {
        let now = leader(&cluster, via);
        if now != first_leader {
            break now;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "{first_leader} still leads 30 s after it died"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "leader moved from {first_leader} to {next_leader} in {:?}",
        killed.elapsed()
    );
    std::fs::remove_file(cluster.data_dir(dead).join("manager.json")).unwrap();
    cluster.start_node(dead);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster
        .cli_ok(via, &["node", "ls"])
        .matches("ready=true")
        .count()
        < NODES
    {
        assert!(Instant::now() < deadline, "n{dead} did not come back");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        leader(&cluster, dead),
        next_leader,
        "seen from the restarted n{dead}"
    );

    cluster.cli_ok(
        1,
        &[
            "volume",
            "create",
            VOLUME,
            "--size",
            "64M",
            "--replicas",
            "3",
        ],
    );
    let created = cluster.wait_for(3, "placed", Duration::from_secs(60), |v| {
        healthy_nodes(v).is_some()
    });
    let placed = healthy_nodes(&created).unwrap();
    assert_eq!(placed.len(), 3, "three different nodes: {created:#}");

    let uri = cluster
        .cli_ok(1, &["volume", "attach", VOLUME, "--node", "n1"])
        .trim()
        .to_string();
    assert!(uri.starts_with(&format!("nbd://{}:", address(1))), "{uri}");
    cluster.qemu_io(&uri, &["write -P 0x31 0 16M"]);

    // A node holding a replica (not the engine's) is evicted while fio writes and
    // verifies: its replica is rebuilt on the spare node first, and at no look does the
    // engine hold fewer than the three RW replicas the volume wants.
    let spare = (1..=NODES)
        .find(|n| !placed.contains(&format!("n{n}")))
        .unwrap();
    let evicted = placed
        .iter()
        .map(|n| node_number(n))
        .find(|&n| n != 1)
        .unwrap();
    let job = crate::common::fio_verify_job_at(
        cluster.dir.path(),
        &uri,
        FIO_JOBS,
        FIO_PER_JOB,
        FIO_OFFSET,
    );
    let fio = cluster.in_ns(
        &cluster.hub,
        "fio",
        &["--output-format=normal", path_str(&job)],
    );
    let writer = std::thread::spawn(move || run_command(fio, Duration::from_secs(300)));
    let evicted_name = format!("n{evicted}");
    cluster.cli_ok(1, &["node", "update", &evicted_name, "--evict", "true"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut looks = 0;
    let placed = loop {
        let volume = cluster.volume(1);
        let engine_rw = volume["engine"]["status"]["replicas"]
            .as_object()
            .map_or(0, |r| r.values().filter(|s| s["mode"] == "RW").count());
        assert!(
            engine_rw >= 3,
            "the engine held {engine_rw} RW replicas during the eviction: {volume:#}"
        );
        looks += 1;
        let moved = healthy_nodes(&volume).filter(|nodes| {
            nodes.contains(&format!("n{spare}"))
                && !nodes.contains(&evicted_name)
                && volume["replicas"].as_array().unwrap().len() == 3
        });
        if let Some(nodes) = moved {
            break nodes;
        }
        assert!(
            Instant::now() < deadline,
            "n{evicted} not evicted within 120 s: {volume:#}\n{}",
            tail(&cluster.logs(), 80)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("evicted n{evicted} to n{spare}, {looks} looks, never fewer than 3 RW");
    let outcome = writer.join().unwrap();
    crate::common::assert_fio_verified(
        &outcome,
        u64::from(FIO_JOBS) * FIO_PER_JOB / 4096,
        &tail(&cluster.logs(), 60),
    );
    let nodes = cluster.cli_ok(1, &["node", "ls"]);
    assert!(nodes.contains("evicting (0 replicas left)"), "{nodes}");
    cluster.cli_ok(1, &["node", "update", &evicted_name, "--evict", "false"]);
    cluster.qemu_io(&uri, &["read -P 0x31 0 16M"]);

    // A node holding a replica dies (not the engine's): degraded, then healed elsewhere.
    let victim = placed
        .iter()
        .map(|n| node_number(n))
        .find(|&n| n != 1)
        .unwrap();
    cluster.kill_node(victim);
    cluster.qemu_io(&uri, &["write -P 0x32 16M 8M"]);
    let survivor = (1..=NODES).find(|&n| n != victim).unwrap();
    let healed = cluster.wait_for(
        survivor,
        "healed on the spare node",
        Duration::from_secs(90),
        |v| healthy_nodes(v).is_some_and(|nodes| !nodes.contains(&format!("n{victim}"))),
    );
    let lost: Vec<&serde_json::Value> = healed["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spec"]["node"] == format!("n{victim}"))
        .collect();
    assert!(
        lost.iter().all(|r| r["status"]["state"] == "failed"
            && r["status"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("n{victim}"))),
        "the dead node's replica is reported failed: {healed:#}"
    );
    cluster.qemu_io(&uri, &["read -P 0x31 0 16M", "read -P 0x32 16M 8M"]);

    // Detach, attach on another live node: same data.
    let other = (2..=NODES).find(|&n| n != victim).unwrap();
    cluster.cli_ok(survivor, &["volume", "detach", VOLUME]);
    cluster.wait_for(survivor, "detached", Duration::from_secs(60), |v| {
        v["status"]["state"] == "detached"
    });
    let uri = cluster
        .cli_ok(
            survivor,
            &["volume", "attach", VOLUME, "--node", &format!("n{other}")],
        )
        .trim()
        .to_string();
    assert!(
        uri.starts_with(&format!("nbd://{}:", address(other))),
        "{uri}"
    );
    cluster.qemu_io(
        &uri,
        &[
            "read -P 0x31 0 16M",
            "read -P 0x32 16M 8M",
            "write -P 0x33 40M 1M",
        ],
    );

    // The owning manager dies: another takes the volume over within a bounded time.
    let owner = cluster.volume(survivor)["status"]["owner"]
        .as_str()
        .unwrap()
        .to_string();
    let owner = node_number(&owner);
    assert_ne!(owner, victim);
    cluster.kill_node(owner);
    let watcher = (1..=NODES).find(|&n| n != victim && n != owner).unwrap();
    let killed = Instant::now();
    let moved = cluster.wait_for(
        watcher,
        "owned by a live manager",
        Duration::from_secs(30),
        |v| {
            v["status"]["owner"]
                .as_str()
                .is_some_and(|o| node_number(o) != owner)
        },
    );
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "ownership moved after {took:?}: {moved:#}"
    );
    eprintln!("ownership moved from n{owner} in {took:?}");

    // The node the volume is attached to dies too: once it counts as down, the volume
    // detaches and attaches on the last node, with everything acknowledged.
    if other != owner {
        cluster.kill_node(other);
    }
    let last = (1..=NODES)
        .find(|n| ![victim, owner, other].contains(n))
        .unwrap();
    cluster.cli_ok(last, &["volume", "detach", VOLUME]);
    cluster.wait_for(
        last,
        "detached from the dead node",
        Duration::from_secs(60),
        |v| v["status"]["state"] == "detached",
    );
    let uri = cluster
        .cli_ok(
            last,
            &["volume", "attach", VOLUME, "--node", &format!("n{last}")],
        )
        .trim()
        .to_string();
    cluster.qemu_io(
        &uri,
        &[
            "read -P 0x31 0 16M",
            "read -P 0x32 16M 8M",
            "read -P 0x33 40M 1M",
        ],
    );
    // A live node leads (the leader, if it died, passed the role on).
    let dead = [victim, owner, other].map(|n| format!("n{n}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = leader(&cluster, last);
        if !dead.contains(&now) {
            eprintln!("leader: first {first_leader}, at the end {now}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead {now} still leads 30 s later (the first was {first_leader})\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The leader's node as `node ls` through node `via` reports it, once there is one (for
/// a few seconds after a leader died there is none).
fn leader(cluster: &Cluster, via: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = cluster.cli_ok(via, &["node", "ls"]);
        let line = listed
            .lines()
            .find_map(|l| l.strip_prefix("leader: "))
            .unwrap_or_else(|| panic!("no leader line: {listed}"));
        assert!(line.contains("etcd store"), "{line}");
        let leader = line.split_whitespace().next().unwrap().to_string();
        if leader != "none" {
            return leader;
        }
        assert!(Instant::now() < deadline, "no leader for 30 s: {line}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A node running only `shorthorn agent` gets replicas and engines from the other nodes'
/// managers, reports a replica process that dies, and starts it again when its manager
/// asks; it never owns a volume nor leads.
#[test]
fn an_agent_only_node_runs_what_the_managers_place_on_it() {
    let cluster = Cluster::start(&[NODES]);
    let agent = format!("n{NODES}");
    cluster.cli_ok(1, &["setting", "set", "minimal_available_percentage", "0"]);
    cluster.cli_ok(
        1,
        &["setting", "set", "replica_replenishment_wait_interval", "2"],
    );
    let nodes = cluster.cli_ok(1, &["node", "ls"]);
    assert_eq!(nodes.matches("ready=true").count(), NODES, "{nodes}");
    assert!(
        nodes.contains(&format!("{agent} {} ready=true", address(NODES))),
        "{nodes}"
    );
    assert_ne!(leader(&cluster, NODES), agent);
    // One node credential for the cluster (the first node's, through etcd), apart from
    // the user token and never in the connection file users are given.
    let node_token = std::fs::read_to_string(cluster.data_dir(1).join("node-token")).unwrap();
    assert_ne!(node_token.trim(), cluster.token);
    for i in 1..=NODES {
        let data = cluster.data_dir(i);
        assert_eq!(
            std::fs::read_to_string(data.join("node-token")).unwrap(),
            node_token,
            "node {i}'s node-token"
        );
        let connection = std::fs::read_to_string(data.join("manager.json")).unwrap();
        assert!(
            !connection.contains(node_token.trim()),
            "node {i}: {connection}"
        );
    }

    // A watch through node 2's API sees what the managers do through etcd (the volume
    // is created through node 1 and reconciled by whichever manager owns it).
    let mut watch = cluster.watch(2, &["--kind", "volume"], "watch.log");

    // Hard anti-affinity, and nothing new on n1: one replica on each other node, the
    // agent's included.
    cluster.cli_ok(1, &["node", "update", "n1", "--scheduling", "false"]);
    cluster.cli_ok(
        1,
        &[
            "volume",
            "create",
            VOLUME,
            "--size",
            "32M",
            "--replicas",
            "3",
        ],
    );
    let placed = cluster.wait_for(2, "placed", Duration::from_secs(60), |v| {
        healthy_nodes(v).is_some_and(|n| n.contains(&agent))
    });
    assert_ne!(placed["status"]["owner"], agent.as_str(), "{placed:#}");

    // Its engine runs on the agent's node.
    let uri = cluster
        .cli_ok(1, &["volume", "attach", VOLUME, "--node", &agent])
        .trim()
        .to_string();
    assert!(
        uri.starts_with(&format!("nbd://{}:", address(NODES))),
        "{uri}"
    );
    cluster.qemu_io(&uri, &["write -P 0x41 0 8M"]);

    // Its replica process dies: noticed, and started again by the owner's request. The
    // evidence that lasts is a new process on the same data (the "exited" message is
    // gone again within seconds once it is restarted and rebuilt).
    let volume = cluster.volume(2);
    let replica = volume["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["spec"]["node"] == agent.as_str())
        .unwrap()
        .clone();
    let data_dir = replica["spec"]["data_dir"].as_str().unwrap();
    let pids = crate::common::processes_mentioning(data_dir);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let killed = pids[0].0;
    crate::common::signal(killed, "KILL");
    let restarted = crate::common::wait_restarted(data_dir, killed, Duration::from_secs(30));
    eprintln!("replica pid {killed} killed; restarted as pid {restarted}");
    cluster.qemu_io(&uri, &["write -P 0x42 8M 4M"]);
    let healed = cluster.wait_for(2, "healthy again", Duration::from_secs(60), |v| {
        healthy_nodes(v).is_some_and(|n| n.contains(&agent))
    });
    let same = healed["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == replica["name"] && r["status"]["mode"] == "RW");
    assert!(same, "the same replica, rebuilt on its data: {healed:#}");
    assert_ne!(healed["status"]["owner"], agent.as_str());
    cluster.qemu_io(&uri, &["read -P 0x41 0 8M", "read -P 0x42 8M 4M"]);
    cluster.cli_ok(1, &["volume", "detach", VOLUME]);

    // The watch saw the volume created, attached and detached, in that order.
    let states = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["type"] == "put" && m["name"] == VOLUME)
            .map(|m| {
                m["object"]["status"]["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = states(&cluster.log("watch.log"));
        if seen.last().is_some_and(|s| s == "detached") || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = watch.kill();
    let _ = watch.wait();
    let attached = seen.iter().position(|s| s == "attached");
    let detached = seen.iter().rposition(|s| s == "detached");
    assert!(
        !seen.is_empty() && attached.is_some() && detached > attached,
        "volume states the watch saw: {seen:?}"
    );
}
