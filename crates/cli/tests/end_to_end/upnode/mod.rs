//! `shorthorn up` as a child process, the one way the end-to-end tests start a manager
//! node: in a temporary directory on a port of its own (another port is tried when the
//! one picked is taken meanwhile), driven through its REST API ([`Api`]) or the
//! `shorthorn` client commands ([`Node::cli`]). Stopping it checks that it stops cleanly
//! and leaves nothing running; dropping it kills whatever is left.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{
    self, BIN, children_of, cmdline, free_port_range, kill_processes_mentioning, path_str,
    processes_mentioning, run_command, signal, terminate,
};
use crate::http::{Response, request};

/// A volume's JSON says it is healthy with every replica in RW mode.
pub fn healthy_all_rw(volume: &Value) -> bool {
    volume["status"]["robustness"] == "healthy"
        && volume["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"]["mode"] == "RW")
}

/// A volume's JSON says it is attached and healthy with three replicas, each running
/// and RW.
pub fn attached_with_three_rw(volume: &Value) -> bool {
    let replicas = volume["replicas"].as_array().unwrap();
    volume["status"]["robustness"] == "healthy"
        && volume["status"]["state"] == "attached"
        && replicas.len() == 3
        && replicas
            .iter()
            .all(|r| r["status"]["mode"] == "RW" && r["status"]["state"] == "running")
}

/// How long `up` may take to print that it is up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `up` may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// Ports tried when the one picked is taken by the time `up` binds it.
const START_ATTEMPTS: usize = 4;

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// No Authorization header.
    None,
    /// `Authorization: Bearer TOKEN` with the right token.
    Token,
    /// This Authorization header.
    Header(&'a str),
}

/// The REST API of one `up`, with its user token.
#[derive(Debug, Clone)]
pub struct Api {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The user token.
    pub token: String,
}

impl Api {
    /// Any request: `auth`, an optional content type and a raw body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Response {
        let bearer = format!("Bearer {}", self.token);
        let mut headers = Vec::new();
        match auth {
            Auth::None => {}
            Auth::Token => headers.push(("Authorization", bearer.as_str())),
            Auth::Header(value) => headers.push(("Authorization", value)),
        }
        if let Some(content_type) = content_type {
            headers.push(("Content-Type", content_type));
        }
        request(self.addr, method, path, &headers, body)
    }

    /// A request with the token and a JSON body (if any).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        let content_type = body.as_ref().map(|_| "application/json");
        self.send(method, path, Auth::Token, content_type, body.as_deref())
    }
}

/// A `shorthorn up` node in a temporary directory (`DIR/data` its data directory,
/// `DIR/up.log` its log).
pub struct Node {
    /// Its API, with the token of this node.
    pub api: Api,
    /// Holds the data directory and the log; removed on drop.
    pub dir: TempDir,
    /// `--node`.
    name: String,
    /// More arguments of `up`.
    extra: Vec<String>,
    /// Whether `up` runs with `--stop-instances` (the default here: a test's stop leaves
    /// nothing running).
    stop_instances: bool,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stdout_thread: Option<JoinHandle<()>>,
}

impl Node {
    /// `up --node node-1` with the defaults.
    pub fn start() -> Node {
        Node::start_with("node-1", |_| Vec::new())
    }

    /// `up --node NAME` with more arguments, made from the node's directory (e.g. a
    /// backup target root in it). Waits for `shorthorn is up: API …`, checks the
    /// connection file and the token file against what it printed, reads the token, and
    /// sets `minimal_available_percentage` to 0 (the test machine's disk may be fuller
    /// than the default allows).
    pub fn start_with(name: &str, extra: impl Fn(&Path) -> Vec<String>) -> Node {
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new().prefix("shup").tempdir().unwrap();
            let port = free_port_range(1);
            let mut node = Node {
                api: Api {
                    addr: format!("127.0.0.1:{port}").parse().unwrap(),
                    token: String::new(),
                },
                name: name.to_owned(),
                extra: extra(dir.path()),
                stop_instances: true,
                dir,
                child: None,
                stdout: Arc::default(),
                stdout_thread: None,
            };
            match node.spawn_and_wait() {
                Ok(()) => {
                    node.check_connection_files();
                    // The test machine's disk may be fuller than the default allows.
                    node.cli_ok(&["setting", "set", "minimal_available_percentage", "0"]);
                    return node;
                }
                Err(why) => {
                    let log = node.log();
                    let clash = log.contains("in use") || log.contains("binding the API");
                    let _ = writeln!(failures, "attempt {attempt} (port {port}): {why}");
                    node.kill_all();
                    if !clash {
                        break;
                    }
                }
            }
        }
        panic!("shorthorn up did not start:\n{failures}");
    }

    /// Starts `up` again on the same data directory and port (after [`Node::stop`]),
    /// and waits until it is up.
    pub fn restart(&mut self) {
        if let Err(why) = self.spawn_and_wait() {
            panic!("shorthorn up did not start again: {why}");
        }
    }

    /// Whether the next (re)start runs `up` with `--stop-instances`.
    pub fn set_stop_instances(&mut self, stop: bool) {
        self.stop_instances = stop;
    }

    /// Stops `up` with SIGTERM, as a service manager would, and checks it exited 0
    /// within [`STOP_TIMEOUT`] without a panic; what it started is not checked (without
    /// `--stop-instances` its engines and replicas run on).
    pub fn stop_up_only(&mut self) {
        let mut child = self.child.take().expect("up is running");
        let status = terminate(&mut child, STOP_TIMEOUT);
        if let Some(thread) = self.stdout_thread.take() {
            let _ = thread.join();
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "shorthorn up did not stop cleanly ({status:?}):\n{}",
            self.log_tail(60)
        );
        assert!(!self.log().contains("panicked"), "{}", self.log());
    }

    /// Whether `up` is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Its log: every start's, appended.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// What this start printed.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// `http://ADDR` of its API.
    pub fn url(&self) -> String {
        format!("http://{}", self.api.addr)
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("up.log"))
            .unwrap();
        let listen = self.api.addr.to_string();
        let mut child = Command::new(BIN)
            .args(["up", "--data-dir", path_str(&self.data_dir())])
            .args(["--listen", &listen, "--node", &self.name])
            .args(&self.extra)
            .args(self.stop_instances.then_some("--stop-instances"))
            .env_remove("SHORTHORN_CRASH_AT")
            .env_remove("SHORTHORN_ENGINE")
            .env_remove("RUST_LOG")
            // Backup targets bring their own S3 endpoint and credentials, or none.
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            // Anything it makes of a relative path lands in the node's directory.
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let (stdout, stdout_thread) = common::collect_lines(child.stdout.take().unwrap());
        self.child = Some(child);
        self.stdout = stdout;
        self.stdout_thread = Some(stdout_thread);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let want = format!("shorthorn is up: API {}\n", self.url());
        loop {
            let stdout = self.stdout();
            if stdout.contains(&want) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                return Err(format!(
                    "exited with {status} during start-up.\nstdout:\n{stdout}\nlog:\n{}",
                    self.log_tail(40)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not print {want:?} within {START_TIMEOUT:?}.\nstdout:\n{stdout}\nlog:\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// DIR/manager.json holds the printed URL and DIR/token's token, which the first
    /// start prints.
    fn check_connection_files(&mut self) {
        let connection = std::fs::read_to_string(self.data_dir().join("manager.json")).unwrap();
        let connection: Value = serde_json::from_str(&connection).unwrap();
        let token = std::fs::read_to_string(self.data_dir().join("token")).unwrap();
        let token = token.trim().to_owned();
        assert_eq!(connection["url"], self.url().as_str(), "manager.json");
        assert_eq!(connection["token"], token.as_str(), "manager.json vs token");
        assert!(token.len() >= 32, "a short token: {token:?}");
        assert!(
            self.stdout().contains(&format!("token:   {token} (new;")),
            "the first start prints the new token:\n{}",
            self.stdout()
        );
        self.api.token = token;
    }

    /// Stops `up` like Ctrl-C would and checks that it stopped cleanly: exit 0 within
    /// [`STOP_TIMEOUT`], nothing panicked, and every engine and replica it started is
    /// gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "shorthorn up exited by itself:\n{}",
            self.log_tail(60)
        );
        let daemons = children_of(child.id());
        let status = terminate(&mut child, STOP_TIMEOUT);
        if let Some(thread) = self.stdout_thread.take() {
            let _ = thread.join();
        }
        assert!(
            status.is_some(),
            "shorthorn up did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it.\nlog:\n{}",
            self.log_tail(60)
        );
        let log = self.log();
        assert!(
            !log.contains("panicked"),
            "a shorthorn process panicked:\n{log}"
        );
        assert!(
            status.unwrap().success(),
            "shorthorn up did not stop cleanly ({status:?}):\n{}",
            self.log_tail(60)
        );
        let needle = self.data_dir().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut left: Vec<(u32, Vec<String>)> = daemons
                .iter()
                .filter(|(pid, args)| alive(*pid, args))
                .cloned()
                .collect();
            left.extend(processes_mentioning(&needle));
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "processes outlived shorthorn up: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills `up` alone with SIGKILL, as a crash would (what it started is left to
    /// notice by itself); [`Node::restart`] starts it again.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(thread) = self.stdout_thread.take() {
            let _ = thread.join();
        }
    }

    /// Kills `up` and everything it started; on drop and between start attempts.
    fn kill_all(&mut self) {
        let mut daemons = Vec::new();
        if let Some(mut child) = self.child.take() {
            daemons = children_of(child.id());
            terminate(&mut child, STOP_TIMEOUT);
        }
        if let Some(thread) = self.stdout_thread.take() {
            let _ = thread.join();
        }
        for (pid, args) in &daemons {
            if alive(*pid, args) {
                signal(*pid, "KILL");
            }
        }
        kill_processes_mentioning(path_str(self.dir.path()));
    }

    /// `shorthorn ARGS --data-dir DIR/data`: the client commands as a user on this host
    /// runs them (they find the API in the data directory).
    pub fn cli(&self, args: &[&str]) -> common::Outcome {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--data-dir", path_str(&self.data_dir())])
            .env_remove("SHORTHORN_URL")
            .env_remove("SHORTHORN_TOKEN");
        run_command(command, Duration::from_secs(180))
    }

    /// [`Node::cli`], which must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let outcome = self.cli(args);
        assert!(outcome.success(), "{args:?}: {outcome:?}\n{}", self.log());
        outcome.stdout
    }

    /// Creates volume `name` of `size` (e.g. "32M") with `replicas` replicas, attaches it
    /// here and waits until it is healthy; returns its NBD URI.
    pub fn create_attached(&self, name: &str, size: &str, replicas: usize) -> String {
        let uri = self.create_and_attach(name, size, replicas, &[]);
        self.wait_for(name, "healthy", Duration::from_secs(60), |v| {
            v["status"]["robustness"] == "healthy"
        });
        uri
    }

    /// Creates volume `name` of `size` with `replicas` replicas from the backup at `url`,
    /// attaches it here and waits until every replica is restored and RW; returns its
    /// NBD URI.
    pub fn restore_attached(&self, name: &str, size: &str, replicas: usize, url: &str) -> String {
        let uri = self.create_and_attach(name, size, replicas, &["--from-backup", url]);
        self.wait_for(name, "restored and healthy", Duration::from_secs(60), |v| {
            v["status"]["robustness"] == "healthy"
                && v["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["status"]["mode"] == "RW" && r["spec"]["restore_from"].is_null())
        });
        uri
    }

    /// `volume create NAME --size SIZE --replicas N EXTRA…`, then `volume attach NAME`;
    /// returns the NBD URI.
    fn create_and_attach(&self, name: &str, size: &str, replicas: usize, extra: &[&str]) -> String {
        let replicas = replicas.to_string();
        let create = [
            "volume",
            "create",
            name,
            "--size",
            size,
            "--replicas",
            &replicas,
        ];
        self.cli_ok(&[&create[..], extra].concat());
        self.cli_ok(&["volume", "attach", name]).trim().to_string()
    }

    /// `volume get NAME --json`.
    pub fn volume(&self, name: &str) -> Value {
        serde_json::from_str(&self.cli_ok(&["volume", "get", name, "--json"])).unwrap()
    }

    /// Waits (at most `limit`) until `check` holds for the volume's JSON.
    pub fn wait_for(
        &self,
        volume: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let volume = self.volume(volume);
            if check(&volume) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "volume not {what} within {limit:?}: {volume:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Kills (SIGKILL) every process of volume `volume`'s replicas, then waits until
    /// each was started again on its data (the manager's healing, not the test's).
    pub fn kill_replicas_and_wait_restarted(&self, volume: &str) {
        let mut killed = Vec::new();
        for replica in self.volume(volume)["replicas"].as_array().unwrap() {
            let dir = replica["spec"]["data_dir"].as_str().unwrap().to_string();
            for (pid, _) in processes_mentioning(&dir) {
                signal(pid, "KILL");
                killed.push((dir.clone(), pid));
            }
        }
        for (dir, pid) in &killed {
            common::wait_restarted(dir, *pid, Duration::from_secs(30));
        }
    }

    /// The replica directories under the default disk.
    pub fn volume_dirs(&self) -> Vec<PathBuf> {
        let replicas = self.data_dir().join("disks/default/replicas");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(replicas)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        dirs
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Whether `pid` still runs the command line `args` (so a reused pid does not count).
fn alive(pid: u32, args: &[String]) -> bool {
    let now = cmdline(pid);
    !now.is_empty() && now == args
}
