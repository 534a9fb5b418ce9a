//! Growing a three-replica `launch-simple` volume while clients use it.
//!
//! fio (two jobs, 32 requests in flight each, crc32c verification) writes the old range
//! and an interactive qemu-io holds another connection, both opened before `expand`
//! doubles the size. fio verifies every block; the old qemu-io connection writes and
//! reads back data (within the size it negotiated) after the expansion; a new connection
//! (`nbdinfo`) sees the new size; new connections write and verify data across the old
//! end and up to the new end (which reads as zeros first); `info` shows the new size;
//! after the volume stops every replica is identical at the new size and `store info`
//! reports it, with the data past the old end in place.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::common::{MIB, assert_fio_verified, fio_verify_job, path_str, qemu_io, require};
use crate::ops::{Background, nbd_size, on_engine_ok};

const OLD_SIZE: u64 = 64 * MIB;
const NEW_SIZE: u64 = 2 * OLD_SIZE;

/// qemu-io reading commands from a pipe: one NBD connection kept open across commands.
/// Killed on drop.
struct InteractiveQemuIo {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl InteractiveQemuIo {
    fn open(uri: &str) -> InteractiveQemuIo {
        let qemu_io = require("qemu-io", "qemu-utils");
        let mut child = Command::new(qemu_io)
            .args(["-f", "raw", uri])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        InteractiveQemuIo {
            child,
            stdin,
            lines,
        }
    }

    /// Runs one qemu-io command and returns its output; it must succeed (and verify,
    /// for `read -P`).
    fn run(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                    if line.contains("ops;") || line.contains("failed:") {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("qemu-io did not finish {command:?} within 30 s:\n{out}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("qemu-io exited during {command:?}:\n{out}")
                }
            }
        }
        assert!(
            !out.contains("failed"),
            "qemu-io {command:?} on the connection opened before the expansion failed:\n{out}"
        );
        out
    }

    fn quit(mut self) {
        drop(self.stdin.take());
        let status = crate::common::wait_bounded(&mut self.child, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "qemu-io did not exit cleanly: {status:?}"
        );
    }
}

impl Drop for InteractiveQemuIo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn size_line(info: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix("size:"))
        .unwrap_or_else(|| panic!("info has no size line:\n{info}"))
        .trim()
        .to_owned()
}

#[test]
fn expand_while_writing_keeps_connections_and_new_ones_see_the_new_size() {
    const PER_JOB: u64 = 24 * MIB;
    const JOBS: u32 = 2;
    let fio = require("fio", "fio");
    let mut volume = crate::ops::start_volume("grow", OLD_SIZE, 3, &|_| vec![]);
    let scratch = volume.scratch();
    assert_eq!(nbd_size(&volume.uri()), OLD_SIZE);

    // Two connections opened before the expansion: qemu-io (idle between commands) and
    // fio (busy).
    let mut old = InteractiveQemuIo::open(&volume.uri());
    old.run(&format!("write -P 0x5a {} 64k", OLD_SIZE - 128 * 1024));
    let job = fio_verify_job(&scratch, &volume.uri(), JOBS, PER_JOB);
    let mut writer = Background::spawn(
        &fio,
        &["--output-format=normal", path_str(&job)],
        &scratch,
        "fio",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        writer.is_running(),
        "fio finished before the expansion; make its job larger:\n{}",
        writer.stdout_so_far()
    );
    let started = Instant::now();
    let expanded = on_engine_ok(&volume, &["expand", &NEW_SIZE.to_string()]);
    let took = started.elapsed();
    let fio_after = writer.is_running();
    assert!(
        expanded.contains(&NEW_SIZE.to_string()),
        "expand output: {expanded}"
    );

    // The old qemu-io connection still works (inside the size it negotiated).
    old.run(&format!("read -P 0x5a {} 64k", OLD_SIZE - 128 * 1024));
    old.run(&format!("write -P 0x5b {} 64k", OLD_SIZE - 64 * 1024));
    old.run(&format!("read -P 0x5b {} 64k", OLD_SIZE - 64 * 1024));

    // New connections see and use the new size while fio still writes.
    assert_eq!(
        nbd_size(&volume.uri()),
        NEW_SIZE,
        "a new connection should see the new size"
    );
    assert_eq!(
        size_line(&volume.info()),
        format!("128 MiB ({NEW_SIZE} bytes)"),
        "info after expand"
    );
    let uri = volume.uri();
    qemu_io(
        &uri,
        &[
            &format!("read -P 0 {OLD_SIZE} {}", NEW_SIZE - OLD_SIZE),
            &format!("write -P 0xcd {} 128k", OLD_SIZE - 32 * 1024),
            &format!("write -P 0xce {} 1M", NEW_SIZE - MIB),
        ],
    );
    qemu_io(
        &uri,
        &[
            &format!("read -P 0xcd {} 128k", OLD_SIZE - 32 * 1024),
            &format!("read -P 0xce {} 1M", NEW_SIZE - MIB),
            &format!(
                "read -P 0 {} {}",
                OLD_SIZE + 96 * 1024,
                NEW_SIZE - MIB - OLD_SIZE - 96 * 1024
            ),
        ],
    );

    let outcome = writer.wait(crate::common::CLIENT_TIMEOUT);
    let timing = format!(
        "expand took {took:?}; fio still running when it returned: {fio_after}; fio ran {:?}",
        outcome.elapsed
    );
    eprintln!("{timing}");
    let context = format!("{timing}\nlog:\n{}", volume.log_tail(40));
    assert_fio_verified(&outcome, u64::from(JOBS) * PER_JOB / 4096, &context);
    assert!(
        fio_after,
        "fio finished while expand ran, so its connection was not used after the \
         expansion; make its job larger:\n{context}"
    );
    // Its block below the 0xcd write (which covered the last 32 KiB before the old end)
    // reads back on the old connection too.
    old.run(&format!("read -P 0x5b {} 32k", OLD_SIZE - 64 * 1024));
    old.run(&format!("read -P 0xcd {} 32k", OLD_SIZE - 32 * 1024));
    old.quit();
    volume.assert_healthy();

    volume.stop();
    volume.size = NEW_SIZE;
    volume.assert_replicas_identical(&[]);
    for index in 1..=volume.replicas {
        let dir = volume.replica_dir(index);
        let info = crate::common::shorthorn_ok(&["store", "info", path_str(&dir), "--json"]);
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(
            info["size"], NEW_SIZE,
            "replica {index}'s store info: {info}"
        );
    }
    let image = volume.export_replica(1);
    let across = crate::ops::read_at(&image, OLD_SIZE - 32 * 1024, 128 * 1024);
    assert!(
        across.iter().all(|&b| b == 0xcd),
        "the write across the old end"
    );
    let end = crate::ops::read_at(&image, NEW_SIZE - MIB, MIB as usize);
    assert!(end.iter().all(|&b| b == 0xce), "the write at the new end");
}
