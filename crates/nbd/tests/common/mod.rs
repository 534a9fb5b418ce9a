//! Shared by the end-to-end tests: an in-process NBD server over Shorthorn stores in a
//! temporary directory, and a runner for real NBD client programs with a hard timeout.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shorthorn_nbd::{Export, NbdServer, ServerConfig};
use shorthorn_store::{Store, StoreDevice};
use tempfile::TempDir;

/// Name of the writable export every test server offers (also the default export).
pub const EXPORT: &str = "vol";
/// Name of the read-only export every test server offers too.
pub const RO_EXPORT: &str = "ro";
/// Description of [`EXPORT`].
pub const DESCRIPTION: &str = "Shorthorn test volume";
/// Default time limit for one client program.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How the test server listens.
pub enum Listen {
    /// TCP on 127.0.0.1, any free port.
    Tcp,
    /// A unix socket in the server's temporary directory.
    Unix,
}

/// A server running on its own thread and runtime; stopped and cleaned up on drop.
pub struct TestServer {
    /// TCP address (for `Listen::Tcp`).
    pub addr: Option<SocketAddr>,
    /// Unix socket path (for `Listen::Unix`).
    pub socket: Option<PathBuf>,
    /// The store behind [`EXPORT`], for checking what clients wrote.
    pub store: Arc<Store>,
    /// Size of [`EXPORT`].
    pub size: u64,
    dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Logs go to the test's captured output; `RUST_LOG=shorthorn_nbd=debug` shows more.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("shorthorn_nbd=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

impl TestServer {
    /// A TCP server with a `size`-byte writable export and a small read-only one.
    pub fn start(size: u64) -> Self {
        Self::start_with(size, Listen::Tcp, ServerConfig::default())
    }

    /// Like [`TestServer::start`], with a chosen listener and limits.
    pub fn start_with(size: u64, listen: Listen, config: ServerConfig) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::create(&dir.path().join(EXPORT), EXPORT, size).unwrap());
        let ro_store = Store::create(&dir.path().join(RO_EXPORT), RO_EXPORT, 1 << 20).unwrap();
        let exports = vec![
            Export::new(EXPORT, Arc::new(StoreDevice::new(store.clone())))
                .with_description(DESCRIPTION)
                .with_multi_conn(true),
            Export::new(RO_EXPORT, Arc::new(StoreDevice::new(Arc::new(ro_store))))
                .with_description("read-only test volume")
                .with_read_only(true),
        ];
        let server = NbdServer::with_config(exports, config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, socket, listener) = match listen {
            Listen::Tcp => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.set_nonblocking(true).unwrap();
                (Some(l.local_addr().unwrap()), None, Ok(l))
            }
            Listen::Unix => {
                let path = dir.path().join("nbd.sock");
                let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
                l.set_nonblocking(true).unwrap();
                (None, Some(path), Err(l))
            }
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let stop = async {
                    let _ = rx.await;
                };
                match listener {
                    Ok(l) => {
                        let l = tokio::net::TcpListener::from_std(l).unwrap();
                        server.serve_tcp(l, stop).await.unwrap();
                    }
                    Err(l) => {
                        let l = tokio::net::UnixListener::from_std(l).unwrap();
                        server.serve_unix(l, stop).await.unwrap();
                    }
                }
            });
        });
        TestServer {
            addr,
            socket,
            store,
            size,
            dir,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.addr.expect("TCP server").port()
    }

    /// `nbd://` URI of an export on the TCP listener.
    pub fn uri_of(&self, export: &str) -> String {
        match &self.socket {
            Some(path) => format!("nbd+unix:///{export}?socket={}", path.display()),
            None => format!("nbd://127.0.0.1:{}/{export}", self.port()),
        }
    }

    /// URI of the writable export.
    pub fn uri(&self) -> String {
        self.uri_of(EXPORT)
    }

    /// A scratch directory that lives as long as the server.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Reads the writable export directly from its store.
    pub fn read_store(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.store.read(offset, &mut buf).unwrap();
        buf
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let done = thread.join();
            if done.is_err() && !std::thread::panicking() {
                panic!("the NBD server thread panicked");
            }
        }
    }
}

/// Finds `program` on `PATH`; fails the test with an install hint if it is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed; this end-to-end test drives the real client. \
         Install it with `apt-get install -y {package}` (scripts/test.sh does this)."
    );
}

/// What a client program did.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Runs `program` with `args`; kills it and fails the test after `timeout`.
pub fn run(program: &Path, args: &[&str], timeout: Duration) -> Outcome {
    let mut child: Child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let outcome = Outcome {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if status.is_none() {
        panic!(
            "{} {args:?} did not finish within {timeout:?}; killed it.\nstdout:\n{}\nstderr:\n{}",
            program.display(),
            outcome.stdout,
            outcome.stderr
        );
    }
    outcome
}

/// Runs `program` and fails the test unless it exits with status 0; returns stdout.
pub fn run_ok(program: &Path, args: &[&str]) -> String {
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

/// Runs `qemu-io -f raw URI -c CMD...` and checks that every command succeeded and every
/// pattern verified. Returns the output.
pub fn qemu_io(uri: &str, commands: &[&str]) -> String {
    let qemu_io = require("qemu-io", "qemu-utils");
    let mut args = vec!["-f", "raw", uri];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    let outcome = run(&qemu_io, &args, CLIENT_TIMEOUT);
    let all = format!("{}{}", outcome.stdout, outcome.stderr);
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
