//! Shared by the manager tests: a `shorthorn up` node in a temporary data directory,
//! driven through the `shorthorn` client commands, stopped on drop with everything it
//! started.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::{self, BIN, path_str, processes_mentioning, run_command, terminate};

/// A `shorthorn up` node in a temporary data directory; stopped on drop, and anything
/// it started is killed.
pub struct Node {
    /// Holds the data directory and the log.
    pub dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Node {
    pub fn start() -> Node {
        let dir = tempfile::Builder::new().prefix("shup").tempdir().unwrap();
        let port = common::free_port_range(1);
        let mut node = Node {
            dir,
            port,
            child: None,
        };
        node.restart();
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `up` (again) and waits until its API answers.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("up.log")).unwrap();
        let child = Command::new(BIN)
            .args(["up", "--data-dir", path_str(&self.data_dir())])
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--node",
                "node-1",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.cli(&["volume", "ls"]).success() {
            assert!(
                Instant::now() < deadline,
                "up did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops `up` with SIGTERM; it stops its engines and replicas.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = terminate(&mut child, Duration::from_secs(60));
            assert!(
                status.is_some_and(|s| s.success()),
                "up stopped with {status:?}"
            );
        }
        let left = processes_mentioning(path_str(self.dir.path()));
        assert!(left.is_empty(), "processes left behind: {left:?}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> common::Outcome {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--data-dir", path_str(&self.data_dir())])
            .env_remove("SHORTHORN_URL")
            .env_remove("SHORTHORN_TOKEN");
        run_command(command, Duration::from_secs(180))
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let outcome = self.cli(args);
        assert!(outcome.success(), "{args:?}: {outcome:?}\n{}", self.log());
        outcome.stdout
    }

    /// Creates volume `name` of `size` (e.g. "32M") with `replicas` replicas, attaches it
    /// here and waits until it is healthy; returns its NBD URI.
    pub fn create_attached(&self, name: &str, size: &str, replicas: usize) -> String {
        let replicas = replicas.to_string();
        self.cli_ok(&[
            "volume",
            "create",
            name,
            "--size",
            size,
            "--replicas",
            &replicas,
        ]);
        let uri = self.cli_ok(&["volume", "attach", name]).trim().to_string();
        self.wait_for(name, "healthy", Duration::from_secs(60), |v| {
            v["status"]["robustness"] == "healthy"
        });
        uri
    }

    pub fn volume(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["volume", "get", name, "--json"])).unwrap()
    }

    /// Waits (at most `limit`) until `check` holds for the volume's JSON.
    pub fn wait_for(
        &self,
        volume: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
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
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(30));
        }
        common::kill_processes_mentioning(path_str(self.dir.path()));
    }
}

impl Node {
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
