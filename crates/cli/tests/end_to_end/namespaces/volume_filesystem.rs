//! A real filesystem on a three-replica `launch-simple` volume, without the kernel's nbd
//! module: nbdfuse turns the NBD export into a file, a loop device turns that into a
//! block device, ext4 goes on it. Files written through the mounted filesystem keep
//! their checksums across umount/mount, `fsck.ext4 -fn` finds nothing to fix, and after
//! the volume stops every replica is identical and holds that clean filesystem with
//! those files (checked offline with fsck and debugfs on an exported replica).
//!
//! Every mount, loop device and FUSE mount is undone by a guard, also when the test
//! fails half-way.

use std::path::Path;

use crate::blockdev::{FuseFile, LoopDevice, Mount, MountArea, TIMEOUT};
use crate::common::{MIB, Outcome, Volume, path_str, pattern, require, run, run_ok, sha256};

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

    let mounts = MountArea::new(&scratch.join("mounts"));
    let fuse = FuseFile::start(
        &mounts.path().join("fuse"),
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

    let target = mounts.path().join("mnt");
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
