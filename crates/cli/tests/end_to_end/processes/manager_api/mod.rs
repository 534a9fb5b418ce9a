//! The manager's REST API, end to end, against a real `shorthorn up` (its own data
//! directory and port; stopped with SIGTERM at the end, which must stop every engine and
//! replica it started).
//!
//! One module per behaviour: every documented endpoint in a volume's life
//! (`every_endpoint`), bad requests (`bad_requests`), JSON arrays as bodies
//! (`json_arrays`), and `schemathesis` over both documents (`schemathesis`). This file
//! holds what they share: `shorthorn up` as a child process and its API client.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{
    BIN, MIB, children_of, cmdline, free_port_range, kill_processes_mentioning, path_str,
    processes_mentioning, run_command, signal, terminate,
};
use crate::http::{Response, request};

/// Where the OpenAPI document is served.
const OPENAPI: &str = "/v1/openapi.json";
/// The node agent's OpenAPI document.
const AGENT_OPENAPI: &str = "/agent/v1/openapi.json";
/// The node `up` runs as.
const NODE: &str = "test-node";
/// The volume the tests create.
const VOLUME: &str = "api-vol";
/// Its size: small, so creating its replica is cheap.
const SIZE: u64 = 64 * MIB;
/// How long `up` may take to print its `shorthorn is up` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `up` may take to stop after SIGTERM (it stops engines and replicas first).
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a volume may take to reach a state (replica started, engine serving, …).
const STATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time limit of one HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Time limit of the whole schemathesis run.
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(300);
/// Test cases schemathesis generates per operation and phase.
const SCHEMATHESIS_EXAMPLES: &str = "50";
/// Attempts at starting `up` (another process may take the port we picked).
const START_ATTEMPTS: usize = 4;
/// Every setting, with the JSON type of its value.
const SETTINGS: [(&str, Kind); 12] = [
    ("replica_soft_anti_affinity", Kind::Bool),
    ("replica_zone_soft_anti_affinity", Kind::Bool),
    ("replica_disk_soft_anti_affinity", Kind::Bool),
    ("over_provisioning_percentage", Kind::Unsigned),
    ("minimal_available_percentage", Kind::Unsigned),
    ("replica_replenishment_wait_interval", Kind::Unsigned),
    ("stale_replica_timeout", Kind::Unsigned),
    ("default_replica_count", Kind::Unsigned),
    ("auto_salvage", Kind::Bool),
    ("engine_replica_timeout", Kind::Unsigned),
    ("slow_replica_ratio", Kind::Unsigned),
    ("slow_replica_window", Kind::Unsigned),
];

/// A setting's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Unsigned,
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    /// No Authorization header.
    None,
    /// `Authorization: Bearer TOKEN` with the right token.
    Token,
    /// This Authorization header.
    Header(&'a str),
}

/// The API of one `up`.
#[derive(Debug, Clone)]
struct Api {
    addr: SocketAddr,
    token: String,
}

impl Api {
    /// Any request: `auth`, an optional content type and a raw body.
    fn send(
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
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        let content_type = body.as_ref().map(|_| "application/json");
        self.send(method, path, Auth::Token, content_type, body.as_deref())
    }

    fn settings(&self) -> Value {
        self.call("GET", "/v1/settings", None).expect(200).json()
    }

    fn set(&self, name: &str, value: Value) -> Value {
        let settings = self
            .call(
                "PUT",
                &format!("/v1/settings/{name}"),
                Some(&json!({ "value": value })),
            )
            .expect(200)
            .json();
        assert_eq!(settings[name], value, "setting {name} not set: {settings}");
        settings
    }

    fn volumes(&self) -> Vec<Value> {
        let list = self.call("GET", "/v1/volumes", None).expect(200).json();
        list.as_array()
            .unwrap_or_else(|| panic!("GET /v1/volumes is not an array: {list}"))
            .clone()
    }

    fn volume_names(&self) -> BTreeSet<String> {
        self.volumes()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Creates a small volume (the scheduler needs `minimal_available_percentage` 0 on a
    /// full disk, set by [`Up::start`]).
    fn create(&self, name: &str, replicas: u64) -> Value {
        self.call(
            "POST",
            "/v1/volumes",
            Some(&json!({"name": name, "size": SIZE, "replicas": replicas})),
        )
        .expect(201)
        .json()
    }
}

/// `template` (`/v1/volumes/{name}`) with every `{parameter}` replaced by `value`.
fn fill(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                value
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every (path, method) of an OpenAPI document, methods in lower case.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("the document has no paths: {doc}"));
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((path.clone(), method.to_owned()));
            }
        }
    }
    operations
}

// ---------------------------------------------------------------------------------------
// `shorthorn up` as a child process.

/// `shorthorn up` in its own temporary data directory, on its own port. Dropping it stops
/// it (SIGTERM, then SIGKILL) and kills whatever it left.
struct Up {
    api: Api,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stdout_thread: Option<JoinHandle<()>>,
    dir: TempDir,
}

impl Up {
    /// Starts `up`, waits for `shorthorn is up: API http://…`, checks the connection
    /// file and the token file against it, and sets `minimal_available_percentage` to 0
    /// (the test machine's disk may be fuller than the default allows).
    fn start() -> Up {
        let mut dir = tempfile::Builder::new().prefix("shapi").tempdir().unwrap();
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port_range(1);
            let data_dir = dir.path().join(format!("data{attempt}"));
            let log = dir.path().join(format!("up{attempt}.log"));
            let log_file = std::fs::File::create(&log).unwrap();
            // Backup targets live in the test's directory, outside the data directory
            // of any one attempt: the flag replaces the default root DATA_DIR/backups.
            let backups = dir.path().join("backups");
            let mut child = Command::new(BIN)
                .args([
                    "up",
                    "--data-dir",
                    path_str(&data_dir),
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--node",
                    NODE,
                    "--file-target-root",
                    path_str(&backups),
                ])
                .env_remove("SHORTHORN_CRASH_AT")
                .env_remove("SHORTHORN_ENGINE")
                .env_remove("RUST_LOG")
                // Anything it makes of a relative path lands in the test's directory.
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file)
                .spawn()
                .unwrap();
            let (stdout, stdout_thread) =
                crate::common::collect_lines(child.stdout.take().unwrap());
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut up = Up {
                api: Api {
                    addr,
                    token: String::new(),
                },
                data_dir,
                log,
                child: Some(child),
                stdout,
                stdout_thread: Some(stdout_thread),
                dir,
            };
            match up.wait_ready() {
                Ok(()) => {
                    up.check_connection_files();
                    up.api.set("minimal_available_percentage", json!(0));
                    return up;
                }
                Err(why) => {
                    let log = up.log();
                    let clash = log.contains("in use") || log.contains("binding the API");
                    let _ = writeln!(failures, "attempt {attempt} (port {port}): {why}");
                    up.kill_all();
                    if !clash {
                        break;
                    }
                    dir = std::mem::replace(
                        &mut up.dir,
                        tempfile::Builder::new().prefix("shapi").tempdir().unwrap(),
                    );
                }
            }
        }
        panic!("shorthorn up did not start:\n{failures}");
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn url(&self) -> String {
        format!("http://{}", self.api.addr)
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
        let connection = std::fs::read_to_string(self.data_dir.join("manager.json")).unwrap();
        let connection: Value = serde_json::from_str(&connection).unwrap();
        let token = std::fs::read_to_string(self.data_dir.join("token")).unwrap();
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

    /// GET `path` (200 each time) until `done` holds for its JSON (at most
    /// [`STATE_TIMEOUT`]).
    fn wait_get(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            let value = self.api.call("GET", path, None).expect(200).json();
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path}: not {what} after {STATE_TIMEOUT:?}:\n{value:#}\nlog:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GET /v1/volumes/NAME until `done` holds (at most [`STATE_TIMEOUT`]).
    fn wait_volume(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            let volume = self
                .api
                .call("GET", &format!("/v1/volumes/{name}"), None)
                .expect(200)
                .json();
            if done(&volume) {
                return volume;
            }
            assert!(
                Instant::now() < deadline,
                "volume {name} is not {what} after {STATE_TIMEOUT:?}:\n{volume:#}\nlog:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops `up` like Ctrl-C would and checks that it stopped cleanly: exit 0 within
    /// [`STOP_TIMEOUT`], nothing panicked, and every engine and replica it started is
    /// gone.
    fn stop(&mut self) {
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
        let needle = self.data_dir.display().to_string();
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
        kill_processes_mentioning(&self.data_dir.display().to_string());
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Whether `pid` still runs the command line `args` (so a reused pid does not count).
fn alive(pid: u32, args: &[String]) -> bool {
    let now = cmdline(pid);
    !now.is_empty() && now == args
}

/// One bad request and what it must get.
struct Case<'a> {
    method: &'a str,
    path: String,
    content_type: Option<&'a str>,
    body: Vec<u8>,
    status: u16,
    /// Text the message must contain (case-insensitive), if any.
    mentions: &'a str,
}

impl Case<'_> {
    /// Sends it; describes what was wrong, if anything.
    fn check(&self, api: &Api) -> Option<String> {
        let response = api.send(
            self.method,
            &self.path,
            Auth::Token,
            self.content_type,
            Some(&self.body),
        );
        let sent = format!(
            "{} {} ({:?}) {:?}",
            self.method,
            self.path,
            self.content_type,
            String::from_utf8_lossy(&self.body)
        );
        if response.status != self.status {
            return Some(format!(
                "{sent}: expected {}, got {}",
                self.status, response
            ));
        }
        match response.try_message() {
            Err(e) => Some(format!("{sent}: {e}")),
            Ok(message)
                if !message
                    .to_lowercase()
                    .contains(&self.mentions.to_lowercase()) =>
            {
                Some(format!(
                    "{sent}: the message should mention {:?}: {response}",
                    self.mentions
                ))
            }
            Ok(_) => None,
        }
    }
}

/// A JSON request that must get `status`, with a message mentioning `mentions`.
fn case<'a>(method: &'a str, path: &str, body: &str, status: u16, mentions: &'a str) -> Case<'a> {
    Case {
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        status,
        mentions,
    }
}

mod bad_requests;
mod every_endpoint;
mod json_arrays;
mod schemathesis;
