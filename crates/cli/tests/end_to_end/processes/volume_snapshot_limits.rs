//! Snapshot limits and refusals of an engine started by hand with `--max-snapshots 3`
//! (three `shorthorn replica` processes and `shorthorn engine`, each waited for by the
//! `… ready: …` line it prints):
//! - bad names (`a/b`, `.x`, `a..b`, 64 characters) and a taken name fail with exit 1 and one clear error line,
//!   change nothing and fail no replica;
//! - three snapshots succeed, the fourth fails with exit 1 and a message naming the
//!   limit, and nothing changes;
//! - `snapshot rm` and `snapshot purge --wait` make room: the fourth succeeds then;
//! - with one replica killed (`kill -9`) just before, a snapshot still succeeds: that
//!   replica goes ERR in `ls`, the others carry the new snapshot and keep serving; after
//!   the engine and replicas stop, the two survivors hold the same snapshots and content,
//!   and the killed one never got the new snapshot.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{MIB, path_str, qemu_io, sha256, shorthorn_ok};
use crate::ops::{
    assert_clean_failure, on_engine_at, on_engine_at_ok, parse_layers, snapshot_names,
};

const VOLUME: &str = "limits";
const SIZE: u64 = 16 * MIB;

/// A `shorthorn` daemon started by the test: stdout captured (for its ready line), stderr
/// in a log file, stdin held open (`--exit-on-stdin-eof`, so it never outlives the test
/// process). Stopped with SIGTERM, or killed, on drop.
struct Daemon {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `shorthorn ARGS --exit-on-stdin-eof` and waits (30 s at most) for a stdout
    /// line starting with `ready`; returns the daemon and that line.
    fn start(name: &str, args: &[String], log: &Path, ready: &str) -> (Daemon, String) {
        let mut child = Command::new(crate::common::BIN)
            .args(args)
            .arg("--exit-on-stdin-eof")
            .env_remove("RUST_LOG")
            .env_remove("SHORTHORN_CRASH_AT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let pipe = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut daemon = Daemon {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child: Some(child),
            stdout,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + crate::common::READY_TIMEOUT;
        loop {
            let found = daemon
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.starts_with(ready))
                .map(str::to_owned);
            if let Some(line) = found {
                return (daemon, line);
            }
            if let Ok(Some(status)) = daemon.child.as_mut().unwrap().try_wait() {
                panic!(
                    "{name} exited with {status} before it was ready:\n{}",
                    daemon.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} printed no `{ready}` line within {:?}:\n{}",
                crate::common::READY_TIMEOUT,
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM; it must exit with status 0 within 30 s.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let status = crate::common::terminate(&mut child, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({status:?}):\n{}",
            self.name,
            self.log()
        );
        assert!(
            !self.log().contains("panicked"),
            "{} panicked:\n{}",
            self.name,
            self.log()
        );
    }

    /// `kill -9`, and waits until it is gone.
    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        crate::common::signal(child.id(), "KILL");
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            crate::common::terminate(&mut child, Duration::from_secs(10));
        }
    }
}

/// The names `snapshot ls --json` lists on the engine.
fn names(engine: &str) -> Vec<String> {
    snapshot_names(&parse_layers(&on_engine_at_ok(
        engine,
        &["snapshot", "ls", "--json"],
    )))
}

/// `ls` rows: (address, mode, error).
fn modes(engine: &str) -> Vec<(String, String, Option<String>)> {
    crate::common::parse_ls(&on_engine_at_ok(engine, &["ls"]))
}

fn assert_all_rw(engine: &str, context: &str) {
    let rows = modes(engine);
    assert!(
        rows.len() == 3 && rows.iter().all(|r| r.1 == "RW" && r.2.is_none()),
        "{context}: every replica should still be RW: {rows:?}"
    );
}

#[test]
fn snapshot_limit_names_and_a_killed_replica() {
    let root = tempfile::Builder::new()
        .prefix("shlim")
        .tempdir_in(crate::ops::volume_parent())
        .unwrap();
    let base = crate::common::free_port_range(8);
    let frontend = format!("127.0.0.1:{base}");
    let engine = format!("127.0.0.1:{}", base + 1);
    let uri = format!("nbd://{frontend}/{VOLUME}");

    let mut replicas = Vec::new();
    let mut addresses = Vec::new();
    for index in 1..=3u16 {
        let dir = root.path().join(format!("replica-{index}"));
        let listen = format!("127.0.0.1:{}", base + 2 * index);
        let (daemon, line) = Daemon::start(
            &format!("replica {index}"),
            &[
                "replica".into(),
                path_str(&dir).into(),
                "--size".into(),
                SIZE.to_string(),
                "--volume".into(),
                VOLUME.into(),
                "--listen".into(),
                listen.clone(),
            ],
            &root.path().join(format!("replica-{index}.log")),
            "replica ready:",
        );
        assert!(line.contains(&listen), "replica {index}: {line}");
        replicas.push(Some(daemon));
        addresses.push(format!("tcp://{listen}"));
    }
    let mut engine_args: Vec<String> = vec![
        "engine".into(),
        VOLUME.into(),
        "--size".into(),
        SIZE.to_string(),
        "--listen".into(),
        engine.clone(),
        "--frontend".into(),
        "nbd".into(),
        "--frontend-listen".into(),
        frontend.clone(),
        "--max-snapshots".into(),
        "3".into(),
    ];
    for address in &addresses {
        engine_args.extend(["--replica".into(), address.clone()]);
    }
    let (engine_daemon, line) = Daemon::start(
        "engine",
        &engine_args,
        &root.path().join("engine.log"),
        "engine ready:",
    );
    assert!(
        line.contains(&engine) && line.contains(&uri),
        "engine ready line should name its control address and {uri}: {line}"
    );
    assert_all_rw(&engine, "at start");

    qemu_io(&uri, &["write -P 0x01 0 1M"]);
    assert_eq!(
        on_engine_at_ok(&engine, &["snapshot", "create", "s1"]).trim(),
        "s1"
    );

    // Bad and taken names: refused, nothing changes, no replica fails.
    let long = "x".repeat(64);
    for (name, needle) in [
        ("a/b", "invalid name"),
        (".x", "invalid name"),
        ("a..b", "invalid name"),
        (long.as_str(), "at most 63"),
        ("s1", "already exists"),
    ] {
        let out = on_engine_at(&engine, &["snapshot", "create", name]);
        let message = assert_clean_failure(&out, &[needle], &format!("snapshot create {name}"));
        eprintln!("snapshot create {name}: {message}");
        assert_eq!(names(&engine), ["s1"], "after refusing {name:?}");
        assert_all_rw(&engine, &format!("after refusing {name:?}"));
    }

    // Up to the limit, then refused.
    qemu_io(&uri, &["write -P 0x02 1M 1M"]);
    on_engine_at_ok(&engine, &["snapshot", "create", "s2"]);
    qemu_io(&uri, &["write -P 0x03 2M 1M"]);
    on_engine_at_ok(&engine, &["snapshot", "create", "s3"]);
    let out = on_engine_at(&engine, &["snapshot", "create", "s4"]);
    let message = assert_clean_failure(&out, &["limit"], "the fourth snapshot");
    eprintln!("the fourth snapshot: {message}");
    assert!(
        message.contains('3'),
        "the message should say the limit: {message}"
    );
    assert_eq!(names(&engine), ["s1", "s2", "s3"]);
    assert_all_rw(&engine, "after the refused fourth snapshot");

    // rm + purge make room.
    on_engine_at_ok(&engine, &["snapshot", "rm", "s1"]);
    let purged = on_engine_at_ok(&engine, &["snapshot", "purge", "--wait"]);
    assert!(purged.contains("purged: s1"), "purge --wait: {purged}");
    qemu_io(&uri, &["write -P 0x04 3M 1M"]);
    on_engine_at_ok(&engine, &["snapshot", "create", "s4"]);
    assert_eq!(names(&engine), ["s2", "s3", "s4"]);
    on_engine_at_ok(&engine, &["snapshot", "rm", "s2"]);
    let purged = on_engine_at_ok(&engine, &["snapshot", "purge", "--wait"]);
    assert!(purged.contains("purged: s2"), "purge --wait: {purged}");

    // A replica killed just before a snapshot: the snapshot succeeds without it.
    qemu_io(&uri, &["write -P 0x05 4M 1M"]);
    let victim = replicas[1].take().unwrap();
    let victim_pid = victim.pid();
    victim.kill();
    assert!(
        !Path::new(&format!("/proc/{victim_pid}")).exists(),
        "replica 2 still runs"
    );
    let out = on_engine_at(&engine, &["snapshot", "create", "s5"]);
    assert!(
        out.success() && out.stdout.trim() == "s5",
        "PRODUCT BUG: with replica 2 killed, snapshot create s5 should succeed on the two \
         others: {out:?}"
    );
    let rows = modes(&engine);
    for (index, address) in addresses.iter().enumerate() {
        let row = rows
            .iter()
            .find(|r| &r.0 == address)
            .unwrap_or_else(|| panic!("ls lacks {address}: {rows:?}"));
        if index == 1 {
            assert!(
                row.1 == "ERR" && row.2.as_deref().is_some_and(|e| !e.is_empty()),
                "the killed replica should be ERR with an error: {rows:?}"
            );
        } else {
            assert!(row.1 == "RW" && row.2.is_none(), "{address}: {rows:?}");
        }
    }
    let ls = on_engine_at_ok(&engine, &["ls"]);
    for address in [&addresses[0], &addresses[2]] {
        let row = ls
            .lines()
            .find(|l| l.starts_with(address.as_str()))
            .unwrap();
        let chain: Vec<&str> = row.split_whitespace().skip(2).collect();
        assert_eq!(chain, ["volume-head", "s5", "s4", "s3"], "ls:\n{ls}");
    }
    assert_eq!(names(&engine), ["s3", "s4", "s5"]);
    qemu_io(
        &uri,
        &[
            "write -P 0x06 5M 1M",
            "read -P 0x05 4M 1M",
            "read -P 0x06 5M 1M",
        ],
    );

    engine_daemon.stop();
    for daemon in replicas.iter_mut().filter_map(Option::take) {
        daemon.stop();
    }

    // The survivors agree; the killed replica never got s5.
    let images = crate::ops::image_dir();
    let dir = |i: u16| root.path().join(format!("replica-{i}"));
    for index in [1, 3] {
        assert_eq!(
            snapshot_names(&crate::ops::store_layers(&dir(index))),
            ["s3", "s4", "s5"],
            "replica {index}"
        );
    }
    assert_eq!(
        snapshot_names(&crate::ops::store_layers(&dir(2))),
        ["s3", "s4"],
        "the killed replica"
    );
    for snapshot in [None, Some("s5"), Some("s3")] {
        let hashes: Vec<String> = [1u16, 3]
            .iter()
            .map(|&i| {
                let file = images.path().join(format!("r{i}.raw"));
                match snapshot {
                    Some(name) => {
                        crate::ops::export_snapshot(&dir(i), name, &file);
                    }
                    None => {
                        shorthorn_ok(&["store", "export", path_str(&dir(i)), path_str(&file)]);
                    }
                }
                sha256(&file)
            })
            .collect();
        assert_eq!(
            hashes[0],
            hashes[1],
            "replicas 1 and 3 differ in {}",
            snapshot.unwrap_or("the head")
        );
    }
    let s5 = crate::ops::export_snapshot(&dir(1), "s5", &images.path().join("s5.raw"));
    for (chunk, byte) in [(1u64, 0x02u8), (2, 0x03), (3, 0x04), (4, 0x05), (5, 0)] {
        let got = crate::ops::read_at(&s5, chunk * MIB, 4096);
        assert!(
            got.iter().all(|&b| b == byte),
            "s5 at {chunk} MiB should hold {byte:#x}"
        );
    }
}
