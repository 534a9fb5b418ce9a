//! Deleting backups against a real S3-compatible server: of three incremental backups,
//! deleting the first keeps the other two restorable (byte for byte the volume at their
//! snapshots) and frees exactly the blocks only the first one used; deleting the rest
//! leaves no block, record or lock behind.

use std::collections::BTreeSet;

use crate::backupstore::{
    LOCK_TTL, S3Server, backup_create, backup_name, backup_restore, dir_sha, export_sha, field,
    files_under, listed, referenced_blocks, shorthorn_env, shorthorn_env_ok, stored_blocks,
};
use crate::common::{MIB, Volume, qemu_io, shorthorn_ok};

const PREFIX: &str = "gc";

fn rm(url: &str, env: &[(String, String)]) -> Vec<(String, String)> {
    crate::backupstore::fields(&shorthorn_env_ok(
        &["backup", "rm", url, "--lock-ttl", LOCK_TTL],
        env,
    ))
}

#[test]
fn deleting_the_first_of_three_backups_frees_only_its_own_blocks() {
    let s3 = S3Server::start();
    let (target, env, objects) = (s3.target(PREFIX), s3.env(), s3.objects(PREFIX));
    let volume = Volume::start("gcvol", 32 * MIB, 1);
    let (engine, uri, scratch) = (volume.engine_addr(), volume.uri(), volume.scratch());

    let mut urls = Vec::new();
    let mut hashes = Vec::new();
    for (i, writes) in [
        // Distinct blocks: identical ones are stored once.
        vec![
            "write -P 0x11 0 2M",
            "write -P 0x13 2M 2M",
            "write -P 0x14 4M 2M",
            "write -P 0x12 20M 2M",
        ],
        vec!["write -P 0x21 0 2M", "write -P 0x22 24M 1M"],
        vec!["write -P 0x31 2M 2M", "write -z 20M 2M"],
    ]
    .into_iter()
    .enumerate()
    {
        qemu_io(&uri, &writes);
        let snapshot = format!("s{}", i + 1);
        shorthorn_ok(&["--engine", &engine, "snapshot", "create", &snapshot]);
        hashes.push(export_sha(&uri, &scratch));
        urls.push(backup_create(&engine, &snapshot, &target, &env, &[]));
    }
    let names: Vec<String> = urls.iter().map(|u| backup_name(u)).collect();
    assert_eq!(listed(&target, "gcvol", &env), names);

    let refs: Vec<BTreeSet<String>> = names
        .iter()
        .map(|n| referenced_blocks(&objects, "gcvol", n))
        .collect();
    let before = stored_blocks(&objects, "gcvol");
    assert_eq!(
        before,
        refs.iter().flatten().cloned().collect(),
        "every stored block belongs to a backup"
    );
    let only_first: BTreeSet<String> = refs[0]
        .iter()
        .filter(|h| !refs[1].contains(*h) && !refs[2].contains(*h))
        .cloned()
        .collect();
    assert!(
        !only_first.is_empty() && only_first.len() < refs[0].len(),
        "the test needs blocks the first backup shares and blocks it alone has"
    );

    let removed = rm(&urls[0], &env);
    assert_eq!(
        field(&removed, "freed_blocks"),
        only_first.len() as u64,
        "{removed:?}"
    );
    assert_eq!(field(&removed, "remaining_backups"), 2);
    let after = stored_blocks(&objects, "gcvol");
    assert_eq!(
        before.difference(&after).cloned().collect::<BTreeSet<_>>(),
        only_first,
        "exactly the blocks only the first backup used are gone"
    );
    assert_eq!(listed(&target, "gcvol", &env), names[1..].to_vec());
    let gone = shorthorn_env(
        &[
            "backup",
            "restore",
            &urls[0],
            "--to",
            crate::common::path_str(&scratch.join("x")),
        ],
        &env,
    );
    assert!(
        !gone.success() && gone.stderr.contains("has no backup"),
        "{gone:?}"
    );

    for (i, url) in urls.iter().enumerate().skip(1) {
        let dir = scratch.join(format!("restored{i}"));
        backup_restore(url, &dir, &env);
        assert_eq!(
            dir_sha(&dir, &scratch),
            hashes[i],
            "backup {i} after the deletion"
        );
    }

    rm(&urls[2], &env);
    let last = rm(&urls[1], &env);
    assert_eq!(field(&last, "remaining_backups"), 0);
    assert!(listed(&target, "gcvol", &env).is_empty());
    let left = files_under(&objects);
    assert!(
        left.is_empty(),
        "the store keeps nothing of a volume without backups: {left:?}"
    );
}
