//! A real filesystem on a three-replica `launch-simple` volume, without the kernel's nbd
//! module: nbdfuse turns the NBD export into a file, a loop device turns that into a
//! block device, ext4 goes on it. Files written through the mounted filesystem keep
//! their checksums across umount/mount, `fsck.ext4 -fn` finds nothing to fix, and after
//! the volume stops every replica is identical and holds that clean filesystem with
//! those files (checked offline with fsck and debugfs on an exported replica).
//!
//! Every mount, loop device and FUSE mount is undone by a guard, also when the test
//! fails half-way.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{MIB, Outcome, Volume, path_str, pattern, require, run, run_ok, sha256};

/// Time limit of mount-related commands.
const TIMEOUT: Duration = Duration::from_secs(60);

/// nbdfuse serving the volume as the file `DIR/dev`; unmounted and stopped on drop.
struct FuseFile {
    dir: PathBuf,
    child: Option<Child>,
}

impl FuseFile {
    fn start(dir: &Path, uri: &str, size: u64, log: &Path) -> FuseFile {
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

    fn file(&self) -> PathBuf {
        self.dir.join("dev")
    }

    /// `fusermount3 -u`, then nbdfuse must exit by itself with status 0.
    fn unmount(mut self) {
        let out = run("fusermount3", &["-u", path_str(&self.dir)], TIMEOUT);
        assert!(out.success(), "fusermount3 -u failed: {out:?}");
        let mut child = self.child.take().unwrap();
        let status = common::wait_bounded(&mut child, Duration::from_secs(30));
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
            if common::wait_bounded(&mut child, Duration::from_secs(10)).is_none() {
                let _ = run("fusermount3", &["-uz", &dir], TIMEOUT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A loop device over a file; detached on drop.
struct LoopDevice {
    dev: Option<String>,
}

impl LoopDevice {
    fn attach(file: &Path) -> LoopDevice {
        let losetup = require("losetup", "mount");
        let dev = run_ok(&losetup, &["-f", "--show", path_str(file)])
            .trim()
            .to_owned();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        LoopDevice { dev: Some(dev) }
    }

    fn dev(&self) -> &str {
        self.dev.as_deref().unwrap()
    }

    fn detach(mut self) {
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
struct Mount {
    target: Option<PathBuf>,
}

impl Mount {
    /// Mounts the ext4 filesystem on `dev` at `target`.
    fn new(dev: &str, target: &Path) -> Mount {
        std::fs::create_dir_all(target).unwrap();
        let out = run("mount", &["-t", "ext4", dev, path_str(target)], TIMEOUT);
        assert!(out.success(), "mount {dev} failed: {out:?}");
        Mount {
            target: Some(target.to_owned()),
        }
    }

    fn path(&self) -> &Path {
        self.target.as_deref().unwrap()
    }

    fn unmount(mut self) {
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

/// The files the test writes: (path inside the filesystem, content seed, length).
const FILES: &[(&str, u64, usize)] = &[
    ("a.bin", 1, 3 * MIB as usize),
    ("b.bin", 2, 1_234_567),
    ("dir/c.bin", 3, 2 * MIB as usize + 1),
    ("dir/sub/d.txt", 4, 100),
];

fn checksums_in(root: &Path) -> Vec<(String, String)> {
    FILES
        .iter()
        .map(|(name, _, _)| ((*name).to_owned(), sha256(&root.join(name))))
        .collect()
}

fn assert_fsck_clean(target: &str) -> Outcome {
    let fsck = require("fsck.ext4", "e2fsprogs");
    let out = run(&fsck, &["-fn", target], TIMEOUT);
    assert!(
        out.success(),
        "fsck.ext4 -fn {target} found problems (exit {:?}):\n{}",
        out.code,
        out.all()
    );
    out
}

#[test]
fn ext4_on_nbdfuse_and_loop_survives_remount_and_fsck() {
    let mkfs = require("mkfs.ext4", "e2fsprogs");
    let debugfs = require("debugfs", "e2fsprogs");
    let mut volume = Volume::start("fs", 128 * MIB, 3);
    let scratch = volume.scratch();

    // The files' content, and its checksums, prepared outside the volume.
    let source = scratch.join("source");
    for (name, seed, len) in FILES {
        let path = source.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pattern(*seed, *len)).unwrap();
    }
    let expected = checksums_in(&source);

    let fuse = FuseFile::start(
        &scratch.join("fuse"),
        &volume.uri(),
        volume.size,
        &scratch.join("nbdfuse.log"),
    );
    let device = LoopDevice::attach(&fuse.file());
    // Inode tables and journal written now, not by a kernel thread after mounting.
    let out = run(
        &mkfs,
        &[
            "-F",
            "-q",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            device.dev(),
        ],
        TIMEOUT,
    );
    assert!(out.success(), "mkfs.ext4 failed: {out:?}");

    let target = scratch.join("mnt");
    let mount = Mount::new(device.dev(), &target);
    for (name, _, _) in FILES {
        let to = mount.path().join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(source.join(name), &to).unwrap();
    }
    assert!(run("sync", &[], TIMEOUT).success());
    assert_eq!(checksums_in(mount.path()), expected, "before umount");
    mount.unmount();

    assert_fsck_clean(device.dev());

    let mount = Mount::new(device.dev(), &target);
    assert_eq!(
        checksums_in(mount.path()),
        expected,
        "after umount and mount"
    );
    mount.unmount();
    device.detach();
    fuse.unmount();
    volume.assert_healthy();

    volume.stop();
    volume.assert_replicas_identical(&[]);

    // What the replicas hold is that clean filesystem with those files.
    let image = volume.export_replica(1);
    assert_fsck_clean(path_str(&image));
    let dumped = scratch.join("dumped");
    for (name, _, _) in FILES {
        let to = dumped.join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        run_ok(
            &debugfs,
            &[
                "-R",
                &format!("dump /{name} {}", path_str(&to)),
                path_str(&image),
            ],
        );
    }
    assert_eq!(
        checksums_in(&dumped),
        expected,
        "files read offline from replica 1's exported image"
    );
}
