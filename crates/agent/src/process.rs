//! Shorthorn daemons (replicas, engines) started as child processes of this one.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::protocol::PROGRESS_PREFIX;

/// How long each daemon may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long each daemon may take to stop after being asked.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A daemon we started. Its stdin is a pipe we hold: closing it asks it to stop, and if
/// we die the kernel closes it, so no daemon outlives us — unless it was started
/// detached ([`Daemon::spawn_detached`]): then SIGTERM asks it to stop, and it runs on
/// when we die.
pub struct Daemon {
    name: String,
    /// The process.
    pub child: Child,
    /// Held apart from `child`, because waiting on a tokio child closes its stdin.
    stdin: Option<ChildStdin>,
    /// The daemon announces readiness on stdout; kept open so later output never hits a
    /// closed pipe.
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    /// A task's last progress line (without its prefix), read from its stdout.
    progress: Arc<Mutex<Option<String>>>,
    /// The task reading a task's stdout: done once every line is read.
    progress_reader: Option<tokio::task::JoinHandle<()>>,
    /// A one-shot task: killed when stopped (it resumes when run again), not asked.
    task: bool,
    /// A detached daemon's stdout, a file (a pipe would close when we die): where its
    /// ready line shows.
    output_file: Option<PathBuf>,
}

/// Reads a task's stdout to its end (its progress lines, then its result) in the
/// background, keeping the last progress report.
fn follow_progress(
    mut lines: Lines<BufReader<ChildStdout>>,
) -> (Arc<Mutex<Option<String>>>, tokio::task::JoinHandle<()>) {
    let progress = Arc::new(Mutex::new(None));
    let last = progress.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(report) = line.strip_prefix(PROGRESS_PREFIX)
                && let Ok(mut last) = last.lock()
            {
                *last = Some(report.to_string());
            }
        }
    });
    (progress, reader)
}

impl Daemon {
    /// Starts `shorthorn ARGS --exit-on-stdin-eof` (this very binary), named `name` in
    /// messages.
    pub fn spawn(name: String, args: &[String]) -> anyhow::Result<Daemon> {
        Daemon::start(name, args, &[], true)
    }

    /// Starts `shorthorn ARGS` (this very binary) so that it outlives us: no stdin, its
    /// stdout in the file `output` (its stderr is ours), not killed when we exit.
    pub fn spawn_detached(name: String, args: &[String], output: &Path) -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe().context("finding the shorthorn binary")?;
        let out = std::fs::File::create(output)
            .with_context(|| format!("creating {}", output.display()))?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .kill_on_drop(false);
        // Own process group: a terminal's Ctrl-C (or a kill of our group) reaches only us.
        command.as_std_mut().process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Daemon {
            name,
            child,
            stdin: None,
            stdout: None,
            progress: Arc::default(),
            progress_reader: None,
            task: false,
            output_file: Some(output.to_path_buf()),
        })
    }

    /// Starts a one-shot `shorthorn ARGS --progress-lines` (a restore, say): it ends by
    /// itself (or when we die and its stdin closes), and is killed if stopped first; [`Daemon::progress`] is its last report.
    /// `env` is added to its environment (secrets go there, never into its arguments,
    /// which every user of the host can read).
    pub fn spawn_task(
        name: String,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<Daemon> {
        Daemon::start(name, args, env, false)
    }

    fn start(
        name: String,
        args: &[String],
        env: &[(&str, String)],
        daemon: bool,
    ) -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe().context("finding the shorthorn binary")?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .kill_on_drop(true);
        // Every child holds a pipe from us as its stdin and exits when it closes: a
        // task (a restore) left running by a killed `up` would otherwise write on while
        // the next `up` starts it again into the same directory.
        command
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if !daemon {
            command.arg("--progress-lines");
        }
        // Own process group: a terminal's Ctrl-C reaches only us, and we stop the
        // daemons in order (engine first, so its final flush reaches the replicas).
        command.as_std_mut().process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().map(|out| BufReader::new(out).lines());
        let (progress, progress_reader) = match stdout.take_if(|_| !daemon) {
            Some(lines) => {
                let (progress, reader) = follow_progress(lines);
                (progress, Some(reader))
            }
            None => (Arc::default(), None),
        };
        Ok(Daemon {
            name,
            child,
            stdin,
            stdout,
            progress,
            progress_reader,
            task: !daemon,
            output_file: None,
        })
    }

    /// A task's last progress report, if it printed one.
    pub fn progress(&self) -> Option<String> {
        self.progress.lock().ok().and_then(|last| last.clone())
    }

    /// The last report of a task that exited: its stdout read to the end first (at
    /// most a few seconds), so a report printed just before it exited is not missed.
    pub async fn final_progress(&mut self) -> Option<String> {
        if let Some(reader) = self.progress_reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        self.progress()
    }

    /// Whether it is a one-shot task (a restore, a clone).
    pub fn is_task(&self) -> bool {
        self.task
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the daemon's `<what> ready` line on stdout. A daemon that exits first
    /// has printed its reason on stderr (shared with ours); report its exit status.
    pub async fn wait_ready(&mut self, what: &str) -> anyhow::Result<()> {
        let marker = format!("{what} ready");
        if let Some(output) = self.output_file.clone() {
            return self.wait_ready_in_file(&marker, &output).await;
        }
        let stdout = self
            .stdout
            .as_mut()
            .context("daemon stdout is not captured")?;
        let wait = async {
            while let Some(line) = stdout.next_line().await? {
                if line.starts_with(&marker) {
                    return Ok(true);
                }
            }
            std::io::Result::Ok(false)
        };
        match tokio::time::timeout(START_TIMEOUT, wait).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) | Ok(Err(_)) => {
                let status = self.child.wait().await.context("waiting for a daemon")?;
                bail!(
                    "{} failed to start ({status}); its error is above",
                    self.name
                )
            }
            Err(_) => bail!(
                "{} did not become ready within {START_TIMEOUT:?}",
                self.name
            ),
        }
    }

    /// [`Daemon::wait_ready`] of a detached daemon: its output file is read until the
    /// marker line shows or the daemon exits.
    async fn wait_ready_in_file(&mut self, marker: &str, output: &Path) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(output).unwrap_or_default();
            if text.lines().any(|line| line.starts_with(marker)) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().context("waiting for a daemon")? {
                bail!(
                    "{} failed to start ({status}); its error is above",
                    self.name
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} did not become ready within {START_TIMEOUT:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks the daemon to stop and waits for it; kills it if it does not stop in time.
    pub async fn stop(mut self) {
        if self.output_file.is_some() {
            if let Some(pid) = self.child.id() {
                let _ = crate::instances::send_signal(pid, rustix::process::Signal::TERM);
            }
            self.wait_stopped().await;
            return;
        }
        // A one-shot task is ended at once (a restore resumes when run again).
        let stdin = match self.stdin.take() {
            Some(stdin) if !self.task => stdin,
            _ => {
                let _ = self.child.kill().await;
                return;
            }
        };
        drop(stdin);
        self.wait_stopped().await;
    }

    /// Waits for the daemon asked to stop; kills it if it does not stop in time.
    async fn wait_stopped(&mut self) {
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => eprintln!("{} stopped with {status}", self.name),
            Ok(Err(e)) => eprintln!("waiting for {}: {e}", self.name),
            Err(_) => {
                eprintln!(
                    "{} did not stop within {STOP_TIMEOUT:?}; killing it",
                    self.name
                );
                let _ = self.child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_s_last_progress_line_is_kept() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "echo 'progress: 10%'; echo noise; echo 'progress: 60% (6 of 10)'; echo 'restored x'",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (progress, _reader) = follow_progress(lines);
        child.wait().await.unwrap();
        for _ in 0..100 {
            if progress.lock().unwrap().as_deref() == Some("60% (6 of 10)") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("last progress: {:?}", progress.lock().unwrap());
    }
}
