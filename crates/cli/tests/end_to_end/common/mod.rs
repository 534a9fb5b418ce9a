//! Shared by the end-to-end volume tests: a `shorthorn launch-simple` volume on free
//! ports in a temporary data directory (stopped, and every process it started killed, on
//! drop), a runner for real client programs with a hard timeout, and the check that every
//! replica of a stopped volume holds the same content.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_shorthorn");
/// How long `launch-simple` may take to print its `ready at` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `launch-simple` may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// Default time limit of one client program.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit of one short `shorthorn` command (`ls`, `info`, `store export`, misuse).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at starting a volume (another process may take a port we picked).
const START_ATTEMPTS: usize = 4;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// Finds `program` on `PATH`; fails the test with an install hint if it is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed; this end-to-end test drives the real program. \
         Install it with `apt-get install -y {package}` (scripts/setup.sh installs every \
         client the tests need)."
    );
}

/// What a program did.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output followed by standard error.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Collects what a child prints, line by line as it comes, into a shared string.
pub fn collect_lines(pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let collected = Arc::new(Mutex::new(String::new()));
    let sink = collected.clone();
    let thread = std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    (collected, thread)
}

/// Runs `command` (stdin closed, output captured); kills it and fails the test after
/// `timeout`.
pub fn run_command(mut command: Command, timeout: Duration) -> Outcome {
    let shown = format!("{command:?}");
    let start = Instant::now();
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait_bounded(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let outcome = Outcome {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    };
    assert!(
        status.is_some(),
        "{shown} did not finish within {timeout:?}; killed it.\nstdout:\n{}\nstderr:\n{}",
        outcome.stdout,
        outcome.stderr
    );
    outcome
}

/// Runs `program ARGS` with a time limit.
pub fn run(program: impl AsRef<Path>, args: &[&str], timeout: Duration) -> Outcome {
    let mut command = Command::new(program.as_ref());
    command.args(args);
    run_command(command, timeout)
}

/// Runs `program ARGS` and fails the test unless it exits with status 0; returns stdout.
pub fn run_ok(program: impl AsRef<Path>, args: &[&str]) -> String {
    let program = program.as_ref();
    let outcome = run(program, args, CLIENT_TIMEOUT);
    assert!(
        outcome.success(),
        "{} {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        program.display(),
        outcome.code,
        outcome.stdout,
        outcome.stderr
    );
    outcome.stdout
}

/// Runs `shorthorn ARGS` (bounded); it must never panic, whatever it is given.
pub fn shorthorn(args: &[&str]) -> Outcome {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("SHORTHORN_CRASH_AT")
        .env_remove("SHORTHORN_ENGINE")
        .env_remove("RUST_LOG");
    let outcome = run_command(command, COMMAND_TIMEOUT);
    assert!(
        !outcome.stderr.contains("panicked"),
        "shorthorn {args:?} panicked: {outcome:?}"
    );
    outcome
}

/// Runs `shorthorn ARGS`, which must succeed; returns stdout.
pub fn shorthorn_ok(args: &[&str]) -> String {
    let outcome = shorthorn(args);
    assert!(outcome.success(), "shorthorn {args:?} failed: {outcome:?}");
    outcome.stdout
}

/// Runs `qemu-io -f raw URI -c CMD...` and checks that it exited with 0, that every
/// command succeeded and that every pattern verified. Returns the output.
pub fn qemu_io(uri: &str, commands: &[&str]) -> String {
    let qemu_io = require("qemu-io", "qemu-utils");
    let mut args = vec!["-f", "raw", uri];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    let outcome = run(&qemu_io, &args, CLIENT_TIMEOUT);
    let all = outcome.all();
    assert!(
        outcome.success(),
        "qemu-io failed ({:?}):\n{all}",
        outcome.code
    );
    assert!(
        !all.contains("Pattern verification failed"),
        "qemu-io pattern verification failed:\n{all}"
    );
    assert!(!all.contains("failed:"), "a qemu-io command failed:\n{all}");
    all
}

/// `sha256sum FILE`, as lowercase hex.
/// The last `lines` lines of `text`.
pub fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The replicas a volume (as `volume get --json` or `GET /v1/volumes/NAME` shows it)
/// wants: `desire_running`, not retiring or given up on.
pub fn wanted_replicas(volume: &serde_json::Value) -> Vec<serde_json::Value> {
    volume["replicas"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|r| r["spec"]["desire_running"] == true)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

pub fn sha256(file: &Path) -> String {
    let out = run_ok(require("sha256sum", "coreutils"), &[path_str(file)]);
    let hash = out.split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(hash.len(), 64, "unexpected sha256sum output: {out}");
    hash
}

/// A path as `&str` (test paths are always UTF-8).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A random number (std's hasher keys are random per process and per call).
pub fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Deterministic random-looking bytes (xorshift), for images and patterns.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `signal` (e.g. "TERM", "KILL") to one process, by pid.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` at most `timeout`; `None` if it is still running.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, up to `timeout` for it to exit, then SIGKILL. Returns the exit status if it
/// exited by itself.
pub fn terminate(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child.id(), "TERM");
    let status = wait_bounded(child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// Every process but this one: pid, and its `/proc/PID` directory.
fn other_processes() -> Vec<(u32, std::path::PathBuf)> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            (pid != me).then(|| (pid, entry.path()))
        })
        .collect()
}

/// The command line of `pid` (empty if it is gone or a zombie).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The command line of every process whose arguments include `needle` (not this one).
pub fn processes_mentioning(needle: &str) -> Vec<(u32, Vec<String>)> {
    other_processes()
        .into_iter()
        .map(|(pid, _)| (pid, cmdline(pid)))
        .filter(|(_, args)| args.iter().any(|a| a.contains(needle)))
        .collect()
}

/// The children of `parent`: pid and command line.
pub fn children_of(parent: u32) -> Vec<(u32, Vec<String>)> {
    other_processes()
        .into_iter()
        .filter(|(_, dir)| {
            let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
                return false;
            };
            // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent)
        })
        .map(|(pid, _)| (pid, cmdline(pid)))
        .collect()
}

/// Waits until a process other than `killed` mentions `needle` (a replica directory):
/// the durable evidence that a killed process was noticed and started again (its
/// transient states can pass faster than any poll). Returns the new pid.
pub fn wait_restarted(needle: &str, killed: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        let others: Vec<u32> = processes_mentioning(needle)
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|&pid| pid != killed)
            .collect();
        if let [pid] = others[..] {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "pid {killed} ({needle}) was not started again within {timeout:?}: {others:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills (SIGKILL, by pid) every process whose arguments mention `needle`, a path unique
/// to one test, and waits a little for them to go.
pub fn kill_processes_mentioning(needle: &str) {
    let pids: Vec<u32> = processes_mentioning(needle)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    for pid in &pids {
        signal(*pid, "KILL");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}/cmdline")).exists())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ports for one volume: 127.0.0.1 only.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// NBD frontend.
    pub nbd: u16,
    /// Engine control API.
    pub engine: u16,
    /// First replica's data port; replica i uses base+2(i-1) and the port after it.
    pub replica_base: u16,
}

/// Finds `count` consecutive ports, all free right now, below the kernel's ephemeral
/// range (32768+), so outgoing connections of parallel tests never take them. Parallel
/// tests pick at random; a clash shows as a failed start, which [`Volume::start`] retries.
pub fn free_port_range(count: u16) -> u16 {
    for _ in 0..1000 {
        let base = 20_000 + (random_u64() % 12_000) as u16;
        let held: Vec<TcpListener> = (0..count)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!("found no {count} free consecutive ports on 127.0.0.1");
}

impl Ports {
    /// Fresh ports for a volume of `replicas` replicas: one range, so they never clash
    /// with each other.
    pub fn pick(replicas: u16) -> Ports {
        let base = free_port_range(2 + 2 * replicas);
        Ports {
            nbd: base,
            engine: base + 1,
            replica_base: base + 2,
        }
    }
}

/// A volume served by `shorthorn launch-simple`, in its own temporary directory, on its
/// own ports. Dropping it stops it (SIGTERM, then SIGKILL) and kills anything it left.
pub struct Volume {
    /// Volume (and NBD export) name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Number of replicas.
    pub replicas: u16,
    /// Ports in use.
    pub ports: Ports,
    dir: TempDir,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stdout_thread: Option<JoinHandle<()>>,
}

impl Volume {
    /// Starts `launch-simple NAME SIZE --replicas N` and waits (at most
    /// [`READY_TIMEOUT`]) for it to print `ready at nbd://…`.
    pub fn start(name: &str, size: u64, replicas: u16) -> Volume {
        Volume::start_in(&std::env::temp_dir(), name, size, replicas, &|_| Vec::new())
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let want = format!("ready at {}", self.uri());
        loop {
            if self.stdout().contains(&want) {
                return Ok(());
            }
            let child = self.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited with {status} before it was ready; stdout:\n{}",
                    self.stdout()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {READY_TIMEOUT:?}; stdout:\n{}",
                    self.stdout()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// What launch-simple printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything launch-simple and its daemons logged (their shared stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of [`Volume::log`], for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `nbd://127.0.0.1:PORT/NAME`.
    pub fn uri(&self) -> String {
        format!("nbd://127.0.0.1:{}/{}", self.ports.nbd, self.name)
    }

    /// The NBD frontend's address.
    pub fn nbd_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.nbd))
    }

    /// The engine's control address, for `shorthorn --engine`.
    pub fn engine_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.engine)
    }

    /// Replica `index`'s (1-based) data port.
    pub fn replica_port(&self, index: u16) -> u16 {
        assert!((1..=self.replicas).contains(&index), "no replica {index}");
        self.ports.replica_base + 2 * (index - 1)
    }

    /// Replica `index`'s (1-based) data address as the engine names it.
    pub fn replica_addr(&self, index: u16) -> String {
        format!("tcp://127.0.0.1:{}", self.replica_port(index))
    }

    /// Replica `index`'s (1-based) directory.
    pub fn replica_dir(&self, index: u16) -> PathBuf {
        self.data_dir
            .join(&self.name)
            .join(format!("replica-{index}"))
    }

    /// A scratch directory that lives as long as the volume (outside the data dir).
    pub fn scratch(&self) -> PathBuf {
        let dir = self.dir.path().join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The pid of replica `index`'s process (`shorthorn replica DIR …`), if it runs.
    pub fn replica_pid(&self, index: u16) -> Option<u32> {
        let dir = self.replica_dir(index).display().to_string();
        processes_mentioning(&dir)
            .into_iter()
            .find(|(_, args)| args.windows(2).any(|w| w[0] == "replica" && w[1] == dir))
            .map(|(pid, _)| pid)
    }

    /// `shorthorn --engine ADDR ls`; must succeed.
    pub fn ls(&self) -> String {
        shorthorn_ok(&["--engine", &self.engine_addr(), "ls"])
    }

    /// `shorthorn --engine ADDR info`; must succeed.
    pub fn info(&self) -> String {
        shorthorn_ok(&["--engine", &self.engine_addr(), "info"])
    }

    /// The modes `ls` shows, by replica address; also checks the ADDRESS MODE CHAIN
    /// layout, and that an `error:` line follows exactly the ERR rows.
    pub fn modes(&self) -> Vec<(String, String, Option<String>)> {
        parse_ls(&self.ls())
    }

    /// Asserts that `ls` shows every replica RW without errors and `info` says healthy.
    pub fn assert_healthy(&self) {
        let ls = self.ls();
        let rows = parse_ls(&ls);
        assert_eq!(
            rows.len(),
            usize::from(self.replicas),
            "ls should list every replica:\n{ls}"
        );
        for index in 1..=self.replicas {
            let addr = self.replica_addr(index);
            let row = rows.iter().find(|r| r.0 == addr);
            assert!(
                matches!(row, Some((_, mode, None)) if mode == "RW"),
                "replica {index} ({addr}) should be RW without error:\n{ls}"
            );
        }
        let info = self.info();
        assert!(
            info.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["state:", "healthy"]),
            "info should say healthy:\n{info}"
        );
    }

    /// Stops the volume like Ctrl-C would (SIGTERM) and checks that launch-simple
    /// stopped cleanly: exit 0, `volume NAME stopped`, no daemon panicked.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = terminate(&mut child, STOP_TIMEOUT);
        if let Some(thread) = self.stdout_thread.take() {
            let _ = thread.join();
        }
        let stdout = self.stdout();
        assert!(
            status.is_some(),
            "launch-simple did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it.\n\
             stdout:\n{stdout}\nlog:\n{}",
            self.log_tail(60)
        );
        let log = self.log();
        assert!(
            !log.contains("panicked"),
            "a shorthorn process panicked:\n{log}"
        );
        assert!(
            status.unwrap().success() && stdout.contains(&format!("volume {} stopped", self.name)),
            "launch-simple did not stop cleanly ({status:?}).\nstdout:\n{stdout}\nlog:\n{}",
            self.log_tail(60)
        );
        // Its daemons are gone too (they die with it at the latest).
        let leftovers = self.wait_daemons_gone(Duration::from_secs(10));
        assert!(
            leftovers.is_empty(),
            "processes outlived launch-simple: {leftovers:?}"
        );
    }

    fn wait_daemons_gone(&self, timeout: Duration) -> Vec<(u32, Vec<String>)> {
        let needle = self.data_dir.display().to_string();
        let deadline = Instant::now() + timeout;
        loop {
            let left = processes_mentioning(&needle);
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Exports replica `index` of the stopped volume with `shorthorn store export`;
    /// returns the raw image's path.
    pub fn export_replica(&self, index: u16) -> PathBuf {
        assert!(self.child.is_none(), "stop the volume before exporting");
        let image = self.scratch().join(format!("replica-{index}.raw"));
        shorthorn_ok(&[
            "store",
            "export",
            path_str(&self.replica_dir(index)),
            path_str(&image),
        ]);
        let len = std::fs::metadata(&image).unwrap().len();
        assert_eq!(
            len, self.size,
            "export of replica {index} has the wrong size"
        );
        image
    }

    /// Exports each of `indexes` (all replicas if empty) and asserts that their logical
    /// content is identical; returns the common sha256.
    pub fn assert_replicas_identical(&self, indexes: &[u16]) -> String {
        let all: Vec<u16> = (1..=self.replicas).collect();
        let indexes = if indexes.is_empty() { &all } else { indexes };
        // The replicas are exported in parallel: large volumes take a while each.
        let hashes: Vec<(u16, String)> = std::thread::scope(|s| {
            let jobs: Vec<_> = indexes
                .iter()
                .map(|&i| {
                    s.spawn(move || {
                        let image = self.export_replica(i);
                        let hash = sha256(&image);
                        std::fs::remove_file(&image).unwrap();
                        (i, hash)
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let first = hashes[0].1.clone();
        assert!(
            hashes.iter().all(|(_, h)| *h == first),
            "replicas differ after stop (replica, sha256 of its exported content): {hashes:?}"
        );
        first
    }

    /// Kills launch-simple and everything it started; used on drop and between
    /// start attempts.
    fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_TIMEOUT);
        }
        if let Some(thread) = self.stdout_thread.take() {
            let _ = thread.join();
        }
        kill_processes_mentioning(&self.data_dir.display().to_string());
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Parses `shorthorn ls`: (address, mode, error line) per replica. Checks the header
/// and that error lines come only under ERR rows.
pub fn parse_ls(ls: &str) -> Vec<(String, String, Option<String>)> {
    let mut lines = ls.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["ADDRESS", "MODE", "CHAIN"], "ls header:\n{ls}");
    let mut rows: Vec<(String, String, Option<String>)> = Vec::new();
    for line in lines {
        let trimmed = line.trim_start();
        if trimmed.len() < line.len() && trimmed.starts_with("rebuild:") {
            // A rebuild's progress line under the replica being rebuilt.
            continue;
        }
        if let Some(error) = trimmed.strip_prefix("error:") {
            let row = rows
                .last_mut()
                .unwrap_or_else(|| panic!("error line before any replica:\n{ls}"));
            assert!(row.2.is_none(), "two error lines for one replica:\n{ls}");
            row.2 = Some(error.trim().to_owned());
        } else {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 3, "malformed ls row {line:?}:\n{ls}");
            rows.push((fields[0].to_owned(), fields[1].to_owned(), None));
        }
    }
    rows
}

/// A daemon started directly (`shorthorn replica …`), stopped on drop.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `shorthorn ARGS` with its stderr in `log`, and waits (at most 30 s) until
    /// `ready` accepts TCP connections.
    pub fn start(args: &[&str], log: &Path, ready: SocketAddr) -> Daemon {
        let log_file = std::fs::File::create(log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect_timeout(&ready, Duration::from_secs(1)).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "shorthorn {args:?} exited with {status} during start-up:\n{}",
                    daemon.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "shorthorn {args:?} did not listen on {ready} within {READY_TIMEOUT:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        daemon
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(20));
    }
}

/// Writes a fio job file in `dir` for a verified random-write job through fio's `nbd`
/// engine: `jobs` jobs of `per_job` bytes each, 4 KiB blocks, 32 requests in flight per
/// job, each job in its own region (`offset_increment`) so no job overwrites blocks
/// another verifies; crc32c verification of every block after the write phase.
pub fn fio_verify_job(dir: &Path, uri: &str, jobs: u32, per_job: u64) -> PathBuf {
    fio_verify_job_at(dir, uri, jobs, per_job, 0)
}

/// [`fio_verify_job`] with its first job's region at byte `offset` (the others follow).
pub fn fio_verify_job_at(dir: &Path, uri: &str, jobs: u32, per_job: u64, offset: u64) -> PathBuf {
    let job = format!(
        "[global]
ioengine=nbd
uri={uri}
filename=unused
rw=randwrite
bs=4k
iodepth=32
numjobs={jobs}
offset={offset}
size={per_job}
offset_increment={per_job}
verify=crc32c
do_verify=1
verify_fatal=1
verify_state_save=0
group_reporting=1

[verify-randwrite]
"
    );
    let path = dir.join("verify.fio");
    std::fs::write(&path, job).unwrap();
    path
}

/// Runs fio on `job_file` (bounded).
pub fn fio(job_file: &Path) -> Outcome {
    let fio = require("fio", "fio");
    run(
        &fio,
        &["--output-format=normal", path_str(job_file)],
        CLIENT_TIMEOUT,
    )
}

/// Checks a finished [`fio_verify_job`]: exit 0, no error, no verification failure, and
/// every one of `blocks` 4 KiB blocks written once and read back once.
pub fn assert_fio_verified(outcome: &Outcome, blocks: u64, context: &str) {
    let all = outcome.all();
    assert!(
        outcome.success(),
        "fio failed ({:?}):\n{all}\n{context}",
        outcome.code
    );
    assert!(
        !all.contains("verify:"),
        "fio reported verification errors:\n{all}\n{context}"
    );
    assert!(
        all.contains("err= 0"),
        "fio reported errors:\n{all}\n{context}"
    );
    assert!(
        all.contains(&format!("issued rwts: total={blocks},{blocks},")),
        "fio did not write and verify every block ({blocks}):\n{all}\n{context}"
    );
}

impl Volume {
    /// [`Volume::start`] with more `launch-simple` arguments (`extra` is called once per
    /// start attempt with the ports of that attempt) and the volume's temporary directory (data, logs,
    /// scratch) created in `parent`, e.g. a tmpfs where removing large fragmented
    /// layer files at the end is cheap.
    pub fn start_in(
        parent: &Path,
        name: &str,
        size: u64,
        replicas: u16,
        extra: &dyn Fn(&Ports) -> Vec<String>,
    ) -> Volume {
        let new_dir = || {
            tempfile::Builder::new()
                .prefix("shv")
                .tempdir_in(parent)
                .unwrap()
        };
        let mut dir = new_dir();
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let ports = Ports::pick(replicas);
            let data_dir = dir.path().join(format!("data{attempt}"));
            let log = dir.path().join(format!("launch{attempt}.log"));
            let log_file = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(BIN)
                .args([
                    "launch-simple",
                    name,
                    &size.to_string(),
                    "--replicas",
                    &replicas.to_string(),
                    "--data-dir",
                    path_str(&data_dir),
                    "--nbd",
                    &format!("127.0.0.1:{}", ports.nbd),
                    "--engine-listen",
                    &format!("127.0.0.1:{}", ports.engine),
                    "--replica-base-port",
                    &ports.replica_base.to_string(),
                ])
                .args(extra(&ports))
                .env_remove("SHORTHORN_CRASH_AT")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file)
                .spawn()
                .unwrap();
            let (stdout, stdout_thread) = collect_lines(child.stdout.take().unwrap());
            let mut volume = Volume {
                name: name.to_owned(),
                size,
                replicas,
                ports,
                dir,
                data_dir,
                log,
                child: Some(child),
                stdout,
                stdout_thread: Some(stdout_thread),
            };
            match volume.wait_ready() {
                Ok(()) => return volume,
                Err(why) => {
                    let log = volume.log();
                    let clash = ["in use", "did not listen"]
                        .iter()
                        .any(|s| log.contains(s) || why.contains(s));
                    failures.push_str(&format!(
                        "attempt {attempt} (ports {ports:?}): {why}\nlog:\n{log}\n"
                    ));
                    volume.kill_all();
                    if !clash {
                        break;
                    }
                    dir = std::mem::replace(&mut volume.dir, new_dir());
                }
            }
        }
        panic!("launch-simple {name} {size} did not start:\n{failures}");
    }
}
