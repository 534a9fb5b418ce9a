//! Bad input to `shorthorn backup`: each is a clear error naming what is wrong (exit
//! status 1, an `error:` line, never a panic), and nothing half-written is left in the
//! target.
//!
//! - Malformed target and backup URLs (not a URL, unknown scheme, no bucket, a file URL
//!   with a host or without the three slashes, a backup URL without its query, without a
//!   volume, with a path as a name) are refused before anything is contacted or created.
//!   A malformed S3 endpoint is an error too, not a panic. Reading a `file://` target
//!   that does not exist fails, naming it, and creates nothing.
//! - Wrong S3 credentials (a wrong secret, an unknown access key) against a real S3
//!   server: every command fails with the server's 403 and writes nothing; missing
//!   credentials are named as such.
//! - An endpoint nothing listens on: every command fails within seconds, naming the
//!   endpoint and the refused connection.
//! - A corrupt block (a flipped byte, on a `file://` target and on S3; a truncated one; a
//!   missing one): the restore fails naming the block's hash, leaves the directory marked
//!   `restoring`, and once the block is repaired a restore into the same directory
//!   completes with exactly the snapshot's content.
//! - A corrupt backup record: `ls`, `inspect` and `restore` name the file; deleting
//!   another backup of the volume fails without touching any block or record (garbage
//!   collection cannot know what the corrupt record references). A corrupt volume record
//!   fails `backup create` and is left as it is. The corrupt backup itself can be
//!   deleted.
//!
//! A failed command must also release its lock in the store (`volumes/VOL/locks/`):
//! those checks are collected and reported together at the end of each test, so one
//! leftover does not hide the other checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backupstore::{
    LOCK_TTL, S3Server, backup_create, backup_name, backup_restore, dir_sha, export_sha,
    files_under, shorthorn_env,
};
use crate::common::{
    MIB, Outcome, Volume, free_port_range, path_str, qemu_io, random_u64, shorthorn_ok,
};

const SIZE: u64 = 32 * MIB;
const VOLUME: &str = "bad";
/// Environment variables for a `shorthorn` run.
type Env = [(String, String)];
const NO_ENV: &Env = &[];
/// How long a command may take to give up on an endpoint that refuses connections: the
/// S3 client connects with a 5 s timeout and retries for at most 15 s.
const REFUSED_WITHIN: Duration = Duration::from_secs(20);

/// Asserts that `outcome` failed with status 1 and an `error:` line mentioning each of
/// `needles`; returns that line.
fn assert_error(outcome: &Outcome, what: &str, needles: &[&str]) -> String {
    assert_eq!(
        outcome.code,
        Some(1),
        "{what} should fail with status 1: {outcome:?}"
    );
    let error = outcome
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{what}: no `error:` line on stderr: {outcome:?}"));
    for needle in needles {
        assert!(
            error.contains(needle),
            "{what}: the error should mention {needle:?}:\n{error}"
        );
    }
    error.to_string()
}

/// [`assert_error`], and stderr is that one line: nothing ran far enough to say more.
fn assert_only_error(outcome: &Outcome, what: &str, needles: &[&str]) {
    let error = assert_error(outcome, what, needles);
    assert_eq!(
        outcome.stderr.trim_end(),
        error,
        "{what}: stderr should be the error alone"
    );
    assert!(outcome.stdout.is_empty(), "{what}: printed {outcome:?}");
}

/// Everything under `dir`, files and directories, relative to it (empty if it is gone).
fn entries_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Records a problem if a command left lock objects of [`VOLUME`] in the store at
/// `root`, and removes them so they do not hold up the next steps.
fn check_no_lock_left(root: &Path, after: &str, problems: &mut Vec<String>) {
    let locks = root.join("volumes").join(VOLUME).join("locks");
    let left = files_under(&locks);
    if !left.is_empty() {
        problems.push(format!(
            "{after} left its lock in the store: {} holds {left:?}",
            locks.display()
        ));
        for file in left {
            let _ = std::fs::remove_file(locks.join(file));
        }
    }
}

/// Fails the test with every problem collected.
fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

/// The `state` a restored directory's restore.json records.
fn restore_state(dir: &Path) -> String {
    let data = std::fs::read(dir.join("restore.json"))
        .unwrap_or_else(|e| panic!("{}/restore.json: {e}", dir.display()));
    let value: serde_json::Value = serde_json::from_slice(&data).unwrap();
    value["state"].as_str().unwrap().to_string()
}

/// A volume with data in four distinct 2 MiB blocks and snapshot s1 of it; returns the
/// volume and the sha256 of its content at s1.
fn volume_with_snapshot() -> (Volume, String) {
    let volume = Volume::start(VOLUME, SIZE, 1);
    qemu_io(
        &volume.uri(),
        &[
            "write -P 0x5a 0 3M",
            "write -P 0xa5 8M 2M",
            "write -P 0x3c 20M 1M",
        ],
    );
    shorthorn_ok(&[
        "--engine",
        &volume.engine_addr(),
        "snapshot",
        "create",
        "s1",
    ]);
    let at_s1 = export_sha(&volume.uri(), &volume.scratch());
    (volume, at_s1)
}

/// Removes a directory on drop (one a buggy command may create outside the test's
/// temporary directories).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn malformed_urls_are_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let base = path_str(dir.path());
    // Where the file URLs below point: none of it may be created.
    let with_host = format!("file://host{base}/with-host");
    let targets: Vec<(String, &str)> = vec![
        ("not a url".into(), "not a URL"),
        (String::new(), "not a URL"),
        ("ftp://x/y".into(), "unknown scheme \"ftp\""),
        (
            "s3:///nobucket".into(),
            "no bucket; write s3://bucket@region/path",
        ),
        ("s3://".into(), "no bucket"),
        (with_host, "write file:///absolute/path (three slashes)"),
    ];
    for (target, expected) in &targets {
        let what = format!("backup ls --target {target:?}");
        let ls = shorthorn_env(&["backup", "ls", "--target", target], NO_ENV);
        assert_only_error(&ls, &what, &["backup target", target, expected]);
        let ls = shorthorn_env(
            &["backup", "ls", "--target", target, VOLUME, "--json"],
            NO_ENV,
        );
        assert_only_error(&ls, &format!("{what} {VOLUME}"), &[target, expected]);
        // The target is checked before the engine (nothing listens on port 1).
        let create = shorthorn_env(
            &[
                "--engine",
                "127.0.0.1:1",
                "backup",
                "create",
                "s1",
                "--target",
                target,
            ],
            NO_ENV,
        );
        assert_only_error(
            &create,
            &format!("backup create --target {target:?}"),
            &[target, expected],
        );
    }

    let restored = dir.path().join("restored");
    let store = format!("file://{base}/store");
    let urls: Vec<(String, &str)> = vec![
        ("s3://b@r/p".into(), "has no ?backup=NAME&volume=VOLUME"),
        (
            "s3://b@r/p?backup=x".into(),
            "needs both backup=NAME and volume=VOLUME",
        ),
        ("s3://b@r/p?volume=v".into(), "needs both backup=NAME"),
        (
            "s3://b@r/p?backup=x&volume=../etc".into(),
            "volume: invalid name \"../etc\": names cannot contain path separators",
        ),
        (
            "s3://b@r/p?backup=../x&volume=v".into(),
            "backup: invalid name \"../x\"",
        ),
        (
            "s3://b@r/p?backup=x&volume=v&colour=red".into(),
            "unexpected \"colour=red\" in the query",
        ),
        ("ftp://x/y?backup=x&volume=v".into(), "unknown scheme"),
        (store.clone(), "has no ?backup=NAME"),
        (format!("{store}?backup=x"), "needs both"),
        (
            format!("{store}?backup=x&volume=../../etc"),
            "invalid name \"../../etc\"",
        ),
    ];
    for (url, expected) in &urls {
        for (command, extra) in [
            ("restore", vec!["--to", path_str(&restored)]),
            ("inspect", vec![]),
            ("rm", vec![]),
        ] {
            let mut args = vec!["backup", command, url.as_str()];
            args.extend(extra);
            let outcome = shorthorn_env(&args, NO_ENV);
            let what = format!("backup {command} {url:?}");
            if url.starts_with("ftp:") {
                assert_only_error(&outcome, &what, &["backup target ftp://x/y", expected]);
            } else {
                assert_only_error(&outcome, &what, &["backup URL", url, expected]);
            }
        }
    }
    assert_eq!(
        entries_under(dir.path()),
        Vec::<String>::new(),
        "malformed URLs created something"
    );

    // `file:` without the slashes: a URL parser reads `file:NAME/x` as `file:///NAME/x`,
    // a directory at the root of the filesystem, where the user meant a relative path.
    let name = format!("shorthorn-bad-input-{:016x}", random_u64());
    let _cleanup = RemoveOnDrop(PathBuf::from("/").join(&name));
    let target = format!("file:{name}/x");
    let ls = shorthorn_env(&["backup", "ls", "--target", &target], NO_ENV);
    let created = Path::new("/").join(&name).exists();
    assert!(
        !created,
        "backup ls --target {target} created /{name} (exit {:?}, stderr {:?})",
        ls.code, ls.stderr
    );
    assert_only_error(
        &ls,
        &format!("backup ls --target {target}"),
        &[&target, "file:///"],
    );
}

#[test]
fn a_malformed_s3_endpoint_is_an_error_not_a_panic() {
    let creds = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "key".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "secret".to_string()),
    ];
    let target = "s3://backups@us-east-1/endpoints";
    for endpoint in ["127.0.0.1:9000", "http://127.0.0.1:99999", "http://[::1"] {
        // As a flag, and from the environment.
        let ls = shorthorn_env(
            &[
                "backup",
                "ls",
                "--target",
                target,
                "--s3-endpoint",
                endpoint,
            ],
            &creds,
        );
        assert_error(
            &ls,
            &format!("backup ls --s3-endpoint {endpoint:?}"),
            &[endpoint],
        );
        let mut env = creds.clone();
        env.push(("AWS_ENDPOINT_URL".into(), endpoint.into()));
        let ls = shorthorn_env(&["backup", "ls", "--target", target, VOLUME], &env);
        assert_error(
            &ls,
            &format!("AWS_ENDPOINT_URL={endpoint:?} backup ls"),
            &[endpoint],
        );
    }
}

#[test]
fn reading_a_file_target_that_does_not_exist_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let target = format!("file://{}", path_str(&missing));
    let url = format!("{target}?backup=backup-1&volume={VOLUME}");
    let restored = dir.path().join("restored");
    let mut problems = Vec::new();

    for args in [
        vec!["backup", "inspect", &url],
        vec![
            "backup",
            "restore",
            &url,
            "--to",
            path_str(&restored),
            "--lock-ttl",
            LOCK_TTL,
        ],
        vec!["backup", "rm", &url, "--lock-ttl", LOCK_TTL],
        vec!["backup", "ls", "--target", &target, VOLUME],
        vec!["backup", "ls", "--target", &target],
    ] {
        let outcome = shorthorn_env(&args, NO_ENV);
        let what = format!("shorthorn {}", args.join(" "));
        // A typo or an unmounted mount point must not read as an empty store.
        assert_only_error(&outcome, &what, &[&target, "does not exist"]);
        assert!(!restored.exists(), "{what} created {}", restored.display());
        if missing.exists() {
            problems.push(format!(
                "{what} (exit {:?}) created the target directory: {:?}",
                outcome.code,
                entries_under(&missing)
            ));
            std::fs::remove_dir_all(&missing).unwrap();
        }
    }
    assert_no_problems(&problems);
}

/// `env` with `key` set to `value`.
fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    env.push((key.to_string(), value.to_string()));
    env
}

#[test]
fn wrong_s3_credentials_are_refused_and_nothing_is_written() {
    let s3 = S3Server::start();
    let (volume, _) = volume_with_snapshot();
    let engine = volume.engine_addr();
    let scratch = volume.scratch();
    // A good backup the wrong credentials must not be able to read or delete.
    let good = backup_create(&engine, "s1", &s3.target("good"), &s3.env(), &[]);
    let good_files = files_under(&s3.objects("good"));
    assert!(
        good_files.iter().any(|f| f.ends_with(".blk")),
        "{good_files:?}"
    );
    let target = s3.target("creds");
    let restored = scratch.join("restored");

    for (why, env, code) in [
        (
            "a wrong secret key",
            with(&s3.env(), "AWS_SECRET_ACCESS_KEY", "wrong-secret"),
            "SignatureDoesNotMatch",
        ),
        (
            "an unknown access key",
            with(&s3.env(), "AWS_ACCESS_KEY_ID", "nobody"),
            "403 Forbidden",
        ),
    ] {
        let runs: Vec<(Vec<&str>, &str)> = vec![
            (
                vec![
                    "--engine",
                    &engine,
                    "backup",
                    "create",
                    "s1",
                    "--target",
                    &target,
                    "--lock-ttl",
                    LOCK_TTL,
                ],
                &target,
            ),
            (vec!["backup", "ls", "--target", &target], &target),
            (
                vec!["backup", "ls", "--target", &target, VOLUME, "--json"],
                &target,
            ),
            (
                vec!["backup", "inspect", &good],
                good.split('?').next().unwrap(),
            ),
            (
                vec![
                    "backup",
                    "restore",
                    &good,
                    "--to",
                    path_str(&restored),
                    "--lock-ttl",
                    LOCK_TTL,
                ],
                good.split('?').next().unwrap(),
            ),
            (
                vec!["backup", "rm", &good, "--lock-ttl", LOCK_TTL],
                good.split('?').next().unwrap(),
            ),
        ];
        for (args, names) in runs {
            let outcome = shorthorn_env(&args, &env);
            let what = format!("with {why}, shorthorn {}", args.join(" "));
            assert_error(&outcome, &what, &[names, "403 Forbidden", code]);
        }
        assert_eq!(
            files_under(&s3.objects("creds")),
            Vec::<String>::new(),
            "with {why}, something was written"
        );
        assert_eq!(
            files_under(&s3.objects("good")),
            good_files,
            "with {why}, the good backup changed"
        );
        assert!(
            !restored.exists(),
            "with {why}, the restore created its directory"
        );
    }

    // A wrong secret given as a flag wins over the right one in the environment.
    let ls = shorthorn_env(
        &[
            "backup",
            "ls",
            "--target",
            &target,
            "--secret-access-key",
            "wrong-secret",
        ],
        &s3.env(),
    );
    assert_error(
        &ls,
        "backup ls --secret-access-key wrong",
        &[&target, "SignatureDoesNotMatch"],
    );

    // With the right credentials the same commands work.
    backup_create(&engine, "s1", &target, &s3.env(), &[]);
    backup_restore(&good, &restored, &s3.env());
}

#[test]
fn missing_s3_credentials_are_named() {
    let s3 = S3Server::start();
    let target = s3.target("nocreds");
    let env = vec![("AWS_ENDPOINT_URL".to_string(), s3.endpoint.clone())];
    let ls = shorthorn_env(&["backup", "ls", "--target", &target], &env);
    assert!(
        ls.elapsed < REFUSED_WITHIN,
        "backup ls without credentials took {:?}",
        ls.elapsed
    );
    let error = assert_error(&ls, "backup ls without credentials", &[&target]);
    let lower = error.to_lowercase();
    assert!(
        lower.contains("credentials") || error.contains("AWS_ACCESS_KEY_ID"),
        "without credentials, the error should say that credentials are missing:\n{error}"
    );
    assert_eq!(files_under(&s3.objects("nocreds")), Vec::<String>::new());
}

#[test]
fn an_unreachable_endpoint_fails_within_seconds_and_names_it() {
    let (volume, _) = volume_with_snapshot();
    let engine = volume.engine_addr();
    // Free now; nothing listens on it.
    let port = free_port_range(1);
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = vec![
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            crate::backupstore::ACCESS_KEY.to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            crate::backupstore::SECRET_KEY.to_string(),
        ),
    ];
    let env_with_endpoint = with(&env, "AWS_ENDPOINT_URL", &endpoint);
    let target = format!("s3://{}@us-east-1/unreachable", crate::backupstore::BUCKET);
    let url = format!("{target}?backup=backup-1&volume={VOLUME}");
    let restored = volume.scratch().join("restored");
    let to = path_str(&restored);

    #[allow(clippy::type_complexity, reason = "a table of command lines")]
    let runs: Vec<(Vec<&str>, &Env)> = vec![
        (
            vec![
                "--engine",
                &engine,
                "backup",
                "create",
                "s1",
                "--target",
                &target,
                "--lock-ttl",
                LOCK_TTL,
            ],
            &env_with_endpoint,
        ),
        (
            vec!["backup", "ls", "--target", &target],
            &env_with_endpoint,
        ),
        (
            vec!["backup", "ls", "--target", &target, VOLUME],
            &env_with_endpoint,
        ),
        (
            vec![
                "backup",
                "ls",
                "--target",
                &target,
                "--s3-endpoint",
                &endpoint,
            ],
            &env,
        ),
        (vec!["backup", "inspect", &url], &env_with_endpoint),
        (
            vec![
                "backup",
                "restore",
                &url,
                "--to",
                to,
                "--lock-ttl",
                LOCK_TTL,
            ],
            &env_with_endpoint,
        ),
        (
            vec!["backup", "rm", &url, "--lock-ttl", LOCK_TTL],
            &env_with_endpoint,
        ),
    ];
    for (args, env) in runs {
        let outcome = shorthorn_env(&args, env);
        let what = format!("shorthorn {} (endpoint {endpoint})", args.join(" "));
        assert_error(
            &outcome,
            &what,
            &[&target, &format!("127.0.0.1:{port}"), "Connection refused"],
        );
        assert!(
            outcome.elapsed < REFUSED_WITHIN,
            "{what} took {:?} to give up",
            outcome.elapsed
        );
        assert!(!restored.exists(), "{what} created {to}");
    }
}

#[test]
fn a_corrupt_block_fails_the_restore_and_a_repaired_store_completes_it() {
    let s3 = S3Server::start();
    let (volume, at_s1) = volume_with_snapshot();
    let engine = volume.engine_addr();
    let scratch = volume.scratch();
    let file_store = tempfile::tempdir().unwrap();
    let file_target = format!("file://{}", path_str(file_store.path()));
    let file_url = backup_create(&engine, "s1", &file_target, NO_ENV, &[]);
    let s3_url = backup_create(&engine, "s1", &s3.target("corrupt"), &s3.env(), &[]);
    let mut problems = Vec::new();

    let stores = [
        (
            "file",
            file_url.clone(),
            file_store.path().to_path_buf(),
            Vec::new(),
        ),
        ("s3", s3_url, s3.objects("corrupt"), s3.env()),
    ];
    for (kind, url, root, env) in &stores {
        let blocks: Vec<String> = files_under(root)
            .into_iter()
            .filter(|f| f.ends_with(".blk"))
            .collect();
        assert_eq!(blocks.len(), 4, "{kind}: stored blocks {blocks:?}");
        let block = root.join(&blocks[0]);
        let hash = block.file_stem().unwrap().to_str().unwrap().to_string();
        let original = std::fs::read(&block).unwrap();
        let mut flipped = original.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        std::fs::write(&block, &flipped).unwrap();

        let dir = scratch.join(format!("restore-{kind}"));
        let args = [
            "backup",
            "restore",
            url,
            "--to",
            path_str(&dir),
            "--lock-ttl",
            LOCK_TTL,
        ];
        let what = format!("{kind}: restore with a flipped byte in block {hash}");
        let outcome = shorthorn_env(&args, env);
        assert_error(
            &outcome,
            &what,
            &[
                url.split('?').next().unwrap(),
                &backup_name(url),
                &format!("block {hash} is corrupt"),
            ],
        );
        // What is left: the replica directory, marked as an unfinished restore.
        let left = files_under(&dir);
        for file in ["volume.json", "restore.json"] {
            assert!(
                left.contains(&file.to_string()),
                "{what}: {} holds {left:?}",
                dir.display()
            );
        }
        assert_eq!(restore_state(&dir), "restoring", "{what}");
        check_no_lock_left(root, &what, &mut problems);

        // Repaired, a restore into the same directory completes it.
        std::fs::write(&block, &original).unwrap();
        let summary = backup_restore(url, &dir, env);
        assert!(
            summary.contains(&("incremental".to_string(), "true".to_string())),
            "{kind}: the second restore should continue in the directory: {summary:?}"
        );
        assert_eq!(restore_state(&dir), "complete", "{kind}");
        assert_eq!(
            dir_sha(&dir, &scratch),
            at_s1,
            "{kind}: the repaired restore differs from the volume at s1"
        );
    }

    // A truncated block and a missing one, on the file target.
    let blocks: Vec<String> = files_under(file_store.path())
        .into_iter()
        .filter(|f| f.ends_with(".blk"))
        .collect();
    let block = file_store.path().join(&blocks[1]);
    let hash = block.file_stem().unwrap().to_str().unwrap().to_string();
    let original = std::fs::read(&block).unwrap();
    for (damage, expected) in [
        (
            "truncated",
            format!("block {hash} is corrupt: not a Shorthorn block object"),
        ),
        (
            "missing",
            format!(
                "block {hash} of backup {} is missing from the store",
                backup_name(&file_url)
            ),
        ),
    ] {
        if damage == "missing" {
            std::fs::remove_file(&block).unwrap();
        } else {
            std::fs::write(&block, &original[..5]).unwrap();
        }
        let dir = scratch.join(format!("restore-{damage}"));
        let what = format!("restore with block {hash} {damage}");
        let outcome = shorthorn_env(
            &[
                "backup",
                "restore",
                &file_url,
                "--to",
                path_str(&dir),
                "--lock-ttl",
                LOCK_TTL,
            ],
            NO_ENV,
        );
        assert_error(&outcome, &what, &[&file_target, &expected]);
        assert_eq!(restore_state(&dir), "restoring", "{what}");
        check_no_lock_left(file_store.path(), &what, &mut problems);
        std::fs::write(&block, &original).unwrap();
        backup_restore(&file_url, &dir, NO_ENV);
        assert_eq!(dir_sha(&dir, &scratch), at_s1, "{what}, then repaired");
    }
    assert_no_problems(&problems);
}

#[test]
fn corrupt_records_are_named_and_never_lead_to_deleting_blocks() {
    let (volume, _) = volume_with_snapshot();
    let engine = volume.engine_addr();
    let scratch = volume.scratch();
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    let target = format!("file://{}", path_str(root));
    let b1 = backup_create(&engine, "s1", &target, NO_ENV, &[]);
    qemu_io(&volume.uri(), &["write -P 0x77 12M 2M"]);
    shorthorn_ok(&["--engine", &engine, "snapshot", "create", "s2"]);
    let b2 = backup_create(&engine, "s2", &target, NO_ENV, &[]);
    let mut problems = Vec::new();

    let record = format!("volumes/{VOLUME}/backups/{}.json", backup_name(&b1));
    std::fs::write(root.join(&record), b"{\"format_version\": 1, garbage").unwrap();
    let corrupt = format!("{record} is corrupt");
    let before = files_under(root);
    let blocks = before.iter().filter(|f| f.ends_with(".blk")).count();
    assert_eq!(blocks, 5, "stored blocks: {before:?}");

    let ls = shorthorn_env(&["backup", "ls", "--target", &target, VOLUME], NO_ENV);
    assert_error(&ls, "backup ls VOLUME", &[&target, &corrupt]);
    let ls = shorthorn_env(
        &["backup", "ls", "--target", &target, VOLUME, "--json"],
        NO_ENV,
    );
    assert_error(&ls, "backup ls VOLUME --json", &[&target, &corrupt]);
    // Listing volumes reads no backup record.
    let volumes = shorthorn_env(&["backup", "ls", "--target", &target], NO_ENV);
    assert!(volumes.success(), "backup ls: {volumes:?}");
    assert_eq!(volumes.stdout.trim(), VOLUME);
    let inspect = shorthorn_env(&["backup", "inspect", &b1], NO_ENV);
    assert_error(
        &inspect,
        "backup inspect of the corrupt backup",
        &[&target, &corrupt],
    );
    // The other backup's record is intact.
    let inspect = shorthorn_env(&["backup", "inspect", &b2], NO_ENV);
    assert!(
        inspect.success(),
        "backup inspect of the intact backup: {inspect:?}"
    );

    let restored = scratch.join("restored");
    let restore = shorthorn_env(
        &[
            "backup",
            "restore",
            &b1,
            "--to",
            path_str(&restored),
            "--lock-ttl",
            LOCK_TTL,
        ],
        NO_ENV,
    );
    assert_error(
        &restore,
        "backup restore of the corrupt backup",
        &[&target, &corrupt],
    );
    assert!(
        !restored.exists(),
        "the refused restore created its directory"
    );
    check_no_lock_left(root, "the refused restore", &mut problems);

    // Deleting the other backup: garbage collection cannot know which blocks the corrupt
    // record references, so nothing may go.
    let rm = shorthorn_env(
        &[
            "backup",
            "rm",
            &b2,
            "--lock-ttl",
            LOCK_TTL,
            "--lock-wait",
            "30s",
        ],
        NO_ENV,
    );
    assert_error(&rm, "backup rm of another backup", &[&target, &corrupt]);
    check_no_lock_left(root, "the refused rm", &mut problems);
    let after = files_under(root);
    assert_eq!(
        after.iter().filter(|f| f.ends_with(".blk")).count(),
        blocks,
        "the refused rm deleted blocks: before {before:?}, after {after:?}"
    );
    if after != before {
        problems.push(format!(
            "the refused `backup rm {b2}` (exit 1) still changed the store: before \
             {before:?}, after {after:?}"
        ));
    }
    let inspect = shorthorn_env(&["backup", "inspect", &b2], NO_ENV);
    if !inspect.success() {
        problems.push(format!(
            "after the refused rm, backup {} is gone: {}",
            backup_name(&b2),
            inspect.stderr.trim()
        ));
    }

    // A corrupt volume record: no backup can be taken, and the record stays as it is.
    let volume_record = root.join(format!("volumes/{VOLUME}/volume.json"));
    std::fs::write(&volume_record, b"\x00\x01not json").unwrap();
    let before = files_under(root);
    let create = shorthorn_env(
        &[
            "--engine",
            &engine,
            "backup",
            "create",
            "s2",
            "--target",
            &target,
            "--lock-ttl",
            LOCK_TTL,
            "--lock-wait",
            "30s",
        ],
        NO_ENV,
    );
    assert_error(
        &create,
        "backup create with a corrupt volume.json",
        &[&target, &format!("volumes/{VOLUME}/volume.json is corrupt")],
    );
    check_no_lock_left(root, "the refused backup create", &mut problems);
    assert_eq!(files_under(root), before, "the refused backup create wrote");
    assert_eq!(
        std::fs::read(&volume_record).unwrap(),
        b"\x00\x01not json",
        "the corrupt volume record was replaced"
    );

    // The corrupt backup itself can be deleted; the other one stays, with its blocks.
    let rm = shorthorn_env(&["backup", "rm", &b1, "--lock-ttl", LOCK_TTL], NO_ENV);
    assert!(rm.success(), "backup rm of the corrupt backup: {rm:?}");
    assert!(rm.stdout.contains("remaining_backups=1"), "{rm:?}");
    assert_eq!(
        crate::backupstore::listed(&target, VOLUME, NO_ENV),
        vec![backup_name(&b2)]
    );
    assert_no_problems(&problems);
}
