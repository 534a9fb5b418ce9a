//! A slow replica does not hold a volume hostage. Three replicas, the third behind a
//! userspace delay proxy (`delay-proxy`, from the bench crate: this kernel has no
//! netem) on its data port; its control port is forwarded without delay. The replicas
//! serve no unix socket, so the engine's data really goes through TCP and the proxy.
//!
//! - 200 ms slower than the others: writes go on while the engine measures it; within
//!   the slow-replica window it leaves the write set (ERR, "too slow"), the two others
//!   stay RW, and every block written (before, during and after) reads back as written.
//! - Stalled (a 60 s delay) with `--request-timeout 1s` and slow-replica ejection off:
//!   the write in flight fails the replica after the timeout, not after 8 s or never;
//!   the write is acknowledged by the others and reads back, and later writes are fast.
//!
//! Time is bounded: each client run has a time limit; nothing asserts on how long I/O
//! took (bench/slow-replica.sh measures that).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BIN, Daemon, MIB, free_port_range, parse_ls, path_str, run, terminate};

const SIZE: u64 = 64 * MIB;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
const MODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Blocks each phase writes (4 KiB each, one qemu-io command each).
const BLOCKS: u64 = 64;

/// The delay proxy binary, built beside `shorthorn` by the workspace's test run (or
/// built here when only this package's tests were built).
fn delay_proxy() -> PathBuf {
    let path = Path::new(BIN).with_file_name("delay-proxy");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "shorthorn-bench", "--bin", "delay-proxy"])
            .status()
            .unwrap();
        assert!(status.success(), "building delay-proxy failed");
    }
    assert!(path.exists(), "no delay-proxy at {}", path.display());
    path
}

/// A delay proxy process, killed on drop.
struct Proxy {
    child: Child,
}

impl Proxy {
    fn start(listen: SocketAddr, target: SocketAddr, delay_file: Option<&Path>) -> Proxy {
        let mut command = Command::new(delay_proxy());
        command.args([
            "--listen",
            &listen.to_string(),
            "--target",
            &target.to_string(),
            "--delay-ms",
            "0",
        ]);
        if let Some(file) = delay_file {
            command.args(["--delay-file", path_str(file)]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "delay-proxy did not listen on {listen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy { child }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// Three replicas (the third behind a delay proxy whose delay `delay_file` sets) and
/// an engine with `engine_args`.
struct SlowCluster {
    dir: tempfile::TempDir,
    engine_addr: String,
    nbd: SocketAddr,
    addresses: Vec<String>,
    delay_file: PathBuf,
    // Dropped in this order: the engine first, then proxies and replicas.
    engine: Option<Daemon>,
    _proxies: Vec<Proxy>,
    _replicas: Vec<Daemon>,
}

impl SlowCluster {
    fn start(engine_args: &[&str]) -> SlowCluster {
        let dir = tempfile::Builder::new().prefix("shslow").tempdir().unwrap();
        let delay_file = dir.path().join("delay-ms");
        // Ports: replicas 0..6 (data, control each), proxy 6..8, engine 8, NBD 9.
        let base = free_port_range(10);
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut replicas = Vec::new();
        for index in 0..3u16 {
            let data = local(base + 2 * index);
            let replica_dir = dir.path().join(format!("r{index}"));
            replicas.push(Daemon::start(
                &[
                    "replica",
                    path_str(&replica_dir),
                    "--size",
                    &SIZE.to_string(),
                    "--volume",
                    "slow",
                    "--listen",
                    &data.to_string(),
                    "--no-unix-socket",
                ],
                &dir.path().join(format!("r{index}.log")),
                local(base + 2 * index + 1),
            ));
        }
        let proxy_data = local(base + 6);
        let proxies = vec![
            Proxy::start(proxy_data, local(base + 4), Some(&delay_file)),
            Proxy::start(local(base + 7), local(base + 5), None),
        ];
        let addresses = vec![
            format!("tcp://{}", local(base)),
            format!("tcp://{}", local(base + 2)),
            format!("tcp://{proxy_data}"),
        ];
        let engine_addr = local(base + 8).to_string();
        let nbd = local(base + 9);
        let mut args = vec![
            "engine".to_string(),
            "slow".into(),
            "--size".into(),
            SIZE.to_string(),
            "--listen".into(),
            engine_addr.clone(),
            "--frontend".into(),
            "nbd".into(),
            "--frontend-listen".into(),
            nbd.to_string(),
        ];
        for address in &addresses {
            args.extend(["--replica".into(), address.clone()]);
        }
        args.extend(engine_args.iter().map(|a| (*a).to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let engine = Daemon::start(&args, &dir.path().join("engine.log"), nbd);
        let cluster = SlowCluster {
            dir,
            engine_addr,
            nbd,
            addresses,
            delay_file,
            engine: Some(engine),
            _proxies: proxies,
            _replicas: replicas,
        };
        cluster.wait_modes(&["RW", "RW", "RW"]);
        cluster
    }

    /// Sets the third replica's delay from now on.
    fn set_delay(&self, ms: u64) {
        let temporary = self.dir.path().join("delay-ms.new");
        std::fs::write(&temporary, ms.to_string()).unwrap();
        std::fs::rename(&temporary, &self.delay_file).unwrap();
    }

    fn uri(&self) -> String {
        format!("nbd://{}/slow", self.nbd)
    }

    fn ls(&self) -> String {
        let outcome = run(BIN, &["--engine", &self.engine_addr, "ls"], CLIENT_TIMEOUT);
        assert!(outcome.success(), "ls failed:\n{}", outcome.all());
        outcome.stdout
    }

    fn engine_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// Each replica's (mode, error), in start order.
    fn modes(&self) -> Vec<(String, Option<String>)> {
        let rows = parse_ls(&self.ls());
        self.addresses
            .iter()
            .map(|address| {
                rows.iter()
                    .find(|r| &r.0 == address)
                    .map(|r| (r.1.clone(), r.2.clone()))
                    .unwrap_or_else(|| (String::from("absent"), None))
            })
            .collect()
    }

    fn wait_modes(&self, wanted: &[&str]) {
        let deadline = Instant::now() + MODE_TIMEOUT;
        loop {
            let modes = self.modes();
            if modes
                .iter()
                .map(|m| m.0.as_str())
                .eq(wanted.iter().copied())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replicas are {modes:?}, not {wanted:?} after {MODE_TIMEOUT:?}:\n{}",
                self.engine_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes blocks `range`, block i holding byte `pattern(i)`, one command each, then
    /// flushes; every write must be acknowledged.
    fn write_blocks(&self, range: std::ops::Range<u64>) {
        let commands: Vec<String> = range
            .map(|i| format!("write -P {} {} 4k", pattern(i), i * 4096))
            .chain(std::iter::once("flush".into()))
            .collect();
        let outcome = self.qemu_io(&commands);
        assert!(
            outcome.success() && !outcome.all().contains("failed"),
            "writes failed:\n{}\n{}",
            outcome.all(),
            self.engine_log()
        );
    }

    /// Every block in `range` reads back as written.
    fn assert_blocks(&self, range: std::ops::Range<u64>) {
        let commands: Vec<String> = range
            .map(|i| format!("read -P {} {} 4k", pattern(i), i * 4096))
            .collect();
        let outcome = self.qemu_io(&commands);
        let all = outcome.all();
        assert!(
            outcome.success() && !all.contains("failed") && !all.contains("Pattern verification"),
            "an acknowledged block reads back wrong:\n{all}"
        );
    }

    fn qemu_io(&self, commands: &[String]) -> crate::common::Outcome {
        let qemu_io = crate::common::require("qemu-io", "qemu-utils");
        let uri = self.uri();
        let mut args = vec!["-f", "raw", uri.as_str()];
        for command in commands {
            args.extend(["-c", command.as_str()]);
        }
        run(&qemu_io, &args, CLIENT_TIMEOUT)
    }
}

impl Drop for SlowCluster {
    fn drop(&mut self) {
        // Let the engine flush to every replica before the proxy goes.
        self.set_delay(0);
        self.engine.take();
    }
}

/// The byte block `i` holds (never 0, so a hole cannot pass).
fn pattern(i: u64) -> u64 {
    i % 250 + 1
}

#[test]
fn a_replica_far_slower_than_the_others_leaves_the_write_set_and_nothing_is_lost() {
    let cluster = SlowCluster::start(&["--slow-replica-window", "2s"]);
    cluster.write_blocks(0..BLOCKS);
    cluster.set_delay(200);
    let slow_since = Instant::now();
    // Writes at 200 ms each until the engine takes the replica out (window 2 s).
    let mut written = BLOCKS;
    while cluster.modes()[2].0 == "RW" {
        assert!(
            slow_since.elapsed() < MODE_TIMEOUT,
            "the slow replica is still RW after {MODE_TIMEOUT:?}:\n{}\n{}",
            cluster.ls(),
            cluster.engine_log()
        );
        cluster.write_blocks(written..written + 4);
        written += 4;
    }
    let modes = cluster.modes();
    assert_eq!(modes[0], ("RW".into(), None), "{modes:?}");
    assert_eq!(modes[1], ("RW".into(), None), "{modes:?}");
    assert_eq!(modes[2].0, "ERR", "{modes:?}");
    let error = modes[2].1.clone().unwrap_or_default();
    assert!(error.contains("too slow"), "the ERR reason: {error:?}");
    assert!(
        written > BLOCKS,
        "no write was issued while the replica was slow; the test proves nothing"
    );
    eprintln!(
        "the slow replica left the write set after {:?} and {} writes",
        slow_since.elapsed(),
        written - BLOCKS
    );
    // Writes after it left, then everything reads back.
    cluster.write_blocks(written..written + BLOCKS);
    cluster.assert_blocks(0..written + BLOCKS);
}

#[test]
fn a_stalled_replica_fails_after_the_request_timeout_and_the_write_is_kept() {
    let cluster = SlowCluster::start(&["--request-timeout", "1s", "--slow-replica-ratio", "0"]);
    cluster.write_blocks(0..BLOCKS);
    cluster.set_delay(60_000);
    cluster.write_blocks(BLOCKS..BLOCKS + 1);
    cluster.wait_modes(&["RW", "RW", "ERR"]);
    let error = cluster.modes()[2].1.clone().unwrap_or_default();
    assert!(
        error.contains("no reply within 1s"),
        "the ERR reason should be the timeout: {error:?}\n{}",
        cluster.engine_log()
    );
    cluster.write_blocks(BLOCKS + 1..2 * BLOCKS);
    cluster.assert_blocks(0..2 * BLOCKS);
}
