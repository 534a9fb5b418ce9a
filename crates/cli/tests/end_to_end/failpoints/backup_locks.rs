//! Backupstore locks between processes, and `kill -9` in the middle of backups, restores
//! and deletions, against a real S3-compatible server.
//!
//! Operations are stopped at fault-injection points (`SHORTHORN_CRASH_AT`, built with
//! the `failpoints` feature) where they hold their lock: a backup with every block
//! uploaded but no record yet, a restore after its first block, a deletion after its
//! record is gone but before garbage collection. While one hangs there:
//! - a deletion waits for a running backup or restore, then fails after `--lock-wait`
//!   naming what it waited for;
//! - a restore runs beside a running backup;
//! - a backup, and a second deletion, wait for a running deletion;
//! - after `kill -9` of the holder, its lock expires (3 s time-to-live) and the waiting
//!   operation goes on.
//!
//! After the kills, listing shows only complete backups, every remaining backup restores
//! to the volume's content at its snapshot, and the store holds exactly the blocks the
//! remaining backups reference (the killed backup's uploads were collected).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::backupstore::{
    LOCK_TTL, S3Server, backup_create, backup_name, backup_restore, command, dir_sha, export_sha,
    files_under, listed, referenced_blocks, shorthorn_env, stored_blocks,
};
use crate::common::{MIB, Volume, path_str, qemu_io, shorthorn_ok, wait_bounded};

const VOLUME: &str = "lockvol";
const PREFIX: &str = "locks";

/// A `shorthorn` process stopped at a fault-injection point, holding its lock. Killed
/// (SIGKILL) on drop.
struct Hung {
    child: Child,
    stderr: PathBuf,
}

impl Hung {
    /// Starts `shorthorn ARGS` with `SHORTHORN_CRASH_AT=point` and waits until it gets
    /// there.
    fn start(args: &[&str], env: &[(String, String)], point: &str, scratch: &Path) -> Hung {
        let stderr = scratch.join(format!("hung-{}.log", crate::common::random_u64()));
        let child = command(args, env)
            .env("SHORTHORN_CRASH_AT", point)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut hung = Hung { child, stderr };
        let deadline = Instant::now() + Duration::from_secs(60);
        let marker = format!("crash point reached: {point}");
        loop {
            let log = std::fs::read_to_string(&hung.stderr).unwrap_or_default();
            if log.contains(&marker) {
                return hung;
            }
            if let Ok(Some(status)) = hung.child.try_wait() {
                panic!("shorthorn {args:?} exited with {status} before {point}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "{args:?} never reached {point}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rm_args<'a>(url: &'a str, wait: &'a str) -> Vec<&'a str> {
    vec![
        "backup",
        "rm",
        url,
        "--lock-wait",
        wait,
        "--lock-ttl",
        LOCK_TTL,
    ]
}

/// Asserts that `args` fails after about `--lock-wait` (2 s), naming `holder`.
fn times_out_waiting_for(args: &[&str], env: &[(String, String)], holder: &str) {
    let outcome = shorthorn_env(args, env);
    assert!(
        !outcome.success(),
        "{args:?} ran beside {holder}: {outcome:?}"
    );
    assert!(
        outcome.stderr.contains("waited 2.0s for") && outcome.stderr.contains(holder),
        "{args:?}: the error must name what it waited for ({holder}): {}",
        outcome.stderr
    );
    assert!(
        outcome.elapsed >= Duration::from_secs(2) && outcome.elapsed < Duration::from_secs(20),
        "waited {:?}",
        outcome.elapsed
    );
}

/// Block hashes stored for the volume, and those its backup records reference.
fn stored_and_referenced(objects: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let referenced = files_under(&objects.join(format!("volumes/{VOLUME}/backups")))
        .iter()
        .filter_map(|record| record.strip_suffix(".json"))
        .flat_map(|name| referenced_blocks(objects, VOLUME, name))
        .collect();
    (stored_blocks(objects, VOLUME), referenced)
}

#[test]
fn locks_order_operations_and_killed_holders_expire() {
    let s3 = S3Server::start();
    let (target, env, objects) = (s3.target(PREFIX), s3.env(), s3.objects(PREFIX));
    let volume = Volume::start(VOLUME, 48 * MIB, 1);
    let (engine, uri, scratch) = (volume.engine_addr(), volume.uri(), volume.scratch());

    qemu_io(&uri, &["write -P 0x41 0 6M", "write -P 0x42 16M 4M"]);
    shorthorn_ok(&["--engine", &engine, "snapshot", "create", "s1"]);
    let at_s1 = export_sha(&uri, &scratch);
    let b1 = backup_create(&engine, "s1", &target, &env, &[]);
    qemu_io(&uri, &["write -P 0x43 30M 6M"]);
    shorthorn_ok(&["--engine", &engine, "snapshot", "create", "s2"]);
    let at_s2 = export_sha(&uri, &scratch);

    // 1. A backup of s2 stops with its blocks uploaded and no record.
    let backup_args = [
        "--engine",
        &engine,
        "backup",
        "create",
        "s2",
        "--target",
        &target,
        "--lock-ttl",
        LOCK_TTL,
    ];
    let backup = Hung::start(
        &backup_args,
        &env,
        "backup::create::before-record",
        &scratch,
    );
    times_out_waiting_for(&rm_args(&b1, "2s"), &env, "of snapshot s2");
    // A restore runs beside the backup.
    let beside = scratch.join("beside");
    backup_restore(&b1, &beside, &env);
    assert_eq!(dir_sha(&beside, &scratch), at_s1);
    // The half-done backup is not listed.
    assert_eq!(listed(&target, VOLUME, &env).len(), 1);
    // kill -9: its lock expires; a deletion that was waiting goes on.
    let mut waiting = command(&rm_args(&b1, "60s"), &env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the deletion ran beside the backup"
    );
    backup.kill();
    let status = wait_bounded(&mut waiting, Duration::from_secs(30)).expect("deletion stuck");
    assert!(
        status.success(),
        "deletion after the backup was killed: {status}"
    );
    assert!(listed(&target, VOLUME, &env).is_empty());

    // 2. The next backup works, and a restore killed after one block, then redone.
    let b2 = backup_create(&engine, "s2", &target, &env, &[]);
    let restored = scratch.join("restored");
    let restore_args = [
        "backup",
        "restore",
        &b2,
        "--to",
        path_str(&restored),
        "--lock-ttl",
        LOCK_TTL,
        "--parallel",
        "1",
    ];
    let restore = Hung::start(
        &restore_args,
        &env,
        "backup::restore::after-block",
        &scratch,
    );
    times_out_waiting_for(&rm_args(&b2, "2s"), &env, "restore of backup");
    restore.kill();
    backup_restore(&b2, &restored, &env);
    assert_eq!(
        dir_sha(&restored, &scratch),
        at_s2,
        "restore redone after kill -9"
    );

    // 3. Deletions exclude backups and each other.
    qemu_io(&uri, &["write -P 0x44 40M 2M"]);
    shorthorn_ok(&["--engine", &engine, "snapshot", "create", "s3"]);
    let at_s3 = export_sha(&uri, &scratch);
    let b3 = backup_create(&engine, "s3", &target, &env, &[]);
    qemu_io(&uri, &["write -P 0x45 42M 2M"]);
    shorthorn_ok(&["--engine", &engine, "snapshot", "create", "s4"]);
    let b4 = backup_create(&engine, "s4", &target, &env, &[]);
    let deletion = Hung::start(
        &["backup", "rm", &b2, "--lock-ttl", LOCK_TTL],
        &env,
        "backup::delete::before-gc",
        &scratch,
    );
    let b2_name = backup_name(&b2);
    let holder = format!("deletion of backup {b2_name}");
    times_out_waiting_for(&rm_args(&b4, "2s"), &env, &holder);
    let mut blocked_backup = backup_args.to_vec();
    blocked_backup[4] = "s4";
    blocked_backup.extend(["--lock-wait", "2s"]);
    times_out_waiting_for(&blocked_backup, &env, &holder);
    deletion.kill();
    // b2's record went before the kill; the next deletion collects its blocks too.
    let outcome = shorthorn_env(&rm_args(&b4, "30s"), &env);
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(listed(&target, VOLUME, &env), vec![backup_name(&b3)]);
    let (stored, referenced) = stored_and_referenced(&objects);
    assert_eq!(
        stored, referenced,
        "the store holds exactly the blocks backups reference"
    );
    let last = scratch.join("last");
    backup_restore(&b3, &last, &env);
    assert_eq!(dir_sha(&last, &scratch), at_s3);
    let locks = files_under(&objects.join(format!("volumes/{VOLUME}/locks")));
    assert!(locks.is_empty(), "locks left: {locks:?}");
}
