//! Shared by the backup tests: a real S3-compatible server (`s3s-fs`, installed by
//! scripts/setup.sh) on a free loopback port with its own credentials, `shorthorn backup`
//! runs with those credentials in the environment, volumes filled with known content,
//! and a one-replica engine serving a restored directory.
//!
//! Everything started here is killed on drop, even when the test fails.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::{
    BIN, COMMAND_TIMEOUT, Outcome, path_str, run_command, run_ok, sha256, terminate,
};

/// Credentials the test server accepts.
pub const ACCESS_KEY: &str = "shorthorn-test";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "shorthorn-test-secret";
/// The bucket every test server has.
pub const BUCKET: &str = "backups";
/// Lock time-to-live the tests give every command, so a killed holder's lock expires
/// quickly.
pub const LOCK_TTL: &str = "3s";

/// Finds the `s3s-fs` binary: on PATH or in cargo's bin directory.
pub fn s3s_fs() -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`s3s-fs` is not installed; the backup tests run against this real S3 server. \
                 Install it with `cargo install s3s-fs --version 0.14.1 --features binary --locked` \
                 (scripts/setup.sh does)."
            )
        })
}

/// An `s3s-fs` server on a free loopback port, storing into a temporary directory.
pub struct S3Server {
    /// The endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Where it keeps objects: `<root>/<bucket>/<key>`.
    pub root: TempDir,
    child: Child,
}

impl S3Server {
    /// Starts a server with bucket [`BUCKET`] and waits until it accepts connections.
    pub fn start() -> S3Server {
        let binary = s3s_fs();
        for _ in 0..4 {
            let root = tempfile::Builder::new().prefix("shs3").tempdir().unwrap();
            std::fs::create_dir(root.path().join(BUCKET)).unwrap();
            let port = crate::common::free_port_range(1);
            let child = Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(root.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting s3s-fs");
            let mut server = S3Server {
                endpoint: format!("http://127.0.0.1:{port}"),
                root,
                child,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Lost the port to another process, or slow to start: try again.
            let _ = server.child.kill();
        }
        panic!("s3s-fs did not start on any of 4 ports");
    }

    /// A target URL under `prefix` in the test bucket.
    pub fn target(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}@us-east-1/{prefix}")
    }

    /// The environment `shorthorn backup` needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
        ]
    }

    /// The directory holding the objects under `prefix`.
    pub fn objects(&self, prefix: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(prefix)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `shorthorn` command with a clean environment plus `env`.
pub fn command(args: &[&str], env: &[(String, String)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("SHORTHORN_CRASH_AT")
        .env_remove("SHORTHORN_ENGINE")
        .env_remove("RUST_LOG")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINTS")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

/// Runs `shorthorn ARGS` with `env` (bounded); it must not panic.
pub fn shorthorn_env(args: &[&str], env: &[(String, String)]) -> Outcome {
    let outcome = run_command(command(args, env), COMMAND_TIMEOUT);
    assert!(
        !outcome.stderr.contains("panicked"),
        "shorthorn {args:?} panicked: {outcome:?}"
    );
    outcome
}

/// Runs `shorthorn ARGS` with `env`, which must succeed; returns stdout.
pub fn shorthorn_env_ok(args: &[&str], env: &[(String, String)]) -> String {
    let outcome = shorthorn_env(args, env);
    assert!(outcome.success(), "shorthorn {args:?} failed: {outcome:?}");
    outcome.stdout
}

/// `backup create SNAPSHOT --target TARGET` of the engine's volume; returns the URL.
pub fn backup_create(
    engine: &str,
    snapshot: &str,
    target: &str,
    env: &[(String, String)],
    extra: &[&str],
) -> String {
    let mut args = vec![
        "--engine",
        engine,
        "backup",
        "create",
        snapshot,
        "--target",
        target,
        "--lock-ttl",
        LOCK_TTL,
    ];
    args.extend_from_slice(extra);
    let url = shorthorn_env_ok(&args, env).trim().to_string();
    assert!(url.contains("?backup=backup-"), "not a backup URL: {url:?}");
    url
}

/// `backup restore URL --to DIR`; returns its summary line's `key=value` fields.
pub fn backup_restore(url: &str, dir: &Path, env: &[(String, String)]) -> Vec<(String, String)> {
    let out = shorthorn_env_ok(
        &[
            "backup",
            "restore",
            url,
            "--to",
            path_str(dir),
            "--lock-ttl",
            LOCK_TTL,
        ],
        env,
    );
    fields(&out)
}

/// The `key=value` fields of a summary line.
pub fn fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of field `key`, parsed as a number.
pub fn field(fields: &[(String, String)], key: &str) -> u64 {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key}= in {fields:?}"))
        .1
        .parse()
        .unwrap()
}

/// sha256 of everything an NBD export holds, read through qemu-img.
pub fn export_sha(uri: &str, scratch: &Path) -> String {
    let file = scratch.join(format!("export-{}.img", crate::common::random_u64()));
    run_ok(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", uri, path_str(&file)],
    );
    let sum = sha256(&file);
    let _ = std::fs::remove_file(&file);
    sum
}

/// sha256 of a replica directory's content (`shorthorn store export`; no server may use
/// the directory).
pub fn dir_sha(dir: &Path, scratch: &Path) -> String {
    let file = scratch.join(format!("dir-{}.img", crate::common::random_u64()));
    crate::common::shorthorn_ok(&["store", "export", path_str(dir), path_str(&file)]);
    let sum = sha256(&file);
    let _ = std::fs::remove_file(&file);
    sum
}

/// The backup names a `backup ls --json` lists.
pub fn listed(target: &str, volume: &str, env: &[(String, String)]) -> Vec<String> {
    let out = shorthorn_env_ok(&["backup", "ls", "--target", target, volume, "--json"], env);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// The `backup=` name of a backup URL.
pub fn backup_name(url: &str) -> String {
    let (_, rest) = url.split_once("backup=").unwrap();
    rest.split('&').next().unwrap().to_string()
}

/// The block hashes stored for `volume` under a target directory (`objects`).
pub fn stored_blocks(objects: &Path, volume: &str) -> BTreeSet<String> {
    files_under(&objects.join(format!("volumes/{volume}/blocks")))
        .iter()
        .filter_map(|f| f.rsplit('/').next()?.strip_suffix(".blk"))
        .map(str::to_string)
        .collect()
}

/// The block hashes backup `name` of `volume` references, read from its record file.
pub fn referenced_blocks(objects: &Path, volume: &str, name: &str) -> BTreeSet<String> {
    let record = objects.join(format!("volumes/{volume}/backups/{name}.json"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    record["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["hash"].as_str().unwrap().to_string())
        .collect()
}

/// Files under `dir`, recursively, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A one-replica engine serving a replica directory (a restored backup) over NBD.
pub struct Served {
    /// The NBD URI.
    pub uri: String,
    replica: Child,
    engine: Child,
}

impl Served {
    /// Serves `dir` (volume `volume` of `size` bytes) with a replica and an engine on
    /// free ports; waits until the NBD export answers.
    pub fn start(dir: &Path, volume: &str, size: u64) -> Served {
        let base = crate::common::free_port_range(4);
        let (replica_port, engine_port, nbd_port) = (base, base + 2, base + 3);
        let spawn = |args: &[String]| {
            Command::new(BIN)
                .args(args)
                .env_remove("SHORTHORN_CRASH_AT")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let size = size.to_string();
        let replica = spawn(&[
            "replica".into(),
            path_str(dir).into(),
            "--size".into(),
            size.clone(),
            "--volume".into(),
            volume.into(),
            "--listen".into(),
            format!("127.0.0.1:{replica_port}"),
        ]);
        wait_port(replica_port + 1);
        let engine = spawn(&[
            "engine".into(),
            volume.into(),
            "--size".into(),
            size,
            "--listen".into(),
            format!("127.0.0.1:{engine_port}"),
            "--frontend".into(),
            "nbd".into(),
            "--frontend-listen".into(),
            format!("127.0.0.1:{nbd_port}"),
            "--replica".into(),
            format!("tcp://127.0.0.1:{replica_port}"),
        ]);
        let served = Served {
            uri: format!("nbd://127.0.0.1:{nbd_port}/{volume}"),
            replica,
            engine,
        };
        wait_port(nbd_port);
        served
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        terminate(&mut self.engine, Duration::from_secs(20));
        terminate(&mut self.replica, Duration::from_secs(20));
    }
}

/// Waits (at most 30 s) until something listens on 127.0.0.1:`port`.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
