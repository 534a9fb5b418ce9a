//! Reverting a live volume to a snapshot of an ext4 filesystem on it.
//!
//! ext4 goes on a three-replica `launch-simple` volume (nbdfuse → loop device →
//! mkfs.ext4 → mount); file A is written and synced; snapshot `s0` is taken through the
//! engine of the live filesystem (crash consistent), then `s1` with the filesystem
//! frozen (`fsfreeze`, so it holds a clean filesystem, as snapshot tools do); then file B
//! is written. With everything unmounted and detached, `snapshot revert s1` is refused
//! while the frontend still serves (exit 1, a message naming the frontend, nothing
//! changed); after `frontend stop` the revert succeeds and `frontend start` serves the
//! volume again. Attached afresh, the filesystem passes `fsck.ext4 -fn`, A has its
//! checksum and B is gone. Reverting again, to `s0`, gives a filesystem whose journal
//! replays on mount to the same A without B, clean afterwards. After the volume stops,
//! every replica is identical, with the head on `s0` and `s1` kept on its branch.
//!
//! Every mount, freeze, loop device and FUSE mount is undone by a guard, also when the
//! test fails half-way.

use std::path::{Path, PathBuf};

use crate::blockdev::{FuseFile, LoopDevice, Mount, MountArea, TIMEOUT};
use crate::common::{MIB, Volume, path_str, pattern, require, run, sha256};
use crate::ops::{assert_clean_failure, engine_layers, on_engine, on_engine_ok, snapshot_names};

/// A frozen filesystem (`fsfreeze -f`); thawed on drop, so a failing test never leaves a
/// mount that blocks every writer and its own unmount.
struct Frozen {
    target: Option<PathBuf>,
}

impl Frozen {
    fn freeze(target: &Path) -> Frozen {
        let fsfreeze = require("fsfreeze", "util-linux");
        let out = run(&fsfreeze, &["-f", path_str(target)], TIMEOUT);
        assert!(out.success(), "fsfreeze -f failed: {out:?}");
        Frozen {
            target: Some(target.to_owned()),
        }
    }

    fn thaw(mut self) {
        let target = self.target.take().unwrap();
        let out = run("fsfreeze", &["-u", path_str(&target)], TIMEOUT);
        assert!(out.success(), "fsfreeze -u failed: {out:?}");
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(target) = self.target.take() {
            let _ = run("fsfreeze", &["-u", path_str(&target)], TIMEOUT);
        }
    }
}

fn assert_fsck_clean(target: &str, context: &str) {
    let fsck = require("fsck.ext4", "e2fsprogs");
    let out = run(&fsck, &["-fn", target], TIMEOUT);
    assert!(
        out.success(),
        "fsck.ext4 -fn {target} found problems {context} (exit {:?}):\n{}",
        out.code,
        out.all()
    );
}

fn frontend_line(info: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix("frontend:"))
        .unwrap_or_else(|| panic!("info has no frontend line:\n{info}"))
        .trim()
        .to_owned()
}

/// nbdfuse and a loop device over the volume: a fresh block device, no cache from before.
fn attach(volume: &Volume, mounts: &MountArea, round: u32) -> (FuseFile, LoopDevice) {
    let scratch = volume.scratch();
    let fuse = FuseFile::start(
        &mounts.path().join("fuse"),
        &volume.uri(),
        volume.size,
        &scratch.join(format!("nbdfuse-{round}.log")),
    );
    let device = LoopDevice::attach(&fuse.file());
    (fuse, device)
}

/// `frontend stop`, `snapshot revert NAME`, `frontend start`, checking what each says.
fn revert(volume: &Volume, name: &str) {
    on_engine_ok(volume, &["frontend", "stop"]);
    assert_eq!(frontend_line(&volume.info()), "none", "after frontend stop");
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let probe = run(&nbdinfo, &["--size", &volume.uri()], TIMEOUT);
    assert!(
        !probe.success(),
        "a new NBD connection succeeded while the frontend was stopped: {probe:?}"
    );
    let reverted = on_engine_ok(volume, &["snapshot", "revert", name]);
    assert!(reverted.contains(name), "revert output: {reverted}");
    let started = on_engine_ok(volume, &["frontend", "start"]);
    assert!(
        started.contains(&volume.uri()),
        "frontend start should print {}: {started}",
        volume.uri()
    );
    assert_eq!(frontend_line(&volume.info()), volume.uri());
    let layers = engine_layers(volume);
    let head = layers.iter().find(|l| l.head).unwrap();
    assert_eq!(
        head.parent.as_deref(),
        Some(name),
        "after reverting, the head sits on {name}: {layers:?}"
    );
}

#[test]
fn revert_to_a_snapshot_brings_back_the_filesystem_it_held() {
    let mkfs = require("mkfs.ext4", "e2fsprogs");
    let mut volume = crate::ops::start_volume("revert", 128 * MIB, 3, &|_| vec![]);
    let scratch = volume.scratch();
    let mounts = MountArea::new(&scratch.join("mounts"));
    let target = mounts.path().join("mnt");

    let file_a = pattern(0xA, 3 * MIB as usize + 4321);
    let file_b = pattern(0xB, 2 * MIB as usize + 17);
    std::fs::write(scratch.join("a.src"), &file_a).unwrap();
    std::fs::write(scratch.join("b.src"), &file_b).unwrap();
    let hash_a = sha256(&scratch.join("a.src"));
    let hash_b = sha256(&scratch.join("b.src"));

    // ext4 on the volume; A, synced; s0 of the live filesystem (crash consistent: its
    // journal needs replaying) and s1 of the frozen one (clean); then B.
    let (fuse, device) = attach(&volume, &mounts, 1);
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
    let mount = Mount::new(device.dev(), &target);
    std::fs::copy(scratch.join("a.src"), mount.path().join("a.bin")).unwrap();
    assert!(run("sync", &[], TIMEOUT).success());
    assert_eq!(sha256(&mount.path().join("a.bin")), hash_a, "A after sync");
    let printed = on_engine_ok(&volume, &["snapshot", "create", "s0"]);
    assert_eq!(printed.trim(), "s0", "snapshot create prints the name");
    let frozen = Frozen::freeze(mount.path());
    let printed = on_engine_ok(&volume, &["snapshot", "create", "s1"]);
    assert_eq!(printed.trim(), "s1", "snapshot create prints the name");
    frozen.thaw();

    std::fs::copy(scratch.join("b.src"), mount.path().join("b.bin")).unwrap();
    assert!(run("sync", &[], TIMEOUT).success());
    assert_eq!(sha256(&mount.path().join("b.bin")), hash_b, "B after sync");
    mount.unmount();
    device.detach();
    fuse.unmount();

    // Nothing holds the frontend now, but it still serves: revert is refused and
    // changes nothing.
    let before = engine_layers(&volume);
    let refused = on_engine(&volume, &["snapshot", "revert", "s1"]);
    let message = assert_clean_failure(&refused, &["frontend"], "revert while serving");
    eprintln!("revert while serving: {message}");
    assert_eq!(
        engine_layers(&volume),
        before,
        "a refused revert changed the snapshot tree"
    );
    assert_eq!(frontend_line(&volume.info()), volume.uri());

    // Revert to s1 (clean): fsck finds nothing, A is intact, B is gone.
    revert(&volume, "s1");
    let (fuse, device) = attach(&volume, &mounts, 2);
    assert_fsck_clean(device.dev(), "after reverting to s1");
    let mount = Mount::new(device.dev(), &target);
    assert_eq!(
        sha256(&mount.path().join("a.bin")),
        hash_a,
        "A after reverting to s1"
    );
    assert!(
        !mount.path().join("b.bin").exists(),
        "B was written after s1 and should be gone after reverting to s1"
    );
    mount.unmount();
    device.detach();
    fuse.unmount();

    // Revert to s0 (taken without freezing): mounting replays the journal, A is
    // intact, B is gone, and the filesystem is clean once unmounted.
    revert(&volume, "s0");
    let (fuse, device) = attach(&volume, &mounts, 3);
    let mount = Mount::new(device.dev(), &target);
    assert_eq!(
        sha256(&mount.path().join("a.bin")),
        hash_a,
        "A after reverting to s0"
    );
    assert!(
        !mount.path().join("b.bin").exists(),
        "B should be gone after reverting to s0"
    );
    mount.unmount();
    assert_fsck_clean(device.dev(), "after reverting to s0 and mounting once");
    device.detach();
    fuse.unmount();
    volume.assert_healthy();

    volume.stop();
    volume.assert_replicas_identical(&[]);
    for index in 1..=volume.replicas {
        let layers = crate::ops::store_layers(&volume.replica_dir(index));
        assert_eq!(
            snapshot_names(&layers),
            ["s0", "s1"],
            "replica {index}: {layers:?}"
        );
        let head = layers.iter().find(|l| l.head).unwrap();
        assert_eq!(head.parent.as_deref(), Some("s0"), "replica {index}");
    }
    // What s1 holds is the clean filesystem with A and without B.
    let image = crate::ops::export_snapshot(&volume.replica_dir(1), "s1", &scratch.join("s1.raw"));
    assert_fsck_clean(path_str(&image), "in snapshot s1 exported offline");
}
