//! Engines and replicas that outlive the agent that started them: each is recorded in
//! `INSTANCES_DIR/NAME.json` (its pid and the kernel's start time of that pid), so a
//! new agent on the node — after `up` was stopped, killed or upgraded — takes them over
//! instead of starting them again. The start time tells the recorded process from a
//! later one that reused its pid.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What is recorded of one running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The process name the manager knows it by (`vol-e`, `vol-r-1a2b3c4d`).
    pub name: String,
    /// `engine` or `replica`: engines stop first.
    pub what: String,
    /// Its process id.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` when it started (clock ticks since boot).
    pub start_time: u64,
}

impl InstanceRecord {
    /// The record of the running process `pid`; `None` if it is gone already.
    pub fn of(name: &str, what: &str, pid: u32) -> Option<InstanceRecord> {
        Some(InstanceRecord {
            name: name.to_string(),
            what: what.to_string(),
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Whether the recorded process still runs (not exited, not a zombie, not another
    /// process with its pid).
    pub fn is_running(&self) -> bool {
        stat_fields(self.pid).is_some_and(|(state, start)| state != 'Z' && start == self.start_time)
    }

    /// Asks it to stop (SIGTERM: an engine flushes to its replicas first) and waits up
    /// to `timeout`; then kills it. Returns whether it stopped by itself.
    pub async fn stop(&self, timeout: Duration) -> bool {
        if !self.is_running() {
            return true;
        }
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= deadline {
                self.signal(rustix::process::Signal::KILL);
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if self.is_running()
            && let Err(e) = send_signal(self.pid, signal)
        {
            tracing::warn!(name = %self.name, pid = self.pid, error = %e, "signalling an instance");
        }
    }
}

/// The directory of instance records, one file each.
#[derive(Debug, Clone)]
pub struct InstanceRecords {
    dir: PathBuf,
}

impl InstanceRecords {
    /// Records kept in `dir` (created if missing).
    pub fn open(dir: &Path) -> anyhow::Result<InstanceRecords> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the instance directory {}", dir.display()))?;
        Ok(InstanceRecords {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Where instance `name` writes its stdout (its ready line).
    pub fn output_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.out"))
    }

    /// Writes `record` (replacing an earlier one of the same name), atomically.
    pub fn save(&self, record: &InstanceRecord) -> anyhow::Result<()> {
        let path = self.path(&record.name);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, serde_json::to_vec_pretty(record)?)?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("recording instance {}", path.display()))
    }

    /// Forgets instance `name` (no error if it was not recorded).
    pub fn remove(&self, name: &str) {
        for path in [self.path(name), self.output_path(name)] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "removing an instance record");
            }
        }
    }

    /// Every record, by name, read as it is (an unreadable one as its error), changing
    /// nothing.
    pub fn all(&self) -> anyhow::Result<Vec<(PathBuf, anyhow::Result<InstanceRecord>)>> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?;
        let mut records: Vec<_> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .map(|path| {
                let record = std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|raw| Ok(serde_json::from_slice::<InstanceRecord>(&raw)?))
                    .with_context(|| format!("instance record {}", path.display()));
                (path, record)
            })
            .collect();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(records)
    }

    /// The recorded instances that still run; the records of those that do not are
    /// removed (an unreadable record too, with a warning).
    pub fn running(&self) -> anyhow::Result<Vec<InstanceRecord>> {
        let mut running = Vec::new();
        for (path, record) in self.all()? {
            match record {
                Ok(record) if record.is_running() => running.push(record),
                Ok(record) => {
                    tracing::info!(name = %record.name, pid = record.pid, "a recorded instance no longer runs");
                    self.remove(&record.name);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "an unreadable instance record; removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(running)
    }
}

/// Whether process `pid` runs the file now at `binary`, not one that was replaced
/// (an upgrade installed) since it started; `None` when that cannot be read.
pub fn runs_binary(pid: u32, binary: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let running = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    let installed = std::fs::metadata(binary).ok()?;
    Some(running.dev() == installed.dev() && running.ino() == installed.ino())
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: rustix::process::Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("pid {pid}"))
        })?;
    Ok(rustix::process::kill_process(pid, signal)?)
}

/// The kernel's start time of `pid` (field 22 of `/proc/PID/stat`).
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|(_, start)| start)
}

/// (state, start time) of `pid`, from `/proc/PID/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn stat_fields(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 is the state; field 22 the start time: 19 further on.
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let stat =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_running_and_a_reused_pid_is_not() {
        let me = InstanceRecord::of("me", "replica", std::process::id()).unwrap();
        assert!(me.is_running());
        let other = InstanceRecord {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!other.is_running());
    }

    #[test]
    fn a_process_runs_its_own_binary_and_not_another() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(runs_binary(me, &exe), Some(true));
        assert_eq!(runs_binary(me, Path::new("/bin/sh")), Some(false));
        assert_eq!(runs_binary(me, Path::new("/no/such/binary")), None);
    }

    #[tokio::test]
    async fn records_of_gone_processes_are_dropped_and_a_stop_ends_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let records = InstanceRecords::open(dir.path()).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let live = InstanceRecord::of("v-r-1", "replica", sleeper.id()).unwrap();
        records.save(&live).unwrap();
        let gone = InstanceRecord {
            name: "v-e".into(),
            start_time: live.start_time + 1,
            ..live.clone()
        };
        records.save(&gone).unwrap();
        std::fs::write(dir.path().join("bad.json"), b"{").unwrap();
        assert_eq!(records.running().unwrap(), vec![live.clone()]);
        assert!(!dir.path().join("v-e.json").exists());
        assert!(!dir.path().join("bad.json").exists());
        // Reaped as soon as it exits, so it is not left a zombie of this test.
        let reaper = std::thread::spawn(move || sleeper.wait());
        assert!(live.stop(Duration::from_secs(5)).await);
        reaper.join().unwrap().unwrap();
        assert!(!live.is_running());
        records.remove("v-r-1");
        records.remove("v-r-1");
        assert!(records.running().unwrap().is_empty());
    }
}
