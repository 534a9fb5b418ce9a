//! `delay-proxy`: a TCP proxy that holds every byte on its way to the target for a
//! fixed delay, so that one replica answers that much later than the others. This
//! kernel has no `netem`; the benchmark scripts and the slow-replica tests put this in
//! front of a replica's data port instead.
//!
//! Bytes toward the target wait `--delay-ms` from when they were read, in order,
//! without limiting throughput (a request sent while others wait is not queued behind
//! their delay); answers come back at once. Each connection gets its own target
//! connection. With `--delay-file`, the delay is whatever that file says while it
//! exists (milliseconds), so a test can make a replica slow, or stall it, mid-run.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Parser;

/// A TCP proxy that delays every byte going to the target.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to listen (port 0: any; the address is printed on stdout).
    #[arg(long)]
    listen: SocketAddr,
    /// Where to forward.
    #[arg(long)]
    target: SocketAddr,
    /// How long bytes toward the target wait, in milliseconds.
    #[arg(long, default_value_t = 200)]
    delay_ms: u64,
    /// While this file exists, the delay is the number of milliseconds it holds
    /// (re-read when it changes) instead of --delay-ms.
    #[arg(long)]
    delay_file: Option<PathBuf>,
}

/// Where the delay comes from.
struct DelaySource {
    fixed: Duration,
    file: Option<PathBuf>,
}

/// The delay as last read, per connection (re-read when the file's mtime changes).
struct CurrentDelay {
    source: Arc<DelaySource>,
    seen: Option<SystemTime>,
    delay: Duration,
}

impl CurrentDelay {
    fn new(source: Arc<DelaySource>) -> CurrentDelay {
        let delay = source.fixed;
        CurrentDelay {
            source,
            seen: None,
            delay,
        }
    }

    /// The delay for bytes read now.
    fn now(&mut self) -> Duration {
        let Some(file) = &self.source.file else {
            return self.delay;
        };
        match std::fs::metadata(file).and_then(|m| m.modified()) {
            Err(_) => {
                self.seen = None;
                self.delay = self.source.fixed;
            }
            Ok(modified) if self.seen != Some(modified) => {
                self.seen = Some(modified);
                match std::fs::read_to_string(file).map(|t| t.trim().parse::<u64>()) {
                    Ok(Ok(ms)) => self.delay = Duration::from_millis(ms),
                    _ => eprintln!("delay-proxy: {} holds no milliseconds", file.display()),
                }
            }
            Ok(_) => {}
        }
        self.delay
    }
}

/// Largest read forwarded at once.
const CHUNK: usize = 256 * 1024;

fn main() -> Result<()> {
    let args = Args::parse();
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr().context("the listening address")?;
    println!("{local}");
    eprintln!(
        "delay-proxy: {local} -> {} with {} ms toward the target",
        args.target, args.delay_ms
    );
    let delay = Arc::new(DelaySource {
        fixed: Duration::from_millis(args.delay_ms),
        file: args.delay_file,
    });
    for client in listener.incoming() {
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                eprintln!("delay-proxy: accept: {e}");
                continue;
            }
        };
        let target = args.target;
        let delay = CurrentDelay::new(Arc::clone(&delay));
        thread::spawn(move || {
            if let Err(e) = proxy(client, target, delay) {
                eprintln!("delay-proxy: connection to {target}: {e:#}");
            }
        });
    }
    Ok(())
}

/// Forwards one connection until either side closes.
fn proxy(client: TcpStream, target: SocketAddr, mut delay: CurrentDelay) -> Result<()> {
    let server = TcpStream::connect(target).with_context(|| format!("connecting to {target}"))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (chunks, delayed) = mpsc::channel::<(Instant, Vec<u8>)>();

    // client -> queue: every chunk stamped with when it is due.
    let mut from_client = client.try_clone()?;
    let reader = thread::spawn(move || {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match from_client.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + delay.now();
                    if chunks.send((due, buffer[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    // queue -> server: each chunk once its delay is over.
    let mut to_server = server.try_clone()?;
    let writer = thread::spawn(move || {
        for (due, chunk) in delayed {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to_server.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    // server -> client, at once.
    let mut from_server = server;
    let mut to_client = client;
    let _ = std::io::copy(&mut from_server, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_server.shutdown(Shutdown::Both);
    let _ = reader.join();
    let _ = writer.join();
    Ok(())
}
