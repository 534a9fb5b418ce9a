//! Shared by the tests of volume operations through a running engine (snapshots under
//! load, revert, purge, online expansion, metrics, limits): a client program running in
//! the background that is killed on drop, `shorthorn --engine ADDR …` runners, disk usage,
//! snapshot listings and exports.
//!
//! Used next to `common` (`mod common; mod ops;`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Outcome, Volume, path_str, require, run, shorthorn};

/// A client program running in the background with its output in files; killed (by pid)
/// on drop unless it was waited for.
pub struct Background {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

impl Background {
    /// Starts `program ARGS` (stdin closed), its stdout and stderr going to
    /// `DIR/NAME.out` and `DIR/NAME.err`.
    pub fn spawn(program: impl AsRef<Path>, args: &[&str], dir: &Path, name: &str) -> Background {
        Self::spawn_command(
            {
                let mut command = Command::new(program.as_ref());
                command.args(args);
                command
            },
            dir,
            name,
        )
    }

    /// Starts `command` like [`Background::spawn`].
    pub fn spawn_command(mut command: Command, dir: &Path, name: &str) -> Background {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Background {
            name: name.to_owned(),
            child: Some(child),
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What it wrote to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for it to exit (at most `timeout`, then kills it and fails the test).
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let mut child = self.child.take().unwrap();
        let status = common::wait_bounded(&mut child, timeout);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let outcome = Outcome {
            code: status.and_then(|s| s.code()),
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
            elapsed: self.started.elapsed(),
        };
        assert!(
            status.is_some(),
            "{} did not finish within {timeout:?}; killed it.\nstdout:\n{}\nstderr:\n{}",
            self.name,
            outcome.stdout,
            outcome.stderr
        );
        outcome
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

/// `shorthorn --engine ADDR ARGS` for `volume` (bounded; never panics).
pub fn on_engine(volume: &Volume, args: &[&str]) -> Outcome {
    on_engine_at(&volume.engine_addr(), args)
}

/// `shorthorn --engine ADDR ARGS` (bounded; never panics).
pub fn on_engine_at(engine: &str, args: &[&str]) -> Outcome {
    let mut all = vec!["--engine", engine];
    all.extend_from_slice(args);
    shorthorn(&all)
}

/// `shorthorn --engine ADDR ARGS`, which must succeed; returns stdout.
pub fn on_engine_ok(volume: &Volume, args: &[&str]) -> String {
    on_engine_at_ok(&volume.engine_addr(), args)
}

/// `shorthorn --engine ADDR ARGS`, which must succeed; returns stdout.
pub fn on_engine_at_ok(engine: &str, args: &[&str]) -> String {
    let outcome = on_engine_at(engine, args);
    assert!(
        outcome.success(),
        "shorthorn --engine {engine} {args:?} failed: {outcome:?}"
    );
    outcome.stdout
}

/// Asserts that `outcome` is a clean failure: exit 1, nothing on stdout, one `error: `
/// line on stderr containing every one of `needles` (case-insensitive); returns it.
pub fn assert_clean_failure(outcome: &Outcome, needles: &[&str], what: &str) -> String {
    assert_eq!(
        outcome.code,
        Some(1),
        "{what} should fail with exit 1: {outcome:?}"
    );
    let stderr = outcome.stderr.trim();
    assert!(
        stderr.starts_with("error: ") && stderr.lines().count() == 1,
        "{what} should print one `error: ` line: {outcome:?}"
    );
    let lower = stderr.to_lowercase();
    for needle in needles {
        assert!(
            lower.contains(&needle.to_lowercase()),
            "{what}: the error should mention {needle:?}: {stderr}"
        );
    }
    assert!(
        outcome.stdout.trim().is_empty(),
        "{what} printed on stdout: {outcome:?}"
    );
    stderr.to_owned()
}

/// One layer of `snapshot ls --json` (engine) or `store snapshot ls DIR --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Snapshot name (None for the head).
    pub name: Option<String>,
    /// Parent snapshot.
    pub parent: Option<String>,
    /// Whether it is the head.
    pub head: bool,
    /// Marked removed.
    pub removed: bool,
    /// In the active chain.
    pub in_chain: bool,
    /// `user`, `system` or `head`.
    pub kind: String,
    /// Volume size when the layer was made.
    pub size: u64,
    /// Bytes its file occupies.
    pub allocated_bytes: u64,
}

/// Parses the JSON array of a `snapshot ls --json`.
pub fn parse_layers(json: &str) -> Vec<Layer> {
    let value: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("snapshot ls --json printed invalid JSON ({e}):\n{json}"));
    let array = value
        .as_array()
        .unwrap_or_else(|| panic!("snapshot ls --json is not an array:\n{json}"));
    array
        .iter()
        .map(|l| {
            let text = |k: &str| l.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            Layer {
                name: text("name"),
                parent: text("parent"),
                head: l.get("head").and_then(serde_json::Value::as_bool).unwrap(),
                removed: l
                    .get("removed")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap(),
                in_chain: l
                    .get("in_chain")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap(),
                kind: text("kind").unwrap(),
                size: l.get("size").and_then(serde_json::Value::as_u64).unwrap(),
                allocated_bytes: l
                    .get("allocated_bytes")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap(),
            }
        })
        .collect()
}

/// The engine's snapshot tree (`snapshot ls --json`).
pub fn engine_layers(volume: &Volume) -> Vec<Layer> {
    parse_layers(&on_engine_ok(volume, &["snapshot", "ls", "--json"]))
}

/// A stopped replica's snapshot tree (`store snapshot ls DIR --json`).
pub fn store_layers(dir: &Path) -> Vec<Layer> {
    parse_layers(&common::shorthorn_ok(&[
        "store",
        "snapshot",
        "ls",
        path_str(dir),
        "--json",
    ]))
}

/// Names of the snapshots (not the head) in `layers`, in listed order.
pub fn snapshot_names(layers: &[Layer]) -> Vec<String> {
    layers.iter().filter_map(|l| l.name.clone()).collect()
}

/// `store export DIR FILE --snapshot NAME` of a stopped replica; returns FILE.
pub fn export_snapshot(dir: &Path, snapshot: &str, file: &Path) -> PathBuf {
    common::shorthorn_ok(&[
        "store",
        "export",
        path_str(dir),
        path_str(file),
        "--snapshot",
        snapshot,
    ]);
    file.to_owned()
}

/// Bytes the files under `path` occupy on disk (`du -s --block-size=1`): what a sparse
/// layer file really costs.
pub fn du_allocated(path: &Path) -> u64 {
    du(path, &["-s", "--block-size=1"])
}

/// Apparent size of the files under `path` (`du -sb`): a sparse layer file counts with
/// its full length.
pub fn du_apparent(path: &Path) -> u64 {
    du(path, &["-sb"])
}

fn du(path: &Path, flags: &[&str]) -> u64 {
    let mut args = flags.to_vec();
    args.push(path_str(path));
    let out = common::run_ok(require("du", "coreutils"), &args);
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected du output: {out}"))
}

/// The size `nbdinfo --size URI` reports (a new NBD connection).
pub fn nbd_size(uri: &str) -> u64 {
    let out = common::run_ok(require("nbdinfo", "libnbd-bin"), &["--size", uri]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("nbdinfo --size printed {out:?}"))
}

/// Copies the whole volume at `uri` to the raw file `to` with nbdcopy (a new
/// connection); returns `to`.
pub fn nbdcopy_to_file(uri: &str, to: &Path) -> PathBuf {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let _ = std::fs::remove_file(to);
    let out = run(&nbdcopy, &[uri, path_str(to)], common::CLIENT_TIMEOUT);
    assert!(
        out.success(),
        "nbdcopy {uri} {} failed: {out:?}",
        to.display()
    );
    to.to_owned()
}

/// The system Python 3 with libnbd's bindings (`python3-libnbd`, what `nbdsh` runs on).
/// A `python3` earlier on `PATH` (pyenv) may lack them, so this is always /usr/bin's.
pub fn python3_with_nbd() -> PathBuf {
    require("nbdsh", "libnbd-bin");
    let python = PathBuf::from("/usr/bin/python3");
    let out = run(&python, &["-c", "import nbd"], common::COMMAND_TIMEOUT);
    assert!(
        out.success(),
        "/usr/bin/python3 cannot import nbd (install python3-libnbd; nbdsh needs it): {out:?}"
    );
    python
}

/// Reads `len` bytes at `offset` of `file`.
pub fn read_at(file: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// A temporary directory for exported images: in `/dev/shm` when it exists, so the
/// exports' final fsync does not wait behind other disk traffic; removed on drop.
pub fn image_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("shimg");
        b
    };
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().unwrap()
}

/// Where these tests put their volumes: `/dev/shm` when it exists. On the test hosts,
/// removing a few hundred MiB of fragmented layer files from a disk mounted with
/// `discard` takes half a minute; on tmpfs it is instant. The store needs nothing tmpfs
/// lacks (sparse files, hole punching, SEEK_DATA/SEEK_HOLE).
pub fn volume_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Starts a `launch-simple` volume under [`volume_parent`], with `extra` arguments.
pub fn start_volume(
    name: &str,
    size: u64,
    replicas: u16,
    extra: &dyn Fn(&common::Ports) -> Vec<String>,
) -> Volume {
    Volume::start_in(&volume_parent(), name, size, replicas, extra)
}
