//! The manager's REST API, end to end, against a real `shorthorn up` (its own data
//! directory and port; stopped with SIGTERM at the end, which must stop every engine and
//! replica it started).
//!
//! - The OpenAPI document is served without a token and lists every endpoint. Each
//!   documented operation (and `/metrics`) answers 401 with a JSON `message` without a
//!   token, with a wrong one, with another scheme or a bare token, and has no effect
//!   then. With the token each one works in a volume's life: settings get and set,
//!   nodes, create, get (replica running), list, attach (the NBD endpoint greets like
//!   an NBD server), the engine (running, reachable) and replica lists, the cluster
//!   (embedded store, this node leads), a backup target (a directory) set and read, a
//!   backup taken (pending, then completed with its URL and record in the target),
//!   refused target deletion while a backup is not complete, the backup deleted (its
//!   record goes from the target, then the object), the target deleted, detach, delete
//!   (replica data removed). The operations exercised must be exactly those of the
//!   document, so a new endpoint without a test fails.
//! - Bad requests get a 4xx with a JSON `message` and change nothing: malformed JSON,
//!   wrong content types, wrong types, unknown, duplicate and missing fields, bad volume
//!   names, sizes and replica counts, unknown nodes; unknown volumes and settings get
//!   404, an existing volume 409, deleting an attached volume 409; setting values of the
//!   wrong type 400. Backup target bodies: wrong types, unknown fields, bad URLs and
//!   poll intervals, bad target names get 400. Backup bodies: wrong types, unknown
//!   fields, bad volume, snapshot and target names get 400; an unknown volume 404, a
//!   detached one 409, an unknown target (of an attached volume) 404. Unknown engines,
//!   backup targets and backups get 404.
//! - A JSON array is not an object: create, attach, setting, backup target and backup
//!   bodies given as arrays get 400 (serde would otherwise read them as the struct's
//!   fields in order).
//! - Every other field of every body has a rule, and breaking it is a 400 naming the
//!   field: selectors, job and group lists, labels (keys, values, count), cron length,
//!   retain range, disk count, tags, reserved bytes, URLs with whitespace, settings'
//!   ranges.
//! - `schemathesis` (PyPI; `scripts/setup.sh` installs it), run against the document
//!   with the token, and against the node agent's document with the node credential, finds no server error (5xx), no response off the document (status,
//!   content type, headers, schema), no accepted invalid data and no ignored auth. The
//!   `positive_data_acceptance` check is left out: the document does not state the name,
//!   size, replica and node rules the API enforces, so schemathesis builds "valid"
//!   requests the API rightly rejects. Afterwards the manager still runs, nothing
//!   panicked, and every volume it created can be detached and deleted. (While JSON
//!   arrays are accepted as objects, some runs find that too: `negative_data_rejection`,
//!   "was object, became array".)

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::io::{Read, Write};
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

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client over std's TcpStream (one request per connection).

/// What the server answered.
#[derive(Debug)]
struct Response {
    /// Request line, for messages.
    request: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {:?} {}",
            self.request,
            self.status,
            self.header("content-type").unwrap_or("(no content type)"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; it must say so in its content type.
    fn json(&self) -> Value {
        self.try_json().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_json(&self) -> Result<Value, String> {
        if !self
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
        {
            return Err(format!("not an application/json response: {self}"));
        }
        serde_json::from_slice(&self.body).map_err(|e| format!("invalid JSON ({e}): {self}"))
    }

    /// An error's `{"message": "..."}` (JSON, nothing else, not empty).
    fn try_message(&self) -> Result<String, String> {
        let body = self.try_json()?;
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no string `message` in the error: {self}"))?;
        if message.trim().is_empty() {
            return Err(format!("empty error message: {self}"));
        }
        if body.as_object().map(serde_json::Map::len) != Some(1) {
            return Err(format!("an error has only `message`: {self}"));
        }
        Ok(message.to_owned())
    }

    fn message(&self) -> String {
        self.try_message().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fails the test unless the status is `status`.
    fn expect(self, status: u16) -> Response {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = find(data, b"\r\n").expect("chunk size line");
        let size = std::str::from_utf8(&data[..end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Sends one request and reads the whole response (`Connection: close`).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let request_line = format!("{method} {path}");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if body.is_some() || matches!(method, "POST" | "PUT" | "PATCH") {
        let _ = write!(
            head,
            "Content-Length: {}\r\n",
            body.unwrap_or_default().len()
        );
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default());
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{request_line}: cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream
        .write_all(&raw)
        .unwrap_or_else(|e| panic!("{request_line}: sending: {e}"));
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("{request_line}: reading the response: {e}"));
    let split = find(&answer, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "{request_line}: no complete response head: {:?}",
            String::from_utf8_lossy(&answer)
        )
    });
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{request_line}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        request: request_line,
        status,
        headers,
        body: answer[split + 4..].to_vec(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(&response.body);
    }
    response
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
        http(self.addr, method, path, &headers, body)
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

// ---------------------------------------------------------------------------------------
// The tests.

/// Records which documented operations a test exercised.
struct Exercised<'a> {
    api: &'a Api,
    operations: BTreeSet<(String, String)>,
}

impl Exercised<'_> {
    /// `method template` with its parameter set to `parameter`, with the token.
    fn call(
        &mut self,
        method: &str,
        template: &str,
        parameter: &str,
        body: Option<&Value>,
    ) -> Response {
        self.operations
            .insert((template.to_owned(), method.to_ascii_lowercase()));
        self.api.call(method, &fill(template, parameter), body)
    }
}

/// A valid body for a documented operation (`{}` for one this test does not know).
fn valid_body(template: &str, method: &str) -> Option<Value> {
    match (template, method) {
        ("/v1/volumes", "post") => Some(json!({"name": VOLUME, "size": SIZE, "replicas": 1})),
        ("/v1/settings/{name}", "put") => Some(json!({"value": false})),
        ("/v1/volumes/{name}/expand", "post") => Some(json!({"size": SIZE * 2})),
        ("/v1/nodes/{name}", "put") => Some(json!({"zone": "refused"})),
        ("/v1/recurring-jobs", "post") => Some(json!({"name": "refused-job", "spec": {
            "task": "snapshot", "cron": "0 3 * * *", "retain": 1}})),
        ("/v1/backup-targets/{name}", "put") => {
            Some(json!({"url": "file:///tmp/shorthorn-refused-target", "poll_interval": 60}))
        }
        ("/v1/backups", "post") => Some(json!({"volume": VOLUME, "target": "default"})),
        (_, "get" | "delete" | "head" | "options") => None,
        _ => Some(json!({})),
    }
}

/// The replicas of a volume (GET /v1/volumes/NAME) that should run.
fn wanted_replicas(volume: &Value) -> Vec<Value> {
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

/// Host and port of `nbd://HOST:PORT/NAME`.
fn nbd_address(endpoint: &str, name: &str) -> SocketAddr {
    let rest = endpoint
        .strip_prefix("nbd://")
        .unwrap_or_else(|| panic!("endpoint {endpoint:?} is not nbd://"));
    let (address, export) = rest.split_once('/').unwrap();
    assert_eq!(export, name, "endpoint {endpoint:?} names another export");
    address.parse().unwrap()
}

#[test]
fn every_documented_endpoint_requires_the_token_and_works() {
    let mut up = Up::start();
    let api = up.api.clone();

    // The document, without a token.
    let doc = api.send("GET", OPENAPI, Auth::None, None, None).expect(200);
    let doc = doc.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not an OpenAPI 3 document: {doc:#}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"}),
        "the document declares bearer authentication"
    );
    assert!(
        doc["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some())),
        "the document requires the bearer token everywhere: {}",
        doc["security"]
    );
    let documented = documented_operations(&doc);
    assert!(!documented.is_empty(), "no operations in {doc:#}");
    for (path, method) in &documented {
        assert!(
            doc["paths"][path][method]["responses"].get("401").is_some(),
            "{method} {path} does not document its 401"
        );
    }

    // Without the right token, every operation gets 401 and does nothing. Bodies are
    // valid (create this test's volume, switch auto_salvage off) so a missing check
    // would show.
    let settings_before = api.settings();
    let wrong = "Bearer 0123456789abcdef0123456789abcdef".to_owned();
    let basic = format!("Basic {}", api.token);
    let bare = api.token.clone();
    let bad_auth = [
        Auth::None,
        Auth::Header(&wrong),
        Auth::Header(&basic),
        Auth::Header(&bare),
        Auth::Header("Bearer "),
    ];
    let protected = documented
        .iter()
        .map(|(p, m)| (p.as_str(), m.as_str()))
        .chain([("/metrics", "get")]);
    for (template, method) in protected {
        let parameter = if template.starts_with("/v1/settings") {
            "auto_salvage"
        } else {
            VOLUME
        };
        let path = fill(template, parameter);
        let body = valid_body(template, method).map(|b| serde_json::to_vec(&b).unwrap());
        let content_type = body.as_ref().map(|_| "application/json");
        for auth in bad_auth {
            let response = api.send(
                &method.to_ascii_uppercase(),
                &path,
                auth,
                content_type,
                body.as_deref(),
            );
            assert_eq!(response.status, 401, "{auth:?} must be refused: {response}");
            response.message();
        }
    }
    assert_eq!(
        api.settings(),
        settings_before,
        "refused requests changed settings"
    );
    assert!(
        api.volumes().is_empty(),
        "refused requests created a volume"
    );
    let targets = api
        .call("GET", "/v1/backup-targets", None)
        .expect(200)
        .json();
    assert_eq!(targets, json!([]), "refused requests set a backup target");
    let backups = api.call("GET", "/v1/backups", None).expect(200).json();
    assert_eq!(backups, json!([]), "refused requests created a backup");

    let mut ops = Exercised {
        api: &api,
        operations: BTreeSet::new(),
    };

    // Settings: every one is there with its type; each can be set (to what it is).
    let settings = ops.call("GET", "/v1/settings", "", None).expect(200).json();
    let names: BTreeSet<&str> = settings
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        SETTINGS.iter().map(|(n, _)| *n).collect(),
        "settings: {settings}"
    );
    for (name, kind) in SETTINGS {
        let value = settings[name].clone();
        match kind {
            Kind::Bool => assert!(value.is_boolean(), "{name}: {value}"),
            Kind::Unsigned => assert!(value.is_u64(), "{name}: {value}"),
        }
        let after = ops
            .call(
                "PUT",
                "/v1/settings/{name}",
                name,
                Some(&json!({ "value": value })),
            )
            .expect(200)
            .json();
        assert_eq!(after, settings, "setting {name} to what it is");
    }
    assert_eq!(
        settings["minimal_available_percentage"], 0,
        "set by Up::start"
    );
    assert_eq!(
        settings["replica_soft_anti_affinity"], true,
        "one node: replicas may share it"
    );
    // A change shows in the answer and in later reads, and nothing else changes.
    let changed = ops
        .call(
            "PUT",
            "/v1/settings/{name}",
            "stale_replica_timeout",
            Some(&json!({"value": 3600})),
        )
        .expect(200)
        .json();
    let mut expected = settings.clone();
    expected["stale_replica_timeout"] = json!(3600);
    assert_eq!(changed, expected);
    assert_eq!(api.settings(), expected);

    // Nodes: this one, ready, with its default disk under the data directory.
    let deadline = Instant::now() + STATE_TIMEOUT;
    let node = loop {
        let nodes = ops.call("GET", "/v1/nodes", "", None).expect(200).json();
        let nodes = nodes.as_array().unwrap().clone();
        assert_eq!(nodes.len(), 1, "one node: {nodes:?}");
        let node = nodes[0].clone();
        if node["status"]["ready"] == true {
            break node;
        }
        assert!(Instant::now() < deadline, "node never ready: {node:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(node["name"], NODE);
    assert_eq!(node["spec"]["address"], "127.0.0.1");
    let disk = &node["spec"]["disks"][0];
    assert_eq!(disk["name"], "default", "{node:#}");
    let disk_path = PathBuf::from(disk["path"].as_str().unwrap());
    assert!(
        disk_path.starts_with(up.data_dir.canonicalize().unwrap()) && disk_path.is_dir(),
        "the default disk is under the data directory: {node:#}"
    );
    // Zone and tags change; the disk list stays (it was not given).
    let updated = ops
        .call(
            "PUT",
            "/v1/nodes/{name}",
            NODE,
            Some(&json!({"zone": "zone-a", "tags": ["ssd"]})),
        )
        .expect(200)
        .json();
    assert_eq!(updated["spec"]["zone"], "zone-a", "{updated:#}");
    assert_eq!(updated["spec"]["tags"], json!(["ssd"]), "{updated:#}");
    assert_eq!(
        updated["spec"]["disks"], node["spec"]["disks"],
        "{updated:#}"
    );
    let relative = api.call(
        "PUT",
        &format!("/v1/nodes/{NODE}"),
        Some(&json!({"disks": [{"name": "d", "path": "rel", "allow_scheduling": true}]})),
    );
    assert_eq!(relative.status, 400, "{relative}");
    api.call("PUT", "/v1/nodes/no-such-node", Some(&json!({"zone": "z"})))
        .expect(404);
    let disk_status = &node["status"]["disks"][0];
    assert_eq!(disk_status["name"], "default", "{node:#}");
    assert!(
        disk_status["capacity"].as_u64().unwrap() > 0
            && disk_status["available"].as_u64().unwrap()
                <= disk_status["capacity"].as_u64().unwrap(),
        "disk space: {node:#}"
    );

    // Create.
    let empty = ops.call("GET", "/v1/volumes", "", None).expect(200).json();
    assert_eq!(empty, json!([]));
    let created = ops
        .call(
            "POST",
            "/v1/volumes",
            "",
            Some(&json!({"name": VOLUME, "size": SIZE, "replicas": 1})),
        )
        .expect(201)
        .json();
    assert_eq!(created["name"], VOLUME, "{created:#}");
    let spec = &created["spec"];
    assert!(
        spec["size"] == SIZE
            && spec["replicas"] == 1
            && spec["node_selector"] == json!([])
            && spec["disk_selector"] == json!([])
            && spec["attached_node"].is_null(),
        "{created:#}"
    );

    // Get: its one replica runs on this node's disk; the volume is healthy.
    let detail = ops
        .call("GET", "/v1/volumes/{name}", VOLUME, None)
        .expect(200)
        .json();
    assert_eq!(detail["name"], VOLUME);
    assert!(detail["replicas"].is_array(), "{detail:#}");
    // (A replica that could not start, e.g. on a port another test took meanwhile, is
    // replaced; the failed one stays listed, no longer wanted.)
    let detail = up.wait_volume(VOLUME, "detached and healthy", |v| {
        v["status"]["state"] == "detached"
            && v["status"]["robustness"] == "healthy"
            && wanted_replicas(v).len() == 1
            && wanted_replicas(v)[0]["status"]["state"] == "running"
    });
    let replica = &wanted_replicas(&detail)[0];
    assert_eq!(replica["spec"]["volume"], VOLUME, "{detail:#}");
    assert_eq!(replica["spec"]["node"], NODE, "{detail:#}");
    assert_eq!(replica["spec"]["disk"], "default", "{detail:#}");
    let replica_dir = PathBuf::from(replica["spec"]["data_dir"].as_str().unwrap());
    assert!(
        replica_dir.starts_with(&disk_path) && replica_dir.is_dir(),
        "replica data under the disk: {detail:#}"
    );
    assert!(
        detail["status"]["endpoint"].is_null(),
        "no endpoint while detached: {detail:#}"
    );

    // List.
    let list = ops.call("GET", "/v1/volumes", "", None).expect(200).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], VOLUME);
    assert_eq!(list[0]["spec"]["size"], SIZE);

    // Metrics (not in the document; token required, checked above).
    let metrics = api.call("GET", "/metrics", None).expect(200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{metrics}"
    );
    let metrics = metrics.text();
    assert!(
        metrics.contains(&format!(
            "shorthorn_volume_size_bytes{{volume=\"{VOLUME}\"}} {SIZE}\n"
        )) && metrics.contains(&format!(
            "shorthorn_disk_capacity_bytes{{node=\"{NODE}\",disk=\"default\"}}"
        )),
        "metrics:\n{metrics}"
    );

    // Attach (default node, then again naming it: no change), serve over NBD.
    let attached = ops
        .call(
            "POST",
            "/v1/volumes/{name}/attach",
            VOLUME,
            Some(&json!({})),
        )
        .expect(200)
        .json();
    assert_eq!(attached["name"], VOLUME);
    assert_eq!(attached["spec"]["attached_node"], NODE, "{attached:#}");
    let again = ops
        .call(
            "POST",
            "/v1/volumes/{name}/attach",
            VOLUME,
            Some(&json!({ "node": NODE })),
        )
        .expect(200)
        .json();
    assert_eq!(again["spec"]["attached_node"], NODE, "{again:#}");
    let detail = up.wait_volume(VOLUME, "attached with an endpoint", |v| {
        v["status"]["state"] == "attached" && v["status"]["endpoint"].is_string()
    });
    let endpoint = detail["status"]["endpoint"].as_str().unwrap();
    assert!(
        endpoint.starts_with("nbd://127.0.0.1:"),
        "endpoint on the node's address: {detail:#}"
    );
    let nbd = nbd_address(endpoint, VOLUME);
    let mut stream = TcpStream::connect_timeout(&nbd, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {endpoint}: {e}"));
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).unwrap();
    assert_eq!(&magic, b"NBDMAGIC", "{endpoint} does not greet like NBD");
    drop(stream);

    // Grown while attached.
    let grown = ops
        .call(
            "POST",
            "/v1/volumes/{name}/expand",
            VOLUME,
            Some(&json!({ "size": SIZE * 2 })),
        )
        .expect(200)
        .json();
    assert_eq!(grown["spec"]["size"], SIZE * 2, "{grown:#}");
    let shrink = api.call(
        "POST",
        &format!("/v1/volumes/{VOLUME}/expand"),
        Some(&json!({ "size": SIZE })),
    );
    assert_eq!(shrink.status, 400, "{shrink}");

    // Recurring jobs: created, listed, selected by the volume, deleted.
    let job = ops
        .call(
            "POST",
            "/v1/recurring-jobs",
            "",
            Some(&json!({"name": "api-job", "spec": {
                "task": "snapshot", "cron": "0 3 * * *", "retain": 2, "groups": ["g1"]}})),
        )
        .expect(201)
        .json();
    assert_eq!(job["name"], "api-job", "{job:#}");
    let listed = ops
        .call("GET", "/v1/recurring-jobs", "", None)
        .expect(200)
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    let fetched = ops
        .call("GET", "/v1/recurring-jobs/{name}", "api-job", None)
        .expect(200)
        .json();
    assert!(fetched["status"]["next_run"].is_string() || fetched["status"]["next_run"].is_null());
    let selected = ops
        .call(
            "PUT",
            "/v1/volumes/{name}/recurring-jobs",
            VOLUME,
            Some(&json!({"jobs": ["api-job"], "groups": ["g1"]})),
        )
        .expect(200)
        .json();
    assert_eq!(
        selected["spec"]["recurring_jobs"],
        json!(["api-job"]),
        "{selected:#}"
    );
    let unknown_job = api.call(
        "PUT",
        &format!("/v1/volumes/{VOLUME}/recurring-jobs"),
        Some(&json!({"jobs": ["no-such-job"]})),
    );
    assert_eq!(unknown_job.status, 400, "{unknown_job}");
    ops.call("DELETE", "/v1/recurring-jobs/{name}", "api-job", None)
        .expect(204);
    api.call("GET", "/v1/recurring-jobs/api-job", None)
        .expect(404);

    // Engines: the attached volume's, `<volume>-e`, runs on this node with its one
    // replica in sync, serving the volume's endpoint; its control address answers.
    let detail = api
        .call("GET", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(200)
        .json();
    let endpoint = detail["status"]["endpoint"].as_str().unwrap().to_owned();
    let wanted = wanted_replicas(&detail);
    assert_eq!(wanted.len(), 1, "{detail:#}");
    let replica_name = wanted[0]["name"].as_str().unwrap().to_owned();
    let replica_address = format!("tcp://127.0.0.1:{}", wanted[0]["spec"]["port"]);
    let engine_name = format!("{VOLUME}-e");
    let engine = ops
        .call("GET", "/v1/engines/{name}", &engine_name, None)
        .expect(200)
        .json();
    assert_eq!(engine["name"], engine_name.as_str(), "{engine:#}");
    assert_eq!(engine["spec"]["volume"], VOLUME, "{engine:#}");
    assert_eq!(engine["spec"]["node"], NODE, "{engine:#}");
    let engine = up.wait_get(
        &format!("/v1/engines/{engine_name}"),
        "running with its replica in sync",
        |e| {
            e["status"]["state"] == "running"
                && e["status"]["address"].is_string()
                && e["status"]["replicas"][replica_address.as_str()]["mode"] == "RW"
        },
    );
    assert_eq!(
        engine["spec"]["replicas"],
        json!([replica_address]),
        "{engine:#}"
    );
    assert_eq!(engine["status"]["node"], NODE, "{engine:#}");
    assert_eq!(
        engine["status"]["endpoint"],
        endpoint.as_str(),
        "{engine:#}"
    );
    assert_eq!(engine["status"]["health"], "healthy", "{engine:#}");
    let control: SocketAddr = engine["status"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("engine address: {e}: {engine:#}"));
    assert_eq!(control.ip().to_string(), "127.0.0.1", "{engine:#}");
    TcpStream::connect_timeout(&control, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to the engine at {control}: {e}"));
    let engines = ops.call("GET", "/v1/engines", "", None).expect(200).json();
    let engines = engines.as_array().unwrap();
    assert_eq!(engines.len(), 1, "{engines:#?}");
    assert_eq!(engines[0]["name"], engine_name.as_str(), "{engines:#?}");
    assert_eq!(engines[0]["spec"], engine["spec"], "{engines:#?}");
    for unknown in ["no-such-vol-e", VOLUME] {
        let missing = api
            .call("GET", &format!("/v1/engines/{unknown}"), None)
            .expect(404);
        assert!(missing.message().contains(unknown), "{missing}");
    }

    // Replicas: the volume's wanted replica, running and RW in the engine.
    let replicas = ops.call("GET", "/v1/replicas", "", None).expect(200).json();
    let replicas = replicas.as_array().unwrap();
    assert!(
        replicas.iter().all(|r| r["spec"]["volume"] == VOLUME),
        "{replicas:#?}"
    );
    let listed: BTreeSet<&str> = replicas
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let of_volume: BTreeSet<&str> = detail["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, of_volume, "{replicas:#?}");
    let ours = replicas
        .iter()
        .find(|r| r["name"] == replica_name.as_str())
        .unwrap();
    assert_eq!(ours["spec"]["node"], NODE, "{ours:#}");
    assert_eq!(ours["spec"]["desire_running"], true, "{ours:#}");
    assert_eq!(ours["status"]["state"], "running", "{ours:#}");

    // Cluster: one manager on the embedded store, leading.
    let cluster = ops.call("GET", "/v1/cluster", "", None).expect(200).json();
    assert_eq!(
        cluster,
        json!({"node": NODE, "leader": NODE, "store": "embedded"}),
        "{cluster:#}"
    );

    // Backup targets: none; `default` set to a directory (the default poll interval,
    // then another), listed, and read by the leader (which creates the directory).
    let targets = ops
        .call("GET", "/v1/backup-targets", "", None)
        .expect(200)
        .json();
    assert_eq!(targets, json!([]));
    let backup_dir = up.dir.path().join("backups");
    let target_url = format!("file://{}", path_str(&backup_dir));
    let target = ops
        .call(
            "PUT",
            "/v1/backup-targets/{name}",
            "default",
            Some(&json!({ "url": target_url })),
        )
        .expect(200)
        .json();
    assert_eq!(target["name"], "default", "{target:#}");
    assert_eq!(
        target["spec"],
        json!({"url": target_url, "poll_interval": 300}),
        "{target:#}"
    );
    let target = ops
        .call(
            "PUT",
            "/v1/backup-targets/{name}",
            "default",
            Some(&json!({"url": target_url, "poll_interval": 3600})),
        )
        .expect(200)
        .json();
    assert_eq!(
        target["spec"],
        json!({"url": target_url, "poll_interval": 3600}),
        "{target:#}"
    );
    let targets = ops
        .call("GET", "/v1/backup-targets", "", None)
        .expect(200)
        .json();
    let targets = targets.as_array().unwrap();
    assert_eq!(targets.len(), 1, "{targets:#?}");
    assert_eq!(targets[0]["name"], "default", "{targets:#?}");
    assert_eq!(targets[0]["spec"], target["spec"], "{targets:#?}");
    let targets = up.wait_get("/v1/backup-targets", "read", |list| {
        list[0]["status"]["last_synced"].is_string()
    });
    let status = &targets[0]["status"];
    assert!(
        status["available"] == true && status["backups"] == 0 && status["message"] == "",
        "the target is read: {targets:#}"
    );
    assert!(backup_dir.is_dir(), "the target's directory is created");

    // Backups: none; one taken (pending at first; a new snapshot named after it), found
    // by name and by volume, completed into the target.
    let backups = ops.call("GET", "/v1/backups", "", None).expect(200).json();
    assert_eq!(backups, json!([]));
    let labels = json!({"purpose": "api-test"});
    let backup = ops
        .call(
            "POST",
            "/v1/backups",
            "",
            Some(&json!({"volume": VOLUME, "labels": labels})),
        )
        .expect(201)
        .json();
    let backup_name = backup["name"].as_str().unwrap().to_owned();
    assert!(
        backup_name.starts_with(&format!("{VOLUME}-b-")),
        "{backup:#}"
    );
    assert_eq!(
        backup["spec"],
        json!({"volume": VOLUME, "snapshot": null, "target": "default", "labels": labels,
               "delete_requested": false}),
        "{backup:#}"
    );
    assert_eq!(backup["status"]["state"], "pending", "{backup:#}");
    let fetched = ops
        .call("GET", "/v1/backups/{name}", &backup_name, None)
        .expect(200)
        .json();
    assert_eq!(fetched["name"], backup["name"], "{fetched:#}");
    assert_eq!(fetched["spec"], backup["spec"], "{fetched:#}");
    let listed = ops.call("GET", "/v1/backups", "", None).expect(200).json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [backup_name.as_str()], "{listed:#}");
    let by_volume = api
        .call("GET", &format!("/v1/backups?volume={VOLUME}"), None)
        .expect(200)
        .json();
    assert_eq!(by_volume.as_array().unwrap().len(), 1, "{by_volume:#}");
    assert_eq!(by_volume[0]["name"], backup["name"], "{by_volume:#}");
    let other = api
        .call("GET", "/v1/backups?volume=no-such-vol", None)
        .expect(200)
        .json();
    assert_eq!(other, json!([]), "filtered by another volume");
    let backup_path = format!("/v1/backups/{backup_name}");
    let done = up.wait_get(&backup_path, "completed (or failed)", |b| {
        matches!(b["status"]["state"].as_str(), Some("completed" | "error"))
    });
    let status = &done["status"];
    assert_eq!(status["state"], "completed", "the backup failed: {done:#}");
    let url = status["url"]
        .as_str()
        .unwrap_or_else(|| panic!("a completed backup without a URL: {done:#}"));
    assert!(
        url.starts_with(&target_url)
            && url.contains(&format!("backup={backup_name}"))
            && url.contains(&format!("volume={VOLUME}")),
        "backup URL {url:?}: {done:#}"
    );
    assert_eq!(status["snapshot"], backup_name.as_str(), "{done:#}");
    assert_eq!(status["volume_size"], SIZE * 2, "the grown size: {done:#}");
    assert!(status["completed"].is_string(), "{done:#}");
    assert_eq!(done["spec"], backup["spec"], "{done:#}");
    let record = backup_dir.join(format!("volumes/{VOLUME}/backups/{backup_name}.json"));
    assert!(record.is_file(), "no backup record at {}", record.display());

    // A backup that cannot complete (its snapshot does not exist) fails; while it is
    // there, the target cannot be deleted. Deleting it removes only its object.
    let failing = api
        .call(
            "POST",
            "/v1/backups",
            Some(&json!({"volume": VOLUME, "snapshot": "no-such-snap"})),
        )
        .expect(201)
        .json();
    let failing_name = failing["name"].as_str().unwrap().to_owned();
    let failed = up.wait_get(&format!("/v1/backups/{failing_name}"), "failed", |b| {
        b["status"]["state"] == "error"
    });
    assert!(
        failed["status"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a failed backup says why: {failed:#}"
    );
    let busy = api
        .call("DELETE", "/v1/backup-targets/default", None)
        .expect(409);
    assert!(busy.message().contains(&failing_name), "{busy}");
    let deleting = api
        .call("DELETE", &format!("/v1/backups/{failing_name}"), None)
        .expect(202)
        .json();
    assert_eq!(deleting["spec"]["delete_requested"], true, "{deleting:#}");
    up.wait_get("/v1/backups", "without the failed backup", |list| {
        list.as_array()
            .is_some_and(|l| l.iter().all(|b| b["name"] != failing_name.as_str()))
    });

    // The completed backup deleted: accepted, then gone from the target, then the object.
    let deleting = ops
        .call("DELETE", "/v1/backups/{name}", &backup_name, None)
        .expect(202)
        .json();
    assert_eq!(deleting["name"], backup_name.as_str(), "{deleting:#}");
    assert_eq!(deleting["spec"]["delete_requested"], true, "{deleting:#}");
    let left = up.wait_get("/v1/backups", "empty", |list| list == &json!([]));
    assert_eq!(left, json!([]));
    let gone = api.call("GET", &backup_path, None).expect(404);
    assert!(gone.message().contains(&backup_name), "{gone}");
    api.call("DELETE", &backup_path, None).expect(404);
    assert!(
        !record.exists(),
        "the backup record is left in the target: {}",
        record.display()
    );

    // The target, with no backups left, is deleted.
    let deleted = ops
        .call("DELETE", "/v1/backup-targets/{name}", "default", None)
        .expect(204);
    assert!(deleted.body.is_empty(), "204 with a body: {deleted}");
    let targets = api
        .call("GET", "/v1/backup-targets", None)
        .expect(200)
        .json();
    assert_eq!(targets, json!([]));
    let gone = api
        .call("DELETE", "/v1/backup-targets/default", None)
        .expect(404);
    assert!(gone.message().contains("default"), "{gone}");

    // Detach: the engine stops, the endpoint goes.
    let detached = ops
        .call("POST", "/v1/volumes/{name}/detach", VOLUME, None)
        .expect(200)
        .json();
    assert!(detached["spec"]["attached_node"].is_null(), "{detached:#}");
    up.wait_volume(VOLUME, "detached without an endpoint", |v| {
        v["status"]["state"] == "detached" && v["status"]["endpoint"].is_null()
    });
    let engine = up.wait_get(&format!("/v1/engines/{engine_name}"), "stopped", |e| {
        e["status"]["state"] == "stopped"
    });
    assert!(
        engine["spec"]["node"].is_null() && engine["status"]["address"].is_null(),
        "a stopped engine has no node and no address: {engine:#}"
    );

    // Delete: gone, with its replica's data and process.
    let deleted = ops
        .call("DELETE", "/v1/volumes/{name}", VOLUME, None)
        .expect(204);
    assert!(deleted.body.is_empty(), "204 with a body: {deleted}");
    let gone = api
        .call("GET", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(404);
    assert!(gone.message().contains(VOLUME), "{gone}");
    assert!(api.volumes().is_empty(), "deleted volume still listed");
    assert!(
        !replica_dir.exists(),
        "replica data left: {}",
        replica_dir.display()
    );
    assert!(
        processes_mentioning(path_str(&replica_dir)).is_empty(),
        "the replica process outlived its volume"
    );
    // Its engine and replicas went with it.
    api.call("GET", &format!("/v1/engines/{engine_name}"), None)
        .expect(404);
    let engines = api.call("GET", "/v1/engines", None).expect(200).json();
    assert_eq!(engines, json!([]), "engines left");
    let replicas = api.call("GET", "/v1/replicas", None).expect(200).json();
    assert_eq!(replicas, json!([]), "replicas left");

    // Every documented operation was exercised, and nothing else.
    let exercised = ops.operations;
    let untested: Vec<_> = documented.difference(&exercised).collect();
    let undocumented: Vec<_> = exercised.difference(&documented).collect();
    up.stop();
    assert!(
        untested.is_empty() && undocumented.is_empty(),
        "documented but not tested here (add them to this test): {untested:?}; \
         tested but not documented: {undocumented:?}"
    );
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

#[test]
fn bad_requests_get_4xx_with_a_message_and_change_nothing() {
    let mut up = Up::start();
    let api = up.api.clone();
    api.create(VOLUME, 1);
    let settings = api.settings();
    let volumes = "/v1/volumes";
    let attach = format!("/v1/volumes/{VOLUME}/attach");
    let size = SIZE.to_string();
    let create = |rest: &str| format!(r#"{{"name":"bad-vol","size":{size}{rest}}}"#);
    let named = |name: &str| json!({"name": name, "size": SIZE}).to_string();
    let sized = |size: &str| format!(r#"{{"name":"bad-vol","size":{size}}}"#);

    // POST /v1/volumes: (body, what the message mentions); all 400.
    let bad_creates: Vec<(String, &str)> = vec![
        // Not JSON, or not an object.
        (r#"{"name":"bad-vol","size":4096"#.into(), "json"),
        ("hello".into(), "json"),
        (String::new(), ""),
        (format!("{} x", create("")), "trailing"),
        (format!("\u{feff}{}", create("")), ""),
        ("null".into(), ""),
        (r#""bad-vol""#.into(), ""),
        ("4096".into(), ""),
        ("true".into(), ""),
        // Wrong types.
        (r#"{"name":5,"size":4096}"#.into(), "name"),
        (r#"{"name":null,"size":4096}"#.into(), "name"),
        (sized(r#""4096""#), "size"),
        (sized("-4096"), "size"),
        (sized("4096.5"), "size"),
        (sized("null"), "size"),
        (sized("18446744073709551616"), "size"),
        (create(r#","replicas":"1""#), "replicas"),
        (create(r#","replicas":-1"#), "replicas"),
        (create(r#","replicas":true"#), "replicas"),
        (create(r#","node_selector":"a""#), "node_selector"),
        (create(r#","disk_selector":[1]"#), "disk_selector"),
        (create(r#","from_backup":5"#), "from_backup"),
        // Backups to restore from that are not backups, or cannot be read.
        (create(r#","from_backup":"not a url""#), "from_backup"),
        (
            create(r#","from_backup":"file:///nonexistent/target""#),
            "backup=NAME",
        ),
        (
            create(r#","from_backup":"file:///nonexistent/t?backup=b&volume=v""#),
            "from_backup",
        ),
        (
            create(r#","from_backup":"file:///t?backup=../x&volume=v""#),
            "backup",
        ),
        (
            create(r#","from_backup":"file:///etc/t?backup=b&volume=v""#),
            "--file-target-root",
        ),
        // Unknown, duplicate and missing fields.
        (create(r#","bogus":1"#), "bogus"),
        (create(r#","Name":"x""#), "Name"),
        (create(r#","spec":{}"#), "spec"),
        (create(r#","name":"other-vol""#), "duplicate"),
        ("{}".into(), "missing"),
        (r#"{"name":"bad-vol"}"#.into(), "size"),
        (format!(r#"{{"size":{size}}}"#), "name"),
        // Bad names.
        (named(""), "name"),
        (named("a/b"), "name"),
        (named("a\\b"), "name"),
        (named(".."), "name"),
        (named("a..b"), "name"),
        (named(".hidden"), "name"),
        (named("-dash"), "name"),
        (named("with space"), "name"),
        (named("tab\there"), "name"),
        (named("nul\u{0}here"), "name"),
        (named("ünïcödé"), "name"),
        (named(&"n".repeat(64)), "name"),
        // Bad sizes and replica counts.
        (sized("0"), "size"),
        (sized("4095"), "4096"),
        (sized("4097"), "4096"),
        (sized("1000000"), "4096"),
        (sized("18446744073709551615"), "4096"),
        (create(r#","replicas":0"#), "replicas"),
        (create(r#","replicas":17"#), "replicas"),
        (create(r#","replicas":1000000"#), "replicas"),
    ];
    // POST /v1/volumes/VOLUME/attach; all 400.
    let bad_attaches: Vec<(&str, &str)> = vec![
        (r#"{"node":"#, "json"),
        (r#"{"node":5}"#, "node"),
        (r#"{"node":["test-node"]}"#, "node"),
        (r#"{"bogus":1}"#, "bogus"),
        (r#"{"node":"no-such-node"}"#, "no-such-node"),
        (r#"{"node":""}"#, "node"),
        ("", ""),
        ("null", ""),
    ];
    // PUT /v1/settings/auto_salvage; all 400.
    let bad_sets: Vec<(&str, &str)> = vec![
        ("{}", "value"),
        (r#"{"value":true,"x":1}"#, "x"),
        (r#"{"value":"#, "json"),
        ("true", ""),
    ];

    // PUT /v1/backup-targets/bad-target: (body, what the message mentions); all 400.
    let backups = up.dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    std::os::unix::fs::symlink("/etc", backups.join("to-etc")).unwrap();
    let url = |rest: &str| format!(r#"{{"url":"file:///tmp/shorthorn-bad-target"{rest}}}"#);
    let bad_targets: Vec<(String, &str)> = vec![
        // Not JSON, or not an object.
        (r#"{"url":"#.into(), "json"),
        (
            r#"["file:///tmp/shorthorn-bad-target",60]"#.into(),
            "object",
        ),
        ("[]".into(), "object"),
        (r#""file:///tmp/shorthorn-bad-target""#.into(), "object"),
        ("null".into(), "object"),
        // Wrong types.
        (r#"{"url":5}"#.into(), "url"),
        (r#"{"url":null}"#.into(), "url"),
        (r#"{"url":["file:///tmp/x"]}"#.into(), "url"),
        (r#"{"url":{"path":"/tmp/x"}}"#.into(), "url"),
        (url(r#","poll_interval":"60""#), "poll_interval"),
        (url(r#","poll_interval":-1"#), "poll_interval"),
        (url(r#","poll_interval":1.5"#), "poll_interval"),
        (url(r#","poll_interval":true"#), "poll_interval"),
        (url(r#","poll_interval":[60]"#), "poll_interval"),
        (
            url(r#","poll_interval":18446744073709551616"#),
            "poll_interval",
        ),
        // Unknown, duplicate and missing fields.
        (url(r#","bogus":1"#), "bogus"),
        (url(r#","URL":"file:///tmp/y""#), "URL"),
        (url(r#","name":"other""#), "unknown field `name`"),
        (url(r#","url":"file:///tmp/y""#), "duplicate"),
        ("{}".into(), "url"),
        (r#"{"poll_interval":60}"#.into(), "url"),
        // Bad URLs.
        (r#"{"url":"not a url"}"#.into(), "not a url"),
        (r#"{"url":""}"#.into(), "not a url"),
        (r#"{"url":"/tmp/backups"}"#.into(), "not a url"),
        (r#"{"url":"ftp://x"}"#.into(), "ftp"),
        (r#"{"url":"http://example.com/backups"}"#.into(), "http"),
        (r#"{"url":"file://relative/path"}"#.into(), "file:///"),
        (r#"{"url":"s3://"}"#.into(), "bucket"),
        (r#"{"url":"nfs:///export"}"#.into(), "host"),
        // Targets this node's policy does not allow: outside its file target roots
        // (DATA_DIR/backups by default), through a symlink out of one, or an NFS host
        // not listed.
        (
            r#"{"url":"file:///etc/shorthorn-target"}"#.into(),
            "--file-target-root",
        ),
        (
            json!({ "url": format!("file://{}/../escape", path_str(&backups)) }).to_string(),
            "--file-target-root",
        ),
        (
            json!({ "url": format!("file://{}/to-etc/x", path_str(&backups)) }).to_string(),
            "--file-target-root",
        ),
        (
            r#"{"url":"nfs://nfs.example/export"}"#.into(),
            "--nfs-target-host",
        ),
        (
            json!({ "url": format!("file:///tmp/{}", "a".repeat(2000)) }).to_string(),
            "longer than 1024",
        ),
        // Bad poll intervals.
        (url(r#","poll_interval":0"#), "poll_interval"),
        (url(r#","poll_interval":86401"#), "poll_interval"),
        (url(r#","poll_interval":100000"#), "poll_interval"),
        (
            url(r#","poll_interval":18446744073709551615"#),
            "poll_interval",
        ),
    ];
    // PUT /v1/backup-targets/NAME with a valid body: bad names; all 400.
    let bad_target_names: Vec<(String, &str)> = vec![
        (".hidden".into(), ".hidden"),
        ("-dash".into(), "-dash"),
        ("a..b".into(), "a..b"),
        ("with%20space".into(), "with space"),
        ("bad%2Fname".into(), "separator"),
        ("%C3%BCn%C3%AF".into(), "name"),
        ("n".repeat(64), "63"),
    ];
    // POST /v1/backups: (body, what the message mentions); all 400.
    let backup = |rest: &str| format!(r#"{{"volume":"{VOLUME}"{rest}}}"#);
    let for_volume = |name: &str| json!({ "volume": name }).to_string();
    let bad_backups: Vec<(String, &str)> = vec![
        // Not JSON, or not an object.
        (r#"{"volume":"#.into(), "json"),
        (format!(r#"["{VOLUME}"]"#), "object"),
        (format!(r#"["{VOLUME}",null,"default",{{}}]"#), "object"),
        (format!(r#""{VOLUME}""#), "object"),
        // Wrong types.
        (r#"{"volume":5}"#.into(), "volume"),
        (r#"{"volume":null}"#.into(), "volume"),
        (format!(r#"{{"volume":["{VOLUME}"]}}"#), "volume"),
        (backup(r#","snapshot":5"#), "snapshot"),
        (backup(r#","snapshot":["s"]"#), "snapshot"),
        (backup(r#","target":true"#), "target"),
        (backup(r#","target":{"name":"default"}"#), "target"),
        (backup(r#","labels":["a"]"#), "labels"),
        (backup(r#","labels":"a=b""#), "labels"),
        (backup(r#","labels":{"a":1}"#), "labels"),
        (backup(r#","labels":{"a":null}"#), "labels"),
        // Unknown, duplicate and missing fields.
        (backup(r#","bogus":1"#), "bogus"),
        (backup(r#","Volume":"x""#), "Volume"),
        (backup(r#","name":"my-backup""#), "unknown field `name`"),
        (backup(r#","url":"file:///tmp/x""#), "unknown field `url`"),
        (backup(r#","volume":"other-vol""#), "duplicate"),
        ("{}".into(), "volume"),
        (r#"{"snapshot":"s","target":"default"}"#.into(), "volume"),
        // Bad volume names.
        (for_volume(""), "name"),
        (for_volume("a/b"), "name"),
        (for_volume(".."), "name"),
        (for_volume(".hidden"), "name"),
        (for_volume("-dash"), "name"),
        (for_volume("with space"), "name"),
        (for_volume("nul\u{0}here"), "name"),
        (for_volume("ünïcödé"), "name"),
        (for_volume(&"n".repeat(64)), "name"),
        // Bad snapshot and target names.
        (backup(r#","snapshot":"""#), "snapshot"),
        (backup(r#","snapshot":"a/b""#), "snapshot"),
        (backup(r#","snapshot":"..""#), "snapshot"),
        (backup(r#","target":"""#), "target"),
        (backup(r#","target":"a/b""#), "target"),
        (backup(r#","target":"file:///tmp/x""#), "target"),
        (backup(r#","target":".hidden""#), "target"),
    ];

    let mut cases = Vec::new();
    for (body, mentions) in &bad_creates {
        cases.push(case("POST", volumes, body, 400, mentions));
    }
    for (body, mentions) in bad_attaches {
        cases.push(case("POST", &attach, body, 400, mentions));
    }
    for (body, mentions) in bad_sets {
        cases.push(case(
            "PUT",
            "/v1/settings/auto_salvage",
            body,
            400,
            mentions,
        ));
    }
    let target_path = "/v1/backup-targets/bad-target";
    for (body, mentions) in &bad_targets {
        cases.push(case("PUT", target_path, body, 400, mentions));
    }
    let valid_target = url("");
    for (name, mentions) in &bad_target_names {
        cases.push(case(
            "PUT",
            &format!("/v1/backup-targets/{name}"),
            &valid_target,
            400,
            mentions,
        ));
    }
    for (body, mentions) in &bad_backups {
        cases.push(case("POST", "/v1/backups", body, 400, mentions));
    }
    // A backup of an unknown volume, or of one that is not attached (whatever the
    // target; an unknown target of an attached volume is checked below).
    cases.push(case(
        "POST",
        "/v1/backups",
        &for_volume("no-such-vol"),
        404,
        "no-such-vol",
    ));
    for body in [
        for_volume(VOLUME),
        backup(r#","snapshot":"snap-1","target":"default","labels":{"a":"b"}"#),
    ] {
        cases.push(case("POST", "/v1/backups", &body, 409, "not attached"));
    }
    // Not valid UTF-8; no or another content type.
    cases.push(Case {
        body: b"{\"name\":\"bad\xff\",\"size\":4096}".to_vec(),
        ..case("POST", volumes, "", 400, "")
    });
    cases.push(Case {
        body: b"{\"volume\":\"bad\xff\"}".to_vec(),
        ..case("POST", "/v1/backups", "", 400, "")
    });
    cases.push(Case {
        body: b"{\"url\":\"file:///tmp/bad\xff\"}".to_vec(),
        ..case("PUT", target_path, "", 400, "")
    });
    let no_type = [
        ("POST", volumes, create("")),
        ("POST", attach.as_str(), "{}".into()),
        (
            "PUT",
            "/v1/settings/auto_salvage",
            r#"{"value":true}"#.into(),
        ),
        ("PUT", target_path, valid_target.clone()),
        ("POST", "/v1/backups", for_volume(VOLUME)),
    ];
    for (method, path, body) in &no_type {
        for content_type in [None, Some("text/plain")] {
            cases.push(Case {
                content_type,
                ..case(method, path, body, 400, "content-type")
            });
        }
    }
    // An existing volume.
    let again = json!({"name": VOLUME, "size": SIZE}).to_string();
    let other = json!({"name": VOLUME, "size": 2 * SIZE, "replicas": 2}).to_string();
    cases.push(case("POST", volumes, &again, 409, VOLUME));
    cases.push(case("POST", volumes, &other, 409, VOLUME));
    // Node fields: names' rule for the zone and tags, plain absolute disk paths.
    let node_path = format!("/v1/nodes/{NODE}");
    let long_zone = json!({"zone": "z".repeat(100_000)}).to_string();
    let many_tags =
        json!({"tags": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()}).to_string();
    let bad_disk = |path: &str| {
        json!({"disks": [{"name": "d", "path": path, "allow_scheduling": true}]}).to_string()
    };
    let long_path = format!("/{}", "p".repeat(5000));
    let bad_nodes: Vec<(String, &str)> = vec![
        (long_zone, "zone"),
        (json!({"zone": "a/b"}).to_string(), "zone"),
        (json!({"tags": ["a/b"]}).to_string(), "tags"),
        (json!({"tags": ["\u{0}"]}).to_string(), "tags"),
        (json!({"tags": ["x", "x"]}).to_string(), "twice"),
        (many_tags, "tags"),
        (bad_disk("/"), "root"),
        (bad_disk("/srv/../etc"), ".."),
        (bad_disk("/srv/\u{0}x"), "control"),
        (bad_disk(&long_path), "4096"),
    ];
    for (body, mentions) in &bad_nodes {
        cases.push(case("PUT", &node_path, body, 400, mentions));
    }
    // Every other field of every body: a length limit, a character rule, a range; the
    // message names the field.
    let names_33: Vec<String> = (0..33).map(|i| format!("n{i}")).collect();
    let labels_33: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let job = |spec: Value| json!({"name": "bad-job", "spec": spec}).to_string();
    let spec = |field: &str, value: Value| {
        let mut spec = json!({"task": "snapshot", "cron": "0 * * * *", "retain": 1});
        spec[field] = value;
        spec
    };
    let disk = |fields: Value| {
        let mut disk = json!({"name": "d", "path": "/srv/d", "allow_scheduling": true});
        for (key, value) in fields.as_object().unwrap() {
            disk[key] = value.clone();
        }
        json!({ "disks": [disk] }).to_string()
    };
    let many_disks: Vec<Value> = (0..65)
        .map(|i| json!({"name": format!("d{i}"), "path": format!("/srv/d{i}"), "allow_scheduling": true}))
        .collect();
    let jobs_path = format!("/v1/volumes/{VOLUME}/recurring-jobs");
    let expand_path = format!("/v1/volumes/{VOLUME}/expand");
    let every_field: Vec<(&str, &str, String, &str)> = vec![
        (
            "POST",
            volumes,
            create(r#","node_selector":["a/b"]"#),
            "node_selector[0]",
        ),
        (
            "POST",
            volumes,
            create(r#","disk_selector":["ssd","ssd"]"#),
            "twice",
        ),
        (
            "POST",
            volumes,
            json!({"name": "bad-vol", "size": SIZE, "node_selector": names_33}).to_string(),
            "node_selector",
        ),
        (
            "POST",
            volumes,
            create(r#","recurring_jobs":[""]"#),
            "recurring_jobs[0]",
        ),
        (
            "POST",
            volumes,
            create(r#","recurring_job_groups":["-g"]"#),
            "recurring_job_groups[0]",
        ),
        (
            "POST",
            volumes,
            create(r#","from_backup":"file:///t?backup=a b""#),
            "from_backup",
        ),
        (
            "POST",
            volumes,
            create(r#","from_backup":"""#),
            "from_backup",
        ),
        (
            "PUT",
            &jobs_path,
            r#"{"jobs":["a\u0000"]}"#.into(),
            "jobs[0]",
        ),
        (
            "PUT",
            &jobs_path,
            json!({"groups": names_33}).to_string(),
            "groups",
        ),
        ("POST", &expand_path, r#"{"size":4097}"#.into(), "size"),
        ("POST", &expand_path, r#"{"size":0}"#.into(), "size"),
        ("POST", &attach, r#"{"node":"a/b"}"#.into(), "node"),
        (
            "POST",
            "/v1/backups",
            backup(r#","labels":{"a/b":"v"}"#),
            "labels",
        ),
        (
            "POST",
            "/v1/backups",
            backup(r#","labels":{"k":"line\nbreak"}"#),
            "labels.k",
        ),
        (
            "POST",
            "/v1/backups",
            backup(&format!(r#","labels":{{"k":"{}"}}"#, "v".repeat(257))),
            "labels.k",
        ),
        (
            "POST",
            "/v1/backups",
            json!({"volume": VOLUME, "labels": labels_33}).to_string(),
            "labels",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("retain", json!(0))),
            "spec.retain",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("retain", json!(1001))),
            "spec.retain",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("cron", json!("* ".repeat(100)))),
            "spec.cron",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("cron", json!("0 * * *\n *"))),
            "spec.cron",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("groups", json!(["a/b"]))),
            "spec.groups[0]",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("target", json!("a b"))),
            "spec.target",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("labels", json!({"k": "\u{7}"}))),
            "spec.labels.k",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            json!({"name": "a/b", "spec": spec("retain", json!(1))}).to_string(),
            "name",
        ),
        (
            "PUT",
            &node_path,
            json!({ "disks": many_disks }).to_string(),
            "disks",
        ),
        (
            "PUT",
            &node_path,
            disk(json!({"tags": ["a b"]})),
            "disks[0].tags[0]",
        ),
        (
            "PUT",
            &node_path,
            disk(json!({"reserved": 1u64 << 61})),
            "disks[0].reserved",
        ),
        (
            "PUT",
            &node_path,
            disk(json!({"name": ""})),
            "disks[0].name",
        ),
        (
            "PUT",
            "/v1/settings/over_provisioning_percentage",
            r#"{"value":10001}"#.into(),
            "over_provisioning_percentage",
        ),
        (
            "PUT",
            "/v1/settings/engine_replica_timeout",
            r#"{"value":0}"#.into(),
            "engine_replica_timeout",
        ),
        (
            "PUT",
            "/v1/settings/engine_replica_timeout",
            r#"{"value":301}"#.into(),
            "engine_replica_timeout",
        ),
        (
            "PUT",
            "/v1/settings/slow_replica_ratio",
            r#"{"value":1001}"#.into(),
            "slow_replica_ratio",
        ),
        (
            "PUT",
            "/v1/settings/slow_replica_window",
            r#"{"value":0}"#.into(),
            "slow_replica_window",
        ),
    ];
    for (method, path, body, mentions) in &every_field {
        cases.push(case(method, path, body, 400, mentions));
    }
    // Unknown volumes, endpoints and settings.
    let unknown = [
        ("GET", "/v1/volumes/no-such-vol", "", "no-such-vol"),
        ("DELETE", "/v1/volumes/no-such-vol", "", "no-such-vol"),
        (
            "POST",
            "/v1/volumes/no-such-vol/attach",
            "{}",
            "no-such-vol",
        ),
        ("POST", "/v1/volumes/no-such-vol/detach", "", "no-such-vol"),
        ("GET", "/v1/volumes/bad%2Fname", "", ""),
        ("GET", "/v1/no-such-endpoint", "", ""),
        (
            "PUT",
            "/v1/settings/no_such_setting",
            r#"{"value":1}"#,
            "no_such_setting",
        ),
        (
            "PUT",
            "/v1/settings/Auto_Salvage",
            r#"{"value":true}"#,
            "Auto_Salvage",
        ),
        ("GET", "/v1/engines/no-such-vol-e", "", "no-such-vol-e"),
        (
            "DELETE",
            "/v1/backup-targets/no-such-target",
            "",
            "no-such-target",
        ),
        ("GET", "/v1/backups/no-such-backup", "", "no-such-backup"),
        ("DELETE", "/v1/backups/no-such-backup", "", "no-such-backup"),
    ];
    for (method, path, body, mentions) in unknown {
        cases.push(case(method, path, body, 404, mentions));
    }
    // Setting values of the wrong type.
    for (name, kind) in SETTINGS {
        let wrong: &[&str] = match kind {
            Kind::Bool => &["1", "0", r#""true""#, "null", "[]", "{}"],
            Kind::Unsigned => &[
                "true",
                r#""1""#,
                "-1",
                "1.5",
                "null",
                "[1]",
                "18446744073709551616",
            ],
        };
        for value in wrong {
            cases.push(case(
                "PUT",
                &format!("/v1/settings/{name}"),
                &format!(r#"{{"value":{value}}}"#),
                400,
                name,
            ));
        }
    }

    let mut problems: Vec<String> = cases.iter().filter_map(|c| c.check(&api)).collect();

    // None of that changed anything.
    if api.settings() != settings {
        problems.push(format!(
            "bad requests changed settings: {} -> {}",
            settings,
            api.settings()
        ));
    }
    let names = api.volume_names();
    if names != BTreeSet::from([VOLUME.to_owned()]) {
        problems.push(format!("bad requests created volumes: {names:?}"));
    }
    let volume = api
        .call("GET", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(200)
        .json();
    if !volume["spec"]["attached_node"].is_null() {
        problems.push(format!("bad attach requests attached it: {volume:#}"));
    }

    // Attached, a backup still needs a target that exists (`default` unless named).
    api.call("POST", &attach, Some(&json!({}))).expect(200);
    let unknown_targets = [
        (for_volume(VOLUME), "default"),
        (backup(r#","target":"no-such-target""#), "no-such-target"),
        (
            backup(r#","target":"Default","snapshot":"snap-1""#),
            "Default",
        ),
    ];
    for (body, mentions) in &unknown_targets {
        problems.extend(case("POST", "/v1/backups", body, 404, mentions).check(&api));
    }
    let targets = api
        .call("GET", "/v1/backup-targets", None)
        .expect(200)
        .json();
    if targets != json!([]) {
        problems.push(format!("bad requests set backup targets: {targets:#}"));
    }
    let backups = api.call("GET", "/v1/backups", None).expect(200).json();
    if backups != json!([]) {
        problems.push(format!("bad requests created backups: {backups:#}"));
    }

    // An attached volume cannot be deleted; detached, it can.
    let refused = api
        .call("DELETE", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(409);
    assert!(
        refused.message().contains("detach"),
        "the message says what to do: {refused}"
    );
    assert_eq!(api.volume_names(), BTreeSet::from([VOLUME.to_owned()]));
    api.call("POST", &format!("/v1/volumes/{VOLUME}/detach"), None)
        .expect(200);
    api.call("DELETE", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(204);
    assert!(api.volumes().is_empty());

    up.stop();
    assert!(
        problems.is_empty(),
        "{} bad request(s) handled wrongly:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn json_arrays_are_not_accepted_as_objects() {
    let mut up = Up::start();
    let api = up.api.clone();
    api.create(VOLUME, 1);
    let settings = api.settings();
    assert_eq!(settings["auto_salvage"], true);

    // Each is the positional form of a valid object body.
    let cases = [
        case(
            "POST",
            "/v1/volumes",
            &format!(r#"["array-vol",{SIZE},1]"#),
            400,
            "",
        ),
        case(
            "POST",
            &format!("/v1/volumes/{VOLUME}/attach"),
            "[]",
            400,
            "",
        ),
        case(
            "POST",
            &format!("/v1/volumes/{VOLUME}/attach"),
            &format!(r#"["{NODE}"]"#),
            400,
            "",
        ),
        case("PUT", "/v1/settings/auto_salvage", "[false]", 400, ""),
        case(
            "PUT",
            "/v1/backup-targets/default",
            r#"["file:///tmp/shorthorn-array-target",60]"#,
            400,
            "",
        ),
        case(
            "PUT",
            "/v1/backup-targets/default",
            r#"["file:///tmp/shorthorn-array-target"]"#,
            400,
            "",
        ),
        case("POST", "/v1/backups", &format!(r#"["{VOLUME}"]"#), 400, ""),
        case(
            "POST",
            "/v1/backups",
            &format!(r#"["{VOLUME}",null,"default",{{}}]"#),
            400,
            "",
        ),
    ];
    let mut problems: Vec<String> = cases.iter().filter_map(|c| c.check(&api)).collect();
    let names = api.volume_names();
    if names != BTreeSet::from([VOLUME.to_owned()]) {
        problems.push(format!("array bodies created volumes: {names:?}"));
    }
    let targets = api
        .call("GET", "/v1/backup-targets", None)
        .expect(200)
        .json();
    if targets != json!([]) {
        problems.push(format!("array bodies set backup targets: {targets:#}"));
    }
    let backups = api.call("GET", "/v1/backups", None).expect(200).json();
    if backups != json!([]) {
        problems.push(format!("array bodies created backups: {backups:#}"));
    }
    if api.settings() != settings {
        problems.push(format!(
            "array bodies changed settings: {} -> {}",
            settings,
            api.settings()
        ));
    }

    // Clean up whatever they did.
    for name in api.volume_names() {
        api.call("POST", &format!("/v1/volumes/{name}/detach"), None)
            .expect(200);
        api.call("DELETE", &format!("/v1/volumes/{name}"), None)
            .expect(204);
    }
    up.stop();
    assert!(
        problems.is_empty(),
        "{} array body(ies) accepted:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The schemathesis command, or a failure with an install hint.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for program in ["schemathesis", "st"] {
            let candidate = dir.join(program);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "`schemathesis` is not installed; this test runs it against the API. Install it \
         with `python3 -m pip install schemathesis` (scripts/setup.sh does)."
    );
}

/// What one schemathesis run over one document found.
struct SchemathesisRun {
    /// The document's path on the API.
    document: &'static str,
    /// Its output and exit code.
    outcome: crate::common::Outcome,
}

/// Runs schemathesis over the document at `document`, calling with `token`, and
/// checks it tested every operation the document has.
fn run_schemathesis(up: &Up, document: &'static str, token: &str) -> SchemathesisRun {
    let url = up.url();
    let report_dir = up
        .dir
        .path()
        .join(format!("schemathesis{}", document.replace('/', "-")));
    let mut command = Command::new(schemathesis());
    command
        .current_dir(up.dir.path())
        .args([
            "run",
            &format!("{url}{document}"),
            "--url",
            &url,
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            SCHEMATHESIS_EXAMPLES,
            "--request-timeout",
            "60",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            path_str(&report_dir),
        ])
        .env("NO_COLOR", "1");
    let outcome = run_command(command, SCHEMATHESIS_TIMEOUT);
    eprintln!(
        "schemathesis over {document} ran for {:.1?}:\n{}",
        outcome.elapsed,
        outcome.all()
    );
    let finished = outcome.code.is_some_and(|c| c == 0 || c == 1);
    assert!(
        finished,
        "schemathesis did not run over {document} ({:?}):\n{}",
        outcome.code,
        outcome.all()
    );
    // It tested every documented operation.
    let doc = up
        .api
        .send("GET", document, Auth::None, None, None)
        .expect(200)
        .json();
    let junit: String = std::fs::read_dir(&report_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".xml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for (path, method) in documented_operations(&doc) {
        let testcase = format!("<testcase name=\"{} {path}\"", method.to_ascii_uppercase());
        assert!(
            junit.contains(&testcase),
            "schemathesis did not test {method} {path}:\n{junit}"
        );
    }
    SchemathesisRun { document, outcome }
}

#[test]
fn schemathesis_finds_no_server_errors() {
    let mut up = Up::start();
    let api = up.api.clone();
    // Volumes it creates get one replica each.
    api.set("default_replica_count", json!(1));
    let node_token = std::fs::read_to_string(up.data_dir.join("node-token")).unwrap();
    let runs = [
        run_schemathesis(&up, OPENAPI, &api.token),
        run_schemathesis(&up, AGENT_OPENAPI, node_token.trim()),
    ];

    // The manager survived it.
    let child = up.child.as_mut().unwrap();
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "shorthorn up died under schemathesis:\n{}",
        up.log_tail(60)
    );
    let log = up.log();
    assert!(
        !log.contains("panicked"),
        "a panic under schemathesis:\n{log}"
    );

    // Whatever it created can be detached and deleted.
    let created = api.volume_names();
    for name in &created {
        let path = format!("/v1/volumes/{}", urlencode(name));
        api.call("POST", &format!("{path}/detach"), None)
            .expect(200);
        api.call("DELETE", &path, None).expect(204);
    }
    assert!(api.volumes().is_empty(), "volumes left after deleting all");
    eprintln!(
        "deleted the {} volume(s) schemathesis created",
        created.len()
    );
    up.stop();

    for run in &runs {
        assert_eq!(
            run.outcome.code,
            Some(0),
            "schemathesis found failures over {} (see above for each request and response):\n{}",
            run.document,
            run.outcome.all()
        );
    }
}

/// Percent-encodes everything but unreserved characters, for a path segment.
fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
