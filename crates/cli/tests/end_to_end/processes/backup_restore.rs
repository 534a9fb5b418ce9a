//! Backup and restore of a live volume, against a real S3-compatible server (s3s-fs) and
//! against a `file://` target: a full backup of snapshot s1, writes (data, zeroes), an
//! incremental backup of s2 that reads only the blocks the new layer wrote, restores of
//! both compared byte for byte with the volume at each snapshot, an incremental restore
//! of s2 onto the directory holding s1 (only changed blocks fetched, zeroed blocks
//! unmapped), and a restored directory served by a replica and an engine.

use crate::backupstore::{
    S3Server, Served, backup_create, backup_name, backup_restore, dir_sha, export_sha, field,
    shorthorn_env_ok,
};
use crate::common::{MIB, Volume, qemu_io, shorthorn_ok};

const SIZE: u64 = 64 * MIB;
const BLOCK: u64 = 2 * MIB;

fn round_trip(target: &str, env: &[(String, String)]) {
    let volume = Volume::start("bvol", SIZE, 2);
    let engine = volume.engine_addr();
    let uri = volume.uri();
    let scratch = volume.scratch();
    qemu_io(
        &uri,
        &[
            "write -P 0xa1 0 8M",
            "write -P 0xb2 30M 3M",
            "write -P 0xc3 63M 1M",
        ],
    );
    shorthorn_ok(&["--engine", &engine, "snapshot", "create", "s1"]);
    let at_s1 = export_sha(&uri, &scratch);
    let b1 = backup_create(&engine, "s1", target, env, &[]);

    // Block 0 changes, block 15 becomes zeros, block 20 is new.
    qemu_io(
        &uri,
        &[
            "write -P 0xd4 1M 512k",
            "write -z 30M 2M",
            "write -P 0xe5 40M 1M",
        ],
    );
    shorthorn_ok(&["--engine", &engine, "snapshot", "create", "s2"]);
    let at_s2 = export_sha(&uri, &scratch);
    let b2 = backup_create(&engine, "s2", target, env, &["--label", "kind=nightly"]);
    // The volume moves on; the backups must not.
    qemu_io(&uri, &["write -P 0xf6 0 64M"]);

    let inspected: serde_json::Value =
        serde_json::from_str(&shorthorn_env_ok(&["backup", "inspect", &b2], env)).unwrap();
    let b1_name = backup_name(&b1);
    assert_eq!(inspected["base"], b1_name, "{inspected}");
    assert_eq!(inspected["labels"]["kind"], "nightly");
    assert_eq!(
        inspected["stats"]["read_bytes"],
        3 * BLOCK,
        "the incremental backup reads only the 3 blocks s2's layer wrote: {inspected}"
    );
    assert!(
        inspected["stats"]["uploaded_blocks"].as_u64().unwrap() <= 2,
        "{inspected}"
    );
    // 8 MiB + 4 MiB (30..34M) + 2 MiB (62..64M), then -1 zeroed block +1 new block.
    assert_eq!(inspected["stats"]["logical_bytes"], 14 * MIB, "{inspected}");

    let r1 = scratch.join("r1");
    let r2 = scratch.join("r2");
    let restored = backup_restore(&b1, &r1, env);
    assert_eq!(field(&restored, "fetched_blocks"), 7, "{restored:?}");
    assert_eq!(dir_sha(&r1, &scratch), at_s1, "restore of s1's backup");
    backup_restore(&b2, &r2, env);
    assert_eq!(dir_sha(&r2, &scratch), at_s2, "restore of s2's backup");

    // A standby volume follows: s2 restored onto the directory holding s1.
    let updated = backup_restore(&b2, &r1, env);
    let summary = format!("{updated:?}");
    assert!(summary.contains("(\"incremental\", \"true\")"), "{summary}");
    assert_eq!(field(&updated, "fetched_blocks"), 2, "{summary}");
    assert_eq!(field(&updated, "zeroed_blocks"), 1, "{summary}");
    assert_eq!(dir_sha(&r1, &scratch), at_s2, "incremental restore of s2");
    // Nothing to do the second time.
    let again = backup_restore(&b2, &r1, env);
    assert_eq!(field(&again, "fetched_blocks"), 0, "{again:?}");

    // A restored directory is a replica: serve it and read the volume through NBD.
    let served = Served::start(&r2, "bvol", SIZE);
    assert_eq!(export_sha(&served.uri, &scratch), at_s2);
    qemu_io(&served.uri, &["write -P 0x77 0 1M", "read -P 0x77 0 1M"]);
}

#[test]
fn backup_and_restore_through_s3() {
    let s3 = S3Server::start();
    round_trip(&s3.target("cluster-a/backups"), &s3.env());
}

#[test]
fn backup_and_restore_through_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("file://{}/store", dir.path().display());
    round_trip(&target, &[]);
}
