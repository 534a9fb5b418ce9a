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
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{MIB, path_str, processes_mentioning, run_command};
use crate::http::Response;
use crate::upnode::{Api, Auth, Node};

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
/// How long a volume may take to reach a state (replica started, engine serving, …).
const STATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time limit of one HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Time limit of the whole schemathesis run.
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(300);
/// Test cases schemathesis generates per operation and phase.
const SCHEMATHESIS_EXAMPLES: &str = "50";
/// Every setting, with the JSON type of its value.
const SETTINGS: [(&str, Kind); 14] = [
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
    (
        "default_data_locality",
        Kind::Mode(&["disabled", "best-effort"]),
    ),
    ("backup_poll_interval", Kind::Unsigned),
];

/// A setting's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Unsigned,
    /// A string, one of these.
    Mode(&'static [&'static str]),
}

impl Api {
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
    /// full disk, set by [`Node::start_with`]).
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

/// Whether the document says `method path` takes the token: all but those it marks
/// `security: []` (the web UI's login session).
fn needs_token(doc: &Value, path: &str, method: &str) -> bool {
    doc["paths"][path][method]["security"] != json!([])
}

/// `up` as these tests use it: node [`NODE`], backup targets under DIR/backups.
fn start_up() -> Node {
    Node::start_with(NODE, |dir| {
        vec![
            "--file-target-root".to_owned(),
            path_str(&dir.join("backups")).to_owned(),
        ]
    })
}

impl Node {
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
