//! The CSI driver (`shorthorn csi`) over a real `shorthorn up`, driven as Kubernetes
//! would drive it: csi-sanity, and the gRPC calls of the kubelet and the sidecars. Root:
//! the node service makes loop devices and mounts. Each behaviour is one module.

pub mod client;
mod lifecycle;
mod restart;
mod sanity;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BIN, kill_processes_mentioning, path_str, run};
use crate::upnode::Node;

/// `shorthorn csi --mode all` for `node`, its socket, state and allowed root under
/// `dir`; on drop it is stopped and everything it left under `dir` (mounts, loop
/// devices, nbdfuse) is undone, so a failed test cleans up too.
pub struct CsiDriver {
    dir: PathBuf,
    child: Option<Child>,
}

impl CsiDriver {
    pub fn start(node: &Node, dir: &Path) -> CsiDriver {
        std::fs::create_dir_all(dir.join("root")).unwrap();
        let mut driver = CsiDriver {
            dir: dir.to_path_buf(),
            child: None,
        };
        driver.spawn(node);
        driver
    }

    /// Kills the driver (SIGKILL, as a crash would) and starts it again.
    pub fn restart(&mut self, node: &Node) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(node);
    }

    fn spawn(&mut self, node: &Node) {
        let dir = self.dir.clone();
        let _ = std::fs::remove_file(self.socket());
        // Its own copy of the token, as a mounted Secret would be.
        std::fs::copy(node.data_dir().join("token"), dir.join("token")).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("csi.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args([
                "csi",
                "--endpoint",
                &format!("unix://{}", path_str(&dir.join("csi.sock"))),
                "--node-id",
                "node-1",
                "--manager-url",
                &node.url(),
                "--token-file",
                path_str(&dir.join("token")),
                "--state-dir",
                path_str(&dir.join("state")),
                "--allowed-root",
                path_str(&dir.join("root")),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "shorthorn csi did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("csi.sock")
    }

    /// Where staging and target paths may be.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("csi.log")).unwrap_or_default()
    }

    /// Fails the test if anything is left: mounts, loop devices or nbdfuse processes
    /// under the driver's directory, or volumes in `node`'s manager.
    pub fn assert_nothing_left(&self, node: &Node) {
        let left = self.leftovers();
        assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
        let volumes = node.cli_ok(&["volume", "ls"]);
        assert_eq!(
            volumes.lines().count(),
            1,
            "volumes left in the manager:\n{volumes}"
        );
    }

    /// What is left under the driver's directory: mounts, loop devices, nbdfuse
    /// processes (each a line; empty when nothing).
    pub fn leftovers(&self) -> Vec<String> {
        leftovers_under(&self.dir)
    }
}

/// Attached loop devices and their backing files, from sysfs (`losetup -a` would hang on
/// a FUSE file whose server died).
fn loop_devices() -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let file = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            Some((format!("/dev/{name}"), file.trim().to_owned()))
        })
        .collect()
}

/// What is left under `dir`: mounts, loop devices, nbdfuse processes (a line each).
pub fn leftovers_under(dir: &Path) -> Vec<String> {
    let dir = path_str(dir).to_owned();
    let mut left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(|l| format!("mount: {l}"))
        .collect();
    left.extend(
        loop_devices()
            .into_iter()
            .filter(|(_, file)| file.contains(&dir))
            .map(|(device, file)| format!("loop: {device} on {file}")),
    );
    left.extend(
        crate::common::processes_mentioning(&dir)
            .into_iter()
            .filter(|(_, cmdline)| cmdline.first().is_some_and(|p| p.ends_with("nbdfuse")))
            .map(|(pid, cmdline)| format!("process {pid}: {}", cmdline.join(" "))),
    );
    left
}

impl Drop for CsiDriver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        undo_under(&self.dir);
    }
}

/// What CSI drivers left under `dir`: unmounts (deepest first), detaches loop devices
/// and kills nbdfuse processes there; for a test's cleanup, also after a failure.
pub fn undo_under(dir: &Path) {
    let dir = path_str(dir).to_owned();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&dir))
        .collect();
    // Deepest first: bind mounts before what they show.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        let _ = run("umount", &["-l", &mount], Duration::from_secs(10));
    }
    for (device, _) in loop_devices()
        .into_iter()
        .filter(|(_, file)| file.contains(&dir))
    {
        let _ = run("losetup", &["-d", &device], Duration::from_secs(10));
    }
    kill_processes_mentioning(&dir);
}
