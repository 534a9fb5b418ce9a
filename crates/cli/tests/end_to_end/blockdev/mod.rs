//! A volume as a real block device without the kernel's nbd module: nbdfuse turns the
//! NBD export into a file, a loop device turns that into a block device, and a mount
//! puts a filesystem on it. Each step is a guard that undoes itself on drop, so a test
//! that fails half-way leaves no mount, loop device or FUSE mount behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{path_str, require, run, run_ok};

/// Time limit of mount-related commands.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The directory a test's FUSE and ext4 mounts go under: bind-mounted on itself and made
/// shared, unmounted on drop. The root mount here is private, so a network namespace
/// another test enters meanwhile (`ip netns exec` copies the mount table) would keep its
/// own copy of our mounts after we unmount ours, holding the loop device and the FUSE
/// file busy until that test's processes exit. Under a shared mount the copies are
/// slaves, and our unmounts reach them.
pub struct MountArea {
    dir: Option<PathBuf>,
}

impl MountArea {
    pub fn new(dir: &Path) -> MountArea {
        std::fs::create_dir_all(dir).unwrap();
        let dir_str = path_str(dir);
        run_ok("mount", &["--bind", dir_str, dir_str]);
        let area = MountArea {
            dir: Some(dir.to_owned()),
        };
        run_ok("mount", &["--make-rshared", dir_str]);
        area
    }

    pub fn path(&self) -> &Path {
        self.dir.as_deref().unwrap()
    }
}

impl Drop for MountArea {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let dir = path_str(&dir).to_owned();
            if !run("umount", &[&dir], TIMEOUT).success() {
                let _ = run("umount", &["-l", &dir], TIMEOUT);
            }
        }
    }
}

/// nbdfuse serving the volume as the file `DIR/dev`; unmounted and stopped on drop.
pub struct FuseFile {
    dir: PathBuf,
    child: Option<Child>,
}

impl FuseFile {
    pub fn start(dir: &Path, uri: &str, size: u64, log: &Path) -> FuseFile {
        let nbdfuse = require("nbdfuse", "libnbd-bin");
        require("fusermount3", "fuse3");
        std::fs::create_dir_all(dir).unwrap();
        let log_file = std::fs::File::create(log).unwrap();
        let child = Command::new(nbdfuse)
            .arg(dir.join("dev"))
            .arg(uri)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut fuse = FuseFile {
            dir: dir.to_owned(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::fs::metadata(fuse.file()).is_ok_and(|m| m.len() == size) {
                return fuse;
            }
            if let Ok(Some(status)) = fuse.child.as_mut().unwrap().try_wait() {
                panic!(
                    "nbdfuse exited with {status}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nbdfuse did not show {} within 30 s:\n{}",
                fuse.file().display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("dev")
    }

    /// `fusermount3 -u`, then nbdfuse must exit by itself with status 0.
    pub fn unmount(mut self) {
        // The kernel may still hold the file for a moment after the loop device was
        // detached ("Device or resource busy"): retry, bounded.
        let mut attempts = 0;
        let out = loop {
            let out = run("fusermount3", &["-u", path_str(&self.dir)], TIMEOUT);
            attempts += 1;
            if out.success() || !out.stderr.contains("busy") || attempts == 20 {
                break out;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        assert!(
            out.success(),
            "fusermount3 -u failed after {attempts} attempts: {out:?}"
        );
        let mut child = self.child.take().unwrap();
        let status = crate::common::wait_bounded(&mut child, Duration::from_secs(30));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "nbdfuse did not exit cleanly after fusermount3 -u: {status:?}"
        );
    }
}

impl Drop for FuseFile {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let dir = path_str(&self.dir).to_owned();
            let _ = run("fusermount3", &["-u", &dir], TIMEOUT);
            if crate::common::wait_bounded(&mut child, Duration::from_secs(10)).is_none() {
                let _ = run("fusermount3", &["-uz", &dir], TIMEOUT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A loop device over a file; detached on drop.
pub struct LoopDevice {
    dev: Option<String>,
}

impl LoopDevice {
    pub fn attach(file: &Path) -> LoopDevice {
        let losetup = require("losetup", "mount");
        let dev = run_ok(&losetup, &["-f", "--show", path_str(file)])
            .trim()
            .to_owned();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        LoopDevice { dev: Some(dev) }
    }

    pub fn dev(&self) -> &str {
        self.dev.as_deref().unwrap()
    }

    pub fn detach(mut self) {
        let dev = self.dev.take().unwrap();
        let out = run("losetup", &["-d", &dev], TIMEOUT);
        assert!(out.success(), "losetup -d {dev} failed: {out:?}");
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Some(dev) = self.dev.take() {
            let _ = run("losetup", &["-d", &dev], TIMEOUT);
        }
    }
}

/// A mounted filesystem; unmounted on drop (lazily if it is busy).
pub struct Mount {
    target: Option<PathBuf>,
}

impl Mount {
    /// Mounts the ext4 filesystem on `dev` at `target`.
    pub fn new(dev: &str, target: &Path) -> Mount {
        std::fs::create_dir_all(target).unwrap();
        let out = run("mount", &["-t", "ext4", dev, path_str(target)], TIMEOUT);
        assert!(out.success(), "mount {dev} failed: {out:?}");
        Mount {
            target: Some(target.to_owned()),
        }
    }

    pub fn path(&self) -> &Path {
        self.target.as_deref().unwrap()
    }

    pub fn unmount(mut self) {
        let target = self.target.take().unwrap();
        let out = run("umount", &[path_str(&target)], TIMEOUT);
        assert!(out.success(), "umount failed: {out:?}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(target) = self.target.take() {
            let target = path_str(&target).to_owned();
            if !run("umount", &[&target], TIMEOUT).success() {
                let _ = run("umount", &["-l", &target], TIMEOUT);
            }
        }
    }
}
