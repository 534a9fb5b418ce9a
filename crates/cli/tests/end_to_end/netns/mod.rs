//! Several hosts on one machine: every host of a test (a client, the engine, each
//! replica) runs in its own network namespace, joined by veth pairs, and nothing runs in
//! the root namespace. So every test uses the same fixed addresses, links can be cut one
//! by one, and parallel tests never meet:
//!
//! ```text
//!   client ns  10.77.0.1 ──veth── 10.77.0.2  engine ns  (control :9501, NBD :10809)
//!                                 10.77.1.1 ──veth── 10.77.1.2  replica 0 ns (:9502, :9503)
//!                                 10.77.2.1 ──veth── 10.77.2.2  replica 1 ns
//!                                 10.77.3.1 ──veth── 10.77.3.2  replica 2 ns
//! ```
//!
//! Namespaces are named `sh{pid}-{n}c`, `…e`, `…r{i}` (n counts clusters in this
//! process); veth ends are created inside the namespaces (`c0`, `r{i}` in the engine's,
//! `e0` in the others), so no name is shared with the root namespace or other tests.
//! Processes run as `ip netns exec NS PROGRAM …`, which execs the program: the child's
//! pid is the program's. Every process logs (stdout and stderr) to its own file in the
//! cluster's temporary directory; failure messages carry the tails of those logs.
//!
//! Dropping a [`Cluster`] (also while a test panics) kills every process it started and
//! anything left in its namespaces, deletes the namespaces, unmounts and detaches the
//! loop filesystems. Every wait is bounded. Needs root.
//!
//! Used next to `common` (`mod common; mod netns;`).

use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::{
    BIN, COMMAND_TIMEOUT, MIB, Outcome, parse_ls, path_str, run_command, sha256, signal,
    wait_bounded,
};

/// The engine's control API, as clients in the client namespace reach it.
pub const ENGINE: &str = "10.77.0.2:9501";
/// Where the engine's NBD frontend listens.
pub const FRONTEND: &str = "10.77.0.2:10809";
/// The volume's name (and NBD export name).
pub const VOLUME: &str = "vol";
/// The engine's request timeout towards replicas (`--request-timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The verifying writer (see its docstring for the data model and the log format).
pub const ACK_WRITER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/ack_writer.py");
/// The Python that has Debian's python3-libnbd.
pub const PYTHON: &str = "/usr/bin/python3";
/// How long a daemon may take to print its ready line.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(30);

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// Replica `i`'s data address, as the engine and `replica add` name it.
pub fn replica_addr(i: usize) -> String {
    format!("tcp://10.77.{}.2:9502", i + 1)
}

/// The volume's NBD URI.
pub fn uri() -> String {
    format!("nbd://{FRONTEND}/{VOLUME}")
}

/// Runs `command` with a time limit and never panics (for clean-up): `None` if it could
/// not start or did not finish in time (then it is killed).
fn run_quiet(mut command: Command, timeout: Duration) -> Option<std::process::Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let out = drain(child.stdout.take()?);
    let err = drain(child.stderr.take()?);
    let Some(status) = wait_bounded(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    Some(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default().into_bytes(),
        stderr: err.join().unwrap_or_default().into_bytes(),
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// `ip ARGS`, which must succeed (bounded).
pub fn ip(args: &[&str]) {
    let mut command = Command::new("ip");
    command.args(args);
    let outcome = run_command(command, COMMAND_TIMEOUT);
    assert!(outcome.success(), "ip {args:?} failed: {outcome:?}");
}

/// Whether process `pid` still exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// SIGKILLs everything in namespace `ns` (bounded wait for it to go); never panics.
pub fn kill_namespace_pids(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut command = Command::new("ip");
        command.args(["netns", "pids", ns]);
        let pids: Vec<u32> = run_quiet(command, Duration::from_secs(10))
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let pids: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            signal(pid, "KILL");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deletes namespace `ns` after killing what runs in it; never panics.
pub fn delete_namespace(ns: &str) {
    kill_namespace_pids(ns);
    let mut command = Command::new("ip");
    command.args(["netns", "delete", ns]);
    match run_quiet(command, Duration::from_secs(10)) {
        Some(o) if o.status.success() => {}
        other => eprintln!("netns: could not delete namespace {ns}: {other:?}"),
    }
}

fn namespace_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Network namespaces and the veth links between them, made for one test and deleted
/// (with whatever runs in them) on drop, also when a test fails half-way: the one way
/// the tests build hosts, for the engine/replica clusters here and the manager clusters.
#[derive(Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Adds namespace `name` with its loopback up. One left by an earlier test process
    /// with our pid (killed before its clean-up) is replaced: the names carry the pid,
    /// so nothing alive uses it.
    pub fn add(&mut self, name: &str) {
        if namespace_exists(name) {
            delete_namespace(name);
        }
        ip(&["netns", "add", name]);
        // Recorded at once, so a failure from here on still deletes it.
        self.names.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// Links namespaces `a` and `b` by a veth pair, `a_dev` in `a` with address
    /// `a_addr` and `b_dev` in `b` with `b_addr` (both `IP/PREFIX`), and sets both up.
    pub fn link(
        &self,
        (a, a_dev, a_addr): (&str, &str, &str),
        (b, b_dev, b_addr): (&str, &str, &str),
    ) {
        ip(&[
            "-n", a, "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b,
        ]);
        ip(&["-n", a, "addr", "add", a_addr, "dev", a_dev]);
        ip(&["-n", b, "addr", "add", b_addr, "dev", b_dev]);
        ip(&["-n", a, "link", "set", a_dev, "up"]);
        ip(&["-n", b, "link", "set", b_dev, "up"]);
    }

    /// Deletes every namespace (last made first), killing what runs in them.
    pub fn delete_all(&mut self) {
        for ns in self.names.drain(..).rev() {
            delete_namespace(&ns);
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.delete_all();
    }
}

/// A daemon (replica or engine) started in a namespace.
struct Proc {
    label: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A loop-mounted filesystem image.
struct LoopMount {
    mountpoint: PathBuf,
    device: String,
}

/// A client program running in the background in the client namespace; killed on drop.
pub struct Background {
    shown: String,
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    started: Instant,
}

impl Background {
    /// Whether it has exited.
    pub fn is_finished(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for it at most `timeout` (then kills it and fails the test).
    pub fn wait(&mut self, timeout: Duration) -> Outcome {
        let mut child = self.child.take().expect("waited for twice");
        let status = wait_bounded(&mut child, timeout);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let outcome = Outcome {
            code: status.and_then(|s| s.code()),
            stdout: self.stdout.take().unwrap().join().unwrap_or_default(),
            stderr: self.stderr.take().unwrap().join().unwrap_or_default(),
            elapsed: self.started.elapsed(),
        };
        assert!(
            status.is_some(),
            "{} did not finish within {timeout:?}; killed it: {outcome:?}",
            self.shown
        );
        outcome
    }

    /// Asks it to stop (SIGTERM) and waits at most `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Outcome {
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                signal(child.id(), "TERM");
            }
        }
        self.wait(timeout)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What `ack_writer.py write` reported at its end.
#[derive(Debug, Clone)]
pub struct WriterSummary {
    /// Writes started.
    pub writes: u64,
    /// Writes acknowledged.
    pub acked: u64,
    /// Bytes of acknowledged writes.
    pub bytes_acked: u64,
    /// Every write up to this sequence number was flushed (0: none).
    pub flushed_seq: u64,
    /// The error it stopped at, if any.
    pub error: Option<String>,
}

/// A running `ack_writer.py write`.
pub struct Writer {
    /// The process.
    pub process: Background,
    /// Its log of started/acknowledged writes and flushes.
    pub log: PathBuf,
}

impl Writer {
    /// Acknowledged writes so far (from its log).
    pub fn acked_so_far(&self) -> u64 {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("A "))
            .count() as u64
    }

    /// Whether it has stopped (by itself: time up or an error).
    pub fn is_finished(&mut self) -> bool {
        self.process.is_finished()
    }

    /// Waits until it has `count` more acknowledged writes than now, at most `timeout`;
    /// fails the test if it stops or stalls.
    pub fn wait_progress(&mut self, count: u64, timeout: Duration) {
        let target = self.acked_so_far() + count;
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.acked_so_far();
            if now >= target {
                return;
            }
            assert!(
                !self.process.is_finished(),
                "the writer stopped after {now} acknowledged writes, before {target}:\n{}",
                tail(&self.log, 5)
            );
            assert!(
                Instant::now() < deadline,
                "the writer made {now} acknowledged writes, not {target}, within {timeout:?}:\n{}",
                tail(&self.log, 5)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to end by itself (at most `timeout`) and returns its summary.
    pub fn wait(&mut self, timeout: Duration) -> WriterSummary {
        Self::summary(self.process.wait(timeout))
    }

    /// Stops it (SIGTERM: it finishes the request in flight) and returns its summary.
    pub fn stop(&mut self) -> WriterSummary {
        Self::summary(self.process.stop(Duration::from_secs(90)))
    }

    fn summary(outcome: Outcome) -> WriterSummary {
        assert!(outcome.success(), "the writer failed: {outcome:?}");
        let line = outcome
            .stdout
            .lines()
            .rfind(|l| l.contains("writes="))
            .unwrap_or_else(|| panic!("the writer printed no summary: {outcome:?}"));
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name}= in the writer's summary {line:?}"))
        };
        let (_, error) = line
            .split_once("error=")
            .unwrap_or_else(|| panic!("no error= in the writer's summary {line:?}"));
        WriterSummary {
            writes: field("writes"),
            acked: field("acked"),
            bytes_acked: field("bytes_acked"),
            flushed_seq: field("flushed_seq"),
            error: (error.trim() != "none").then(|| error.trim().to_owned()),
        }
    }
}

/// The final stdout line of `replica add`:
/// `rebuilt ADDR copied=BYTES checked=BYTES seconds=F`.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// The rebuilt replica.
    pub addr: String,
    /// Bytes copied to it.
    pub copied: u64,
    /// Bytes compared (checksummed) and found equal, so not copied.
    pub checked: u64,
    /// How long the rebuild took.
    pub seconds: f64,
}

impl RebuildReport {
    /// Parses the last non-empty line of `stdout`.
    pub fn parse(stdout: &str) -> Result<RebuildReport, String> {
        let line = stdout
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .ok_or("no output")?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [word, addr, copied, checked, seconds] = fields.as_slice() else {
            return Err(format!(
                "final line {line:?} is not `rebuilt ADDR copied=… checked=… seconds=…`"
            ));
        };
        let value = |field: &str, name: &str| -> Result<String, String> {
            field
                .strip_prefix(name)
                .and_then(|f| f.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| format!("final line {line:?}: no {name}="))
        };
        if *word != "rebuilt" {
            return Err(format!("final line {line:?} does not start with `rebuilt`"));
        }
        let number = |field: &str, name: &str| -> Result<u64, String> {
            value(field, name)?
                .parse()
                .map_err(|e| format!("final line {line:?}: {name}: {e}"))
        };
        Ok(RebuildReport {
            addr: (*addr).to_owned(),
            copied: number(copied, "copied")?,
            checked: number(checked, "checked")?,
            seconds: value(seconds, "seconds")?
                .parse()
                .map_err(|e| format!("final line {line:?}: seconds: {e}"))?,
        })
    }
}

/// The last `lines` lines of a file.
pub fn tail(file: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A client, an engine and `replicas` replicas, each in its own namespace; see the
/// module documentation.
pub struct Cluster {
    /// Volume size in bytes.
    pub size: u64,
    prefix: String,
    dir: TempDir,
    namespaces: Namespaces,
    replica_dirs: Vec<PathBuf>,
    replicas: Vec<Option<Proc>>,
    engine: Option<Proc>,
    /// Every log file written so far, with a label, in start order.
    logs: Vec<(String, PathBuf)>,
    mounts: Vec<LoopMount>,
}

impl Cluster {
    /// Creates the namespaces and links of a client, an engine and `replicas` replicas
    /// (at most 250), and a temporary directory with the replica directories `r0`, `r1`,
    /// …; starts no process.
    pub fn new(replicas: usize, size: u64) -> Cluster {
        assert!((1..=250).contains(&replicas), "1 to 250 replicas");
        crate::common::require("ip", "iproute2");
        let mut command = Command::new(PYTHON);
        command.args(["-c", "import nbd"]);
        let python = run_command(command, COMMAND_TIMEOUT);
        assert!(
            python.success(),
            "{PYTHON} cannot import nbd, which {ACK_WRITER} needs; install python3-libnbd: \
             {python:?}"
        );
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sh{}-{n}", std::process::id());
        let dir = tempfile::Builder::new().prefix("shnet").tempdir().unwrap();
        let replica_dirs = (0..replicas)
            .map(|i| dir.path().join(format!("r{i}")))
            .collect();
        let mut cluster = Cluster {
            size,
            prefix,
            dir,
            namespaces: Namespaces::default(),
            replica_dirs,
            replicas: (0..replicas).map(|_| None).collect(),
            engine: None,
            logs: Vec::new(),
            mounts: Vec::new(),
        };
        let client = cluster.client_ns();
        let engine = cluster.engine_ns();
        cluster.namespaces.add(&client);
        cluster.namespaces.add(&engine);
        cluster.namespaces.link(
            (&engine, "c0", "10.77.0.2/24"),
            (&client, "e0", "10.77.0.1/24"),
        );
        for i in 0..replicas {
            let ns = cluster.replica_ns(i);
            cluster.namespaces.add(&ns);
            cluster.namespaces.link(
                (&engine, &format!("r{i}"), &format!("10.77.{}.1/24", i + 1)),
                (&ns, "e0", &format!("10.77.{}.2/24", i + 1)),
            );
        }
        cluster
    }

    /// The client's namespace.
    pub fn client_ns(&self) -> String {
        format!("{}c", self.prefix)
    }

    /// The engine's namespace.
    pub fn engine_ns(&self) -> String {
        format!("{}e", self.prefix)
    }

    /// Replica `i`'s namespace.
    pub fn replica_ns(&self, i: usize) -> String {
        format!("{}r{i}", self.prefix)
    }

    /// The cluster's temporary directory (logs, writer logs, exports).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replica `i`'s directory.
    pub fn replica_dir(&self, i: usize) -> PathBuf {
        self.replica_dirs[i].clone()
    }

    /// The number of replicas.
    pub fn replica_count(&self) -> usize {
        self.replica_dirs.len()
    }

    /// Creates a `mib` MiB ext4 filesystem in a file, loop-mounts it and makes (a
    /// directory in) it replica `i`'s directory; returns that directory. Unmounted and
    /// detached on drop.
    pub fn small_fs(&mut self, i: usize, mib: u64) -> PathBuf {
        assert!(self.replicas[i].is_none(), "replica {i} runs");
        crate::common::require("mkfs.ext4", "e2fsprogs");
        crate::common::require("losetup", "mount");
        let image = self.dir().join(format!("r{i}fs.img"));
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(mib << 20).unwrap();
        drop(file);
        let run_ok = |program: &str, args: &[&str]| -> String {
            let mut command = Command::new(program);
            command.args(args);
            let outcome = run_command(command, COMMAND_TIMEOUT);
            assert!(outcome.success(), "{program} {args:?} failed: {outcome:?}");
            outcome.stdout
        };
        run_ok("mkfs.ext4", &["-q", "-F", path_str(&image)]);
        let device = run_ok("losetup", &["--find", "--show", path_str(&image)])
            .trim()
            .to_owned();
        assert!(device.starts_with("/dev/loop"), "losetup said {device:?}");
        let mountpoint = self.dir().join(format!("r{i}fs"));
        std::fs::create_dir_all(&mountpoint).unwrap();
        // Recorded before mounting: drop detaches the device even if mount fails.
        self.mounts.push(LoopMount {
            mountpoint: mountpoint.clone(),
            device: device.clone(),
        });
        run_ok("mount", &[&device, path_str(&mountpoint)]);
        let dir = mountpoint.join("replica");
        std::fs::create_dir_all(&dir).unwrap();
        self.replica_dirs[i] = dir.clone();
        dir
    }

    /// Starts a daemon in `ns`: `shorthorn ARGS`, output in a fresh log file; waits for a
    /// stdout line starting with `ready`. On failure returns the reason (and the process
    /// is gone).
    fn start_daemon(
        &mut self,
        label: &str,
        ns: &str,
        args: &[String],
        ready: &str,
    ) -> Result<Proc, String> {
        let starts = self.logs.iter().filter(|(l, _)| l == label).count();
        let log = self.dir().join(format!("{label}.{}.log", starts + 1));
        self.logs.push((label.to_owned(), log.clone()));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, BIN])
            .args(args)
            .env_remove("SHORTHORN_CRASH_AT")
            .env_remove("SHORTHORN_ENGINE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let mut proc = Proc {
            label: label.to_owned(),
            child,
            log,
        };
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&proc.log).unwrap_or_default();
            if text.lines().any(|l| l.starts_with(ready)) {
                break;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!(
                    "{label} (shorthorn {args:?}) exited with {status} before it was ready:\n{}",
                    tail(&proc.log, 40)
                ));
            }
            if Instant::now() >= deadline {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
                return Err(format!(
                    "{label} (shorthorn {args:?}) was not ready within \
                     {DAEMON_READY_TIMEOUT:?}; killed it:\n{}",
                    tail(&proc.log, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        // `ip netns exec` execs the program, so killing the child kills the daemon.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", proc.pid())).unwrap_or_default();
        assert!(
            cmdline.starts_with(BIN.as_bytes()),
            "pid {} is not the daemon but {:?}",
            proc.pid(),
            String::from_utf8_lossy(&cmdline)
        );
        Ok(proc)
    }

    /// Starts replica `i` on its directory; waits for `replica ready`.
    pub fn start_replica(&mut self, i: usize) {
        let dir = self.replica_dir(i);
        self.start_replica_in(i, &dir);
    }

    /// Starts replica `i` serving `dir` (which becomes its directory).
    pub fn start_replica_in(&mut self, i: usize, dir: &Path) {
        assert!(self.replicas[i].is_none(), "replica {i} already runs");
        self.replica_dirs[i] = dir.to_owned();
        let args: Vec<String> = [
            "replica",
            path_str(dir),
            "--size",
            &self.size.to_string(),
            "--volume",
            VOLUME,
            "--listen",
            &format!("10.77.{}.2:9502", i + 1),
            "--no-unix-socket",
        ]
        .map(str::to_owned)
        .into();
        let ns = self.replica_ns(i);
        match self.start_daemon(&format!("r{i}"), &ns, &args, "replica ready") {
            Ok(proc) => self.replicas[i] = Some(proc),
            Err(why) => panic!("replica {i} did not start: {why}\n{}", self.context()),
        }
    }

    /// Starts every replica.
    pub fn start_replicas(&mut self) {
        for i in 0..self.replica_count() {
            self.start_replica(i);
        }
    }

    /// Whether replica `i`'s process runs.
    pub fn replica_running(&mut self, i: usize) -> bool {
        self.replicas[i]
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// `kill -9` replica `i` and waits until it is gone.
    pub fn kill_replica(&mut self, i: usize) {
        let mut proc = self.replicas[i].take().expect("replica not running");
        kill_proc(&mut proc);
    }

    /// Stops replica `i` (SIGTERM); returns how it exited. Fails the test if it did not
    /// exit within [`DAEMON_STOP_TIMEOUT`] (it is killed then).
    pub fn stop_replica(&mut self, i: usize) -> ExitStatus {
        let mut proc = self.replicas[i].take().expect("replica not running");
        let status = stop_proc(&mut proc);
        status.unwrap_or_else(|| {
            panic!(
                "replica {i} did not stop within {DAEMON_STOP_TIMEOUT:?} of SIGTERM; killed it\n{}",
                self.context()
            )
        })
    }

    fn engine_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "engine",
            VOLUME,
            "--size",
            &self.size.to_string(),
            "--listen",
            ENGINE,
        ]
        .map(str::to_owned)
        .into();
        for i in 0..self.replica_count() {
            args.push("--replica".into());
            args.push(replica_addr(i));
        }
        args.extend(
            [
                "--frontend",
                "nbd",
                "--frontend-listen",
                FRONTEND,
                "--request-timeout",
            ]
            .map(str::to_owned),
        );
        args.push(format!("{}ms", REQUEST_TIMEOUT.as_millis()));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    }

    /// Starts the engine with every replica, the NBD frontend and a 2 s request
    /// timeout, plus `extra` arguments; `Err` with its log if it exits or is not
    /// ready (`engine ready: …`) in time.
    pub fn try_start_engine(&mut self, extra: &[&str]) -> Result<(), String> {
        assert!(self.engine.is_none(), "the engine already runs");
        let args = self.engine_args(extra);
        let ns = self.engine_ns();
        let proc = self.start_daemon("engine", &ns, &args, "engine ready")?;
        self.engine = Some(proc);
        Ok(())
    }

    /// [`Cluster::try_start_engine`], which must succeed.
    pub fn start_engine(&mut self, extra: &[&str]) {
        if let Err(why) = self.try_start_engine(extra) {
            panic!("the engine did not start: {why}\n{}", self.context());
        }
    }

    /// `kill -9` the engine and waits until it is gone.
    pub fn kill_engine(&mut self) {
        let mut proc = self.engine.take().expect("engine not running");
        kill_proc(&mut proc);
    }

    /// Stops the engine (SIGTERM), which must exit with status 0 in time.
    pub fn stop_engine(&mut self) {
        let mut proc = self.engine.take().expect("engine not running");
        let status = stop_proc(&mut proc);
        assert!(
            status.is_some_and(|s| s.success()),
            "the engine did not stop cleanly after SIGTERM ({status:?})\n{}",
            self.context()
        );
    }

    /// Stops the engine (if it runs) and every running replica, each with SIGTERM; the
    /// engine must exit 0, every replica in time. Returns each replica's exit status
    /// (None: was not running).
    pub fn stop_all(&mut self) -> Vec<Option<ExitStatus>> {
        if self.engine.is_some() {
            self.stop_engine();
        }
        (0..self.replica_count())
            .map(|i| self.replicas[i].is_some().then(|| self.stop_replica(i)))
            .collect()
    }

    /// Cuts the link between the engine and replica `i` (engine side down).
    pub fn link_down(&self, i: usize) {
        ip(&[
            "-n",
            &self.engine_ns(),
            "link",
            "set",
            &format!("r{i}"),
            "down",
        ]);
    }

    /// Restores the link between the engine and replica `i`.
    pub fn link_up(&self, i: usize) {
        ip(&[
            "-n",
            &self.engine_ns(),
            "link",
            "set",
            &format!("r{i}"),
            "up",
        ]);
    }

    fn client_command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.client_ns(), program])
            .args(args)
            .env_remove("SHORTHORN_CRASH_AT")
            .env_remove("SHORTHORN_ENGINE")
            .env_remove("RUST_LOG");
        command
    }

    /// Runs `program ARGS` in the client namespace; fails the test after `timeout`.
    pub fn client(&self, program: &str, args: &[&str], timeout: Duration) -> Outcome {
        run_command(self.client_command(program, args), timeout)
    }

    /// Starts `program ARGS` in the client namespace, in the background.
    pub fn client_background(&self, program: &str, args: &[&str]) -> Background {
        let mut command = self.client_command(program, args);
        let shown = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        Background {
            shown,
            stdout: Some(drain(child.stdout.take().unwrap())),
            stderr: Some(drain(child.stderr.take().unwrap())),
            child: Some(child),
            started: Instant::now(),
        }
    }

    /// `shorthorn --engine 10.77.0.2:9501 ARGS` from the client namespace, bounded by
    /// `timeout`; it must not panic.
    pub fn shorthorn_timeout(&self, args: &[&str], timeout: Duration) -> Outcome {
        let mut all = vec!["--engine", ENGINE];
        all.extend_from_slice(args);
        let outcome = self.client(BIN, &all, timeout);
        assert!(
            !outcome.stderr.contains("panicked"),
            "shorthorn {all:?} panicked: {outcome:?}"
        );
        outcome
    }

    /// [`Cluster::shorthorn_timeout`] with [`COMMAND_TIMEOUT`].
    pub fn shorthorn(&self, args: &[&str]) -> Outcome {
        self.shorthorn_timeout(args, COMMAND_TIMEOUT)
    }

    /// `shorthorn ls` through the engine, which must succeed.
    pub fn ls_text(&self) -> String {
        let outcome = self.shorthorn(&["ls"]);
        assert!(
            outcome.success(),
            "shorthorn ls failed: {outcome:?}\n{}",
            self.context()
        );
        outcome.stdout
    }

    /// Replica `i`'s row in `ls`: (mode, error).
    pub fn mode(&self, i: usize) -> (String, Option<String>) {
        let ls = self.ls_text();
        let addr = replica_addr(i);
        parse_ls(&ls)
            .into_iter()
            .find(|r| r.0 == addr)
            .map(|r| (r.1, r.2))
            .unwrap_or_else(|| panic!("ls does not list {addr}:\n{ls}"))
    }

    /// Waits until `ls` shows replica `i` in `mode`; returns how long that took. Fails
    /// the test (with `ls` and the logs) after `timeout`.
    pub fn wait_mode(&self, i: usize, mode: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let addr = replica_addr(i);
        loop {
            let ls = self.ls_text();
            if parse_ls(&ls).iter().any(|r| r.0 == addr && r.1 == mode) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "replica {i} ({addr}) is not {mode} after {timeout:?}:\n{ls}\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that `ls` lists exactly the replicas `indexes`, each RW without error.
    pub fn assert_all_rw(&self, indexes: &[usize]) {
        let ls = self.ls_text();
        let rows = parse_ls(&ls);
        assert_eq!(
            rows.len(),
            indexes.len(),
            "ls should list {} replicas:\n{ls}\n{}",
            indexes.len(),
            self.context()
        );
        for &i in indexes {
            let addr = replica_addr(i);
            assert!(
                rows.iter()
                    .any(|r| r.0 == addr && r.1 == "RW" && r.2.is_none()),
                "replica {i} ({addr}) should be RW without error:\n{ls}\n{}",
                self.context()
            );
        }
    }

    /// Asserts that no replica is RW (the volume has no replica to serve from).
    pub fn assert_none_rw(&self) {
        let ls = self.ls_text();
        assert!(
            parse_ls(&ls).iter().all(|r| r.1 != "RW"),
            "no replica should be RW:\n{ls}\n{}",
            self.context()
        );
    }

    /// Waits until `ls` shows exactly the replicas `indexes`, each RW without error;
    /// returns how long that took. Fails the test after `timeout`.
    pub fn wait_all_rw(&self, indexes: &[usize], timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let ls = self.ls_text();
            let rows = parse_ls(&ls);
            if rows.len() == indexes.len()
                && indexes.iter().all(|&i| {
                    rows.iter()
                        .any(|r| r.0 == replica_addr(i) && r.1 == "RW" && r.2.is_none())
                })
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "replicas {indexes:?} are not all RW after {timeout:?}:\n{ls}\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `shorthorn replica add tcp://…replica i…` (waits for the rebuild, at most
    /// `timeout`); it must exit 0 and end its stdout with
    /// `rebuilt ADDR copied=BYTES checked=BYTES seconds=F`.
    pub fn replica_add(&self, i: usize, timeout: Duration) -> RebuildReport {
        self.replica_add_with(i, &[], timeout)
    }

    /// [`Cluster::replica_add`] with more arguments (e.g. `--bandwidth 50M`).
    pub fn replica_add_with(&self, i: usize, extra: &[&str], timeout: Duration) -> RebuildReport {
        let addr = replica_addr(i);
        let mut args = vec!["replica", "add", addr.as_str()];
        args.extend_from_slice(extra);
        let outcome = self.shorthorn_timeout(&args, timeout);
        assert!(
            outcome.success(),
            "shorthorn replica add {addr} failed: {outcome:?}\n{}",
            self.context()
        );
        let report = RebuildReport::parse(&outcome.stdout)
            .unwrap_or_else(|why| panic!("shorthorn replica add {addr}: {why}: {outcome:?}"));
        assert_eq!(
            report.addr, addr,
            "replica add reported another replica: {outcome:?}"
        );
        report
    }

    /// Starts `ack_writer.py write --uri URI --log DIR/NAME.log ARGS` in the client
    /// namespace.
    pub fn start_writer(&self, name: &str, args: &[&str]) -> Writer {
        let log = self.dir().join(format!("{name}.log"));
        let mut all = vec![ACK_WRITER, "write", "--uri"];
        let uri = uri();
        all.push(&uri);
        all.push("--log");
        all.push(path_str(&log));
        all.extend_from_slice(args);
        Writer {
            process: self.client_background(PYTHON, &all),
            log,
        }
    }

    /// Runs `ack_writer.py write` to its end (bounded by `timeout`).
    pub fn run_writer(&self, name: &str, args: &[&str], timeout: Duration) -> WriterSummary {
        self.start_writer(name, args).wait(timeout)
    }

    /// `ack_writer.py verify --mode MODE` of a writer's log through the volume. It also
    /// records what it found (in `LOG.seen`), and a later verify of the same log requires
    /// the same content: call it only once nothing writes to that log's blocks any more.
    pub fn verify(&self, writer_log: &Path, mode: &str) -> Outcome {
        let uri = uri();
        let seen = writer_log.with_extension("seen");
        self.client(
            PYTHON,
            &[
                ACK_WRITER,
                "verify",
                "--uri",
                &uri,
                "--log",
                path_str(writer_log),
                "--mode",
                mode,
                "--seen",
                path_str(&seen),
            ],
            Duration::from_secs(180),
        )
    }

    /// [`Cluster::verify`], which must find every block as expected.
    /// A healthy three-replica volume of `size` bytes with a writer (unaligned writes,
    /// a flush every 16) that has made progress, and fio keeping 32 writes in flight
    /// elsewhere (at 64–96 MiB), so that replicas are likely to differ when a process
    /// dies.
    pub fn with_flushing_writer(size: u64) -> (Cluster, Writer, Background) {
        let mut cluster = Cluster::new(3, size);
        cluster.start_replicas();
        cluster.start_engine(&[]);
        cluster.assert_all_rw(&[0, 1, 2]);
        let mut writer = cluster.start_writer(
            "writer",
            &[
                "--blocks",
                "8192",
                "--seconds",
                "120",
                "--unaligned",
                "--flush-every",
                "16",
                "--request-timeout",
                "30",
            ],
        );
        let load = cluster.start_fio_load(64 * MIB, 32 * MIB, 120);
        writer.wait_progress(600, Duration::from_secs(60));
        (cluster, writer, load)
    }

    /// After a recovery (`what`): the volume takes writes again in blocks the earlier
    /// writer never touched (so `earlier_log` stays checkable), both logs verify, every
    /// replica is RW, stops cleanly, and all hold identical content.
    pub fn write_again_then_check(&mut self, earlier_log: &Path, what: &str) {
        let after = self.run_writer(
            "after",
            &[
                "--start-block",
                "25600",
                "--blocks",
                "1024",
                "--seconds",
                "3",
                "--unaligned",
                "--flush-every",
                "16",
            ],
            Duration::from_secs(60),
        );
        assert!(
            after.error.is_none() && after.acked > 0,
            "writing after {what} failed: {after:?}\n{}",
            self.context()
        );
        self.assert_verified(&self.dir().join("after.log"), "acked");
        self.assert_verified(earlier_log, "flushed");
        self.assert_all_rw(&[0, 1, 2]);
        let statuses = self.stop_all();
        assert!(
            statuses.iter().all(|s| s.is_some_and(|s| s.success())),
            "every replica should stop cleanly: {statuses:?}\n{}",
            self.context()
        );
        self.assert_replicas_identical(&[0, 1, 2]);
    }

    pub fn assert_verified(&self, writer_log: &Path, mode: &str) {
        let outcome = self.verify(writer_log, mode);
        assert!(
            outcome.success(),
            "verification ({mode}) of {} failed:\n{}{}\n{}",
            writer_log.display(),
            outcome.stdout,
            outcome.stderr,
            self.context()
        );
        eprintln!("{}", outcome.stdout.trim());
    }

    /// Reads `[offset, offset+len)` through the volume three times (1 MiB reads, spread
    /// over the replicas by the engine); every pass must return the same bytes.
    pub fn assert_stable_reads(&self, offset: u64, len: u64) {
        let uri = uri();
        let outcome = self.client(
            PYTHON,
            &[
                ACK_WRITER,
                "stable",
                "--uri",
                &uri,
                "--offset",
                &offset.to_string(),
                "--length",
                &len.to_string(),
            ],
            Duration::from_secs(180),
        );
        assert!(
            outcome.success(),
            "reads of [{offset}, +{len}) are not stable:\n{}{}\n{}",
            outcome.stdout,
            outcome.stderr,
            self.context()
        );
        eprintln!("{}", outcome.stdout.trim());
    }

    /// Starts fio in the client namespace: random 4 KiB writes, 32 in flight, over
    /// `[offset, offset+len)` of the volume for at most `seconds` (no verification: for
    /// load while something breaks).
    pub fn start_fio_load(&self, offset: u64, len: u64, seconds: u64) -> Background {
        let fio = crate::common::require("fio", "fio");
        let uri = uri();
        let args = [
            "--name=load".to_owned(),
            "--ioengine=nbd".to_owned(),
            format!("--uri={uri}"),
            "--filename=unused".to_owned(),
            "--rw=randwrite".to_owned(),
            "--bs=4k".to_owned(),
            "--iodepth=32".to_owned(),
            format!("--offset={offset}"),
            format!("--size={len}"),
            "--time_based=1".to_owned(),
            format!("--runtime={seconds}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.client_background(path_str(&fio), &args)
    }

    /// One read of `len` bytes at `offset` through the volume; `Ok` if it succeeded.
    pub fn read(&self, offset: u64, len: u64) -> Result<String, String> {
        let uri = uri();
        let outcome = self.client(
            PYTHON,
            &[
                ACK_WRITER,
                "read",
                "--uri",
                &uri,
                "--offset",
                &offset.to_string(),
                "--length",
                &len.to_string(),
            ],
            Duration::from_secs(60),
        );
        match outcome.code {
            Some(0) => Ok(outcome.stdout),
            Some(1) => Err(outcome.stdout),
            _ => panic!("the reader failed: {outcome:?}"),
        }
    }

    /// Exports replica `i` (which must not run) with `shorthorn store export`; returns
    /// the sha256 of its content.
    pub fn export_hash(&self, i: usize) -> String {
        assert!(
            self.replicas[i].is_none(),
            "stop replica {i} before exporting"
        );
        let image = self.dir().join(format!("export-r{i}.raw"));
        let mut command = Command::new(BIN);
        command
            .args(["store", "export"])
            .arg(self.replica_dir(i))
            .arg(&image)
            .env_remove("SHORTHORN_CRASH_AT")
            .env_remove("RUST_LOG");
        let outcome = run_command(command, Duration::from_secs(120));
        assert!(
            outcome.success(),
            "exporting replica {i} failed: {outcome:?}"
        );
        let len = std::fs::metadata(&image).unwrap().len();
        assert_eq!(
            len, self.size,
            "the export of replica {i} has the wrong size"
        );
        let hash = sha256(&image);
        std::fs::remove_file(&image).unwrap();
        hash
    }

    /// Exports the (stopped) replicas `indexes` and asserts their content is identical;
    /// returns the common sha256.
    pub fn assert_replicas_identical(&self, indexes: &[usize]) -> String {
        let hashes: Vec<(usize, String)> = std::thread::scope(|s| {
            let jobs: Vec<_> = indexes
                .iter()
                .map(|&i| s.spawn(move || (i, self.export_hash(i))))
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let first = hashes[0].1.clone();
        assert!(
            hashes.iter().all(|(_, h)| *h == first),
            "replicas differ (replica, sha256 of its exported content): {hashes:?}\n{}",
            self.context()
        );
        first
    }

    /// The last lines of every log, for failure messages.
    pub fn context(&self) -> String {
        let mut out = String::new();
        for (label, log) in &self.logs {
            out.push_str(&format!(
                "--- {label}: {} (last 25 lines)\n{}\n",
                log.display(),
                tail(log, 25)
            ));
        }
        out
    }
}

/// SIGKILL, then waits (bounded) until it is gone.
fn kill_proc(proc: &mut Proc) {
    let _ = proc.child.kill();
    if wait_bounded(&mut proc.child, Duration::from_secs(10)).is_none() {
        panic!(
            "{} (pid {}) did not die after SIGKILL",
            proc.label,
            proc.pid()
        );
    }
}

/// SIGTERM, then at most [`DAEMON_STOP_TIMEOUT`]; then SIGKILL. The exit status if it
/// exited by itself.
fn stop_proc(proc: &mut Proc) -> Option<ExitStatus> {
    if let Ok(Some(status)) = proc.child.try_wait() {
        return Some(status);
    }
    signal(proc.pid(), "TERM");
    let status = wait_bounded(&mut proc.child, DAEMON_STOP_TIMEOUT);
    if status.is_none() {
        let _ = proc.child.kill();
        let _ = proc.child.wait();
    }
    status
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in self.replicas.iter_mut().chain([&mut self.engine]).flatten() {
            let _ = proc.child.kill();
            let _ = wait_bounded(&mut proc.child, Duration::from_secs(10));
        }
        self.namespaces.delete_all();
        for mount in self.mounts.iter().rev() {
            let mut command = Command::new("umount");
            command.arg(&mount.mountpoint);
            let unmounted =
                run_quiet(command, Duration::from_secs(30)).is_some_and(|o| o.status.success());
            if !unmounted && is_mounted(&mount.mountpoint) {
                eprintln!(
                    "netns: {} busy; detaching it lazily",
                    mount.mountpoint.display()
                );
                let mut command = Command::new("umount");
                command.arg("-l").arg(&mount.mountpoint);
                let _ = run_quiet(command, Duration::from_secs(30));
            }
            let mut command = Command::new("losetup");
            command.args(["-d", &mount.device]);
            let _ = run_quiet(command, Duration::from_secs(30));
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target.as_str()))
}
