//! Kills the `shorthorn` binary with SIGKILL at each of the store's crash points during
//! snapshot, snapshot rm, revert, expand and purge, then checks that the replica
//! directory opens in exactly the old or exactly the new state (snapshot list, size and
//! every byte of the volume and of its snapshots), that no stray files are left, and
//! that running the operation again completes it.
//!
//! Needs the `failpoints` feature: the binary stops at the point named by
//! `SHORTHORN_CRASH_AT`, prints `crash point reached: NAME` and hangs until killed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use shorthorn_store::{METADATA_FILE, SnapshotKind, Store, VolumeMeta, layer_file_name};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_shorthorn");
const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;
/// Size of every test volume before expansion.
const SIZE: u64 = 2 * MIB;
/// How long a child may take to reach its crash point.
const MARKER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a volume shows: its size, its snapshots (name → marked removed) and its bytes.
#[derive(Clone, PartialEq, Eq)]
struct State {
    size: u64,
    snapshots: BTreeMap<String, bool>,
    head: Vec<u8>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("size", &self.size)
            .field("snapshots", &self.snapshots)
            .field("head_fingerprint", &fingerprint(&self.head))
            .finish()
    }
}

/// Which of the two states a crash at a given point must leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Old,
    New,
}

/// An operation to interrupt, on a prepared volume.
struct Scenario {
    dir: TempDir,
    /// Arguments after `shorthorn store`, with `{dir}` standing for the directory.
    args: Vec<&'static str>,
    old: State,
    new: State,
    /// Content of every snapshot when it was taken (unpadded).
    contents: BTreeMap<String, Vec<u8>>,
    /// Set when running the operation again on the new state must fail (a snapshot
    /// name cannot be taken twice) with this text in the error.
    retry_after_new_fails_with: Option<&'static str>,
}

/// Builds a volume through the store API while keeping a model of its bytes.
struct Builder {
    dir: TempDir,
    store: Store,
    head: Vec<u8>,
    contents: BTreeMap<String, Vec<u8>>,
}

impl Builder {
    /// A 2 MiB volume with snapshot `s1` over random-ish data with holes.
    fn base() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), "vol", SIZE).unwrap();
        let mut builder = Builder {
            dir,
            store,
            head: vec![0; SIZE as usize],
            contents: BTreeMap::new(),
        };
        builder.write_blocks(1, 0..400, 5);
        builder.snapshot("s1");
        builder
    }

    /// Writes a pattern into `blocks`, skipping every `skip`-th block (left as is).
    fn write_blocks(&mut self, seed: u64, blocks: std::ops::Range<u64>, skip: u64) {
        for block in blocks.filter(|b| b % skip != 0) {
            self.write(
                block * BLOCK,
                &pattern(seed * 1_000_003 + block, BLOCK as usize),
            );
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.store.write(offset, data).unwrap();
        let at = offset as usize;
        self.head[at..at + data.len()].copy_from_slice(data);
    }

    fn snapshot(&mut self, name: &str) {
        self.store
            .snapshot(name, SnapshotKind::User, BTreeMap::new())
            .unwrap();
        self.contents.insert(name.to_owned(), self.head.clone());
    }

    fn state(&self) -> State {
        state_of(&self.store)
    }

    /// Makes everything durable and closes the store, so the CLI can open it.
    fn finish(
        self,
        args: Vec<&'static str>,
        old: State,
        new: State,
        retry_after_new_fails_with: Option<&'static str>,
    ) -> Scenario {
        self.store.flush().unwrap();
        drop(self.store);
        Scenario {
            dir: self.dir,
            args,
            old,
            new,
            contents: self.contents,
            retry_after_new_fails_with,
        }
    }
}

/// `snapshot create DIR s2`: old has s1; new has s1 and s2, with the same bytes.
fn snapshot_create() -> Scenario {
    let mut b = Builder::base();
    b.write_blocks(2, 100..300, 7);
    b.write(5000, b"an unaligned write across no block boundary");
    let old = b.state();
    let mut new = old.clone();
    new.snapshots.insert("s2".into(), false);
    b.contents.insert("s2".into(), b.head.clone());
    let args = vec!["snapshot", "create", "{dir}", "s2", "--label", "k=v"];
    b.finish(args, old, new, Some("already exists"))
}

/// `snapshot rm DIR s2`: only the removed flag changes.
fn snapshot_rm() -> Scenario {
    let mut b = Builder::base();
    b.write_blocks(2, 100..300, 7);
    b.snapshot("s2");
    b.write_blocks(3, 250..350, 2);
    let old = b.state();
    let mut new = old.clone();
    new.snapshots.insert("s2".into(), true);
    b.finish(vec!["snapshot", "rm", "{dir}", "s2"], old, new, None)
}

/// `snapshot revert DIR s1` with s2 and a written head above s1: the bytes become s1's.
fn revert() -> Scenario {
    let mut b = Builder::base();
    b.write_blocks(2, 50..350, 3);
    b.snapshot("s2");
    b.write_blocks(3, 200..512, 4);
    b.write(123_457, &pattern(99, 10_000));
    let old = b.state();
    let mut new = old.clone();
    new.head = b.contents["s1"].clone();
    b.finish(vec!["snapshot", "revert", "{dir}", "s1"], old, new, None)
}

/// `expand DIR 4M`: the new state is twice as large, the new half zeros.
fn expand() -> Scenario {
    let mut b = Builder::base();
    b.write_blocks(2, 300..512, 3);
    let old = b.state();
    let mut new = old.clone();
    new.size = 2 * SIZE;
    new.head.resize(2 * SIZE as usize, 0);
    b.finish(vec!["expand", "{dir}", "4M"], old, new, None)
}

/// `snapshot purge DIR` of removed s2, whose child is snapshot s3 (which does not
/// override most of s2, so the purge copies more than one chunk into s3).
fn purge_into_snapshot() -> Scenario {
    let mut b = Builder::base();
    b.write_blocks(2, 0..512, 9);
    b.snapshot("s2");
    b.write_blocks(3, 100..200, 2);
    b.snapshot("s3");
    b.write_blocks(4, 150..250, 3);
    b.store.remove_snapshot("s2").unwrap();
    let old = b.state();
    let mut new = old.clone();
    new.snapshots.remove("s2");
    b.finish(vec!["snapshot", "purge", "{dir}"], old, new, None)
}

/// `snapshot purge DIR` of removed s2, whose child is the head.
fn purge_into_head() -> Scenario {
    let mut b = Builder::base();
    b.write_blocks(2, 0..512, 9);
    b.snapshot("s2");
    b.write_blocks(4, 150..250, 3);
    b.store.remove_snapshot("s2").unwrap();
    let old = b.state();
    let mut new = old.clone();
    new.snapshots.remove("s2");
    b.finish(vec!["snapshot", "purge", "{dir}"], old, new, None)
}

/// Runs the scenario's operation, kills it at `point`, and checks the directory; then
/// runs the operation to completion and checks again.
fn crash_and_recover(make: fn() -> Scenario, point: &str, expect: Expect) {
    let scenario = make();
    assert_ne!(
        scenario.old, scenario.new,
        "the scenario must change something"
    );
    let dir = scenario.dir.path();
    let args = cli_args(&scenario.args, dir);

    kill_at(point, &args);

    let found = observe(dir);
    let which = if found == scenario.old {
        Expect::Old
    } else if found == scenario.new {
        Expect::New
    } else {
        panic!(
            "after a crash at {point} the volume is in neither state:\n found {found:?}\n \
             old   {:?}\n new   {:?}\n{}",
            scenario.old,
            scenario.new,
            first_difference(&found.head, &scenario.old.head)
        );
    };
    assert_eq!(
        which, expect,
        "a crash at {point} left the {which:?} state; expected the {expect:?} one"
    );
    check_files(dir);
    check_snapshots(dir, &found, &scenario.contents);

    let retry = run(&args);
    match (which, scenario.retry_after_new_fails_with) {
        (Expect::New, Some(message)) => {
            assert_eq!(retry.code, Some(1), "retry: {retry:?}");
            assert!(retry.stderr.contains(message), "retry: {retry:?}");
        }
        _ => {
            assert_eq!(
                retry.code,
                Some(0),
                "retry after a crash at {point}: {retry:?}"
            );
            assert!(
                !retry.stdout.is_empty(),
                "the retry printed no summary: {retry:?}"
            );
        }
    }
    let after = observe(dir);
    assert!(
        after == scenario.new,
        "after the retry: found {after:?}, expected {:?}",
        scenario.new
    );
    check_files(dir);
    check_snapshots(dir, &after, &scenario.contents);
}

/// `shorthorn store ARGS` with `{dir}` replaced.
fn cli_args(template: &[&str], dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    std::iter::once("store")
        .chain(template.iter().copied())
        .map(|a| a.replace("{dir}", dir))
        .collect()
}

/// Kills the child (SIGKILL) and reaps it when dropped, so no test leaves one behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the CLI with the crash point armed, waits for its marker line on stderr, and
/// kills it there with SIGKILL.
fn kill_at(point: &str, args: &[String]) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("SHORTHORN_CRASH_AT", point)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = KillOnDrop(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let marker = format!("crash point reached: {point}");
    let deadline = Instant::now() + MARKER_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(line)) if line == marker => break,
            Ok(Ok(line)) => seen.push(line),
            Ok(Err(e)) => panic!("reading the child's stderr: {e}"),
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "{args:?} did not reach {point} within {MARKER_TIMEOUT:?}; stderr: {seen:#?}"
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.0.wait().unwrap();
                panic!("{args:?} ended ({status}) before reaching {point}; stderr: {seen:#?}");
            }
        }
    }
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
}

/// Output of a finished CLI run.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[String]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SHORTHORN_CRASH_AT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let output = Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!output.stderr.contains("panicked"), "{output:?}");
    output
}

/// Opens the directory (it must open) and reads what the volume shows.
fn observe(dir: &Path) -> State {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("{} does not open: {e}", dir.display()));
    state_of(&store)
}

fn state_of(store: &Store) -> State {
    let snapshots = store
        .layers()
        .unwrap()
        .into_iter()
        .filter_map(|l| Some((l.name?, l.removed)))
        .collect();
    let mut head = vec![0; store.size() as usize];
    store.read(0, &mut head).unwrap();
    State {
        size: store.size(),
        snapshots,
        head,
    }
}

/// The directory holds the metadata file and the files of the layers it names, nothing
/// else (no temp metadata, no uncommitted or dropped layers).
fn check_files(dir: &Path) {
    let meta = VolumeMeta::load(dir).unwrap();
    let mut expected: BTreeSet<String> =
        meta.layers.iter().map(|l| layer_file_name(l.id)).collect();
    expected.insert(METADATA_FILE.to_owned());
    let found: BTreeSet<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(found, expected, "files in {}", dir.display());
}

/// Every snapshot not marked removed still reverts to exactly the bytes it was taken
/// with (zero-padded to the volume's size). Reverts run on a sparse copy of the
/// directory, so the volume under test is left alone.
fn check_snapshots(dir: &Path, state: &State, contents: &BTreeMap<String, Vec<u8>>) {
    let copy = tempfile::tempdir().unwrap();
    sparse_copy_dir(dir, copy.path());
    let store = Store::open(copy.path()).unwrap();
    for (name, _) in state.snapshots.iter().filter(|(_, removed)| !**removed) {
        store.revert(name).unwrap();
        let found = state_of(&store).head;
        let mut expected = contents[name].clone();
        expected.resize(state.size as usize, 0);
        assert!(
            found == expected,
            "snapshot {name} changed: {}",
            first_difference(&found, &expected)
        );
    }
}

/// Copies every file of `from` into `to`, keeping holes where the source has them (a
/// layer's holes are what lets older layers show through, so a dense copy would change
/// the volume).
fn sparse_copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let source = File::open(entry.path()).unwrap();
        let len = source.metadata().unwrap().len();
        let target = File::create(to.join(entry.file_name())).unwrap();
        target.set_len(len).unwrap();
        let mut position = 0;
        while position < len {
            let data = match rustix::fs::seek(&source, rustix::fs::SeekFrom::Data(position)) {
                Ok(at) => at,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => panic!("SEEK_DATA in {}: {e}", entry.path().display()),
            };
            let hole = rustix::fs::seek(&source, rustix::fs::SeekFrom::Hole(data)).unwrap();
            let mut buf = vec![0; (hole - data) as usize];
            source.read_exact_at(&mut buf, data).unwrap();
            target.write_all_at(&buf, data).unwrap();
            position = hole;
        }
    }
}

/// Deterministic random-looking bytes (xorshift); a zero block practically never occurs.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A short description of a byte buffer for failure messages.
fn fingerprint(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{} bytes, fnv {hash:016x}", bytes.len())
}

/// Where two buffers first differ, for failure messages.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => format!(
            "first difference at byte {at} (block {})",
            at as u64 / BLOCK
        ),
        None if a.len() != b.len() => format!("lengths differ: {} and {}", a.len(), b.len()),
        None => "no difference".to_owned(),
    }
}

// Snapshot create: the new head file exists but is not committed; the metadata temp file
// is written but not renamed; the rename is done but the directory not synced.

#[test]
fn snapshot_create_killed_after_new_head() {
    crash_and_recover(
        snapshot_create,
        "store::snapshot::after-new-head",
        Expect::Old,
    );
}

#[test]
fn snapshot_create_killed_before_metadata_rename() {
    crash_and_recover(snapshot_create, "store::meta::before-rename", Expect::Old);
}

#[test]
fn snapshot_create_killed_before_directory_sync() {
    crash_and_recover(snapshot_create, "store::meta::before-dir-sync", Expect::New);
}

#[test]
fn snapshot_rm_killed_before_metadata_rename() {
    crash_and_recover(snapshot_rm, "store::meta::before-rename", Expect::Old);
}

#[test]
fn snapshot_rm_killed_before_directory_sync() {
    crash_and_recover(snapshot_rm, "store::meta::before-dir-sync", Expect::New);
}

// Revert: the new head exists uncommitted; the commit is not renamed; the commit is done
// but the old head's file is not deleted yet.

#[test]
fn revert_killed_after_new_head() {
    crash_and_recover(revert, "store::revert::after-new-head", Expect::Old);
}

#[test]
fn revert_killed_before_metadata_rename() {
    crash_and_recover(revert, "store::meta::before-rename", Expect::Old);
}

#[test]
fn revert_killed_before_old_head_delete() {
    crash_and_recover(revert, "store::revert::before-delete", Expect::New);
}

#[test]
fn revert_killed_before_directory_sync() {
    crash_and_recover(revert, "store::meta::before-dir-sync", Expect::New);
}

// Expand: the first metadata save is the intent, so a crash before its rename leaves the
// old size; once the intent is committed, opening finishes the expansion.

#[test]
fn expand_killed_after_intent() {
    crash_and_recover(expand, "store::expand::after-intent", Expect::New);
}

#[test]
fn expand_killed_after_resize() {
    crash_and_recover(expand, "store::expand::after-resize", Expect::New);
}

#[test]
fn expand_killed_before_intent_rename() {
    crash_and_recover(expand, "store::meta::before-rename", Expect::Old);
}

#[test]
fn expand_killed_before_intent_directory_sync() {
    crash_and_recover(expand, "store::meta::before-dir-sync", Expect::New);
}

// Purge into a snapshot child and into the head: part way through the copy, after the
// copy, before the commit's rename, and after the commit before the file is deleted.

#[test]
fn purge_into_snapshot_killed_mid_copy() {
    crash_and_recover(purge_into_snapshot, "store::purge::mid-copy", Expect::Old);
}

#[test]
fn purge_into_snapshot_killed_before_commit() {
    crash_and_recover(
        purge_into_snapshot,
        "store::purge::before-commit",
        Expect::Old,
    );
}

#[test]
fn purge_into_snapshot_killed_before_metadata_rename() {
    crash_and_recover(
        purge_into_snapshot,
        "store::meta::before-rename",
        Expect::Old,
    );
}

#[test]
fn purge_into_snapshot_killed_before_delete() {
    crash_and_recover(
        purge_into_snapshot,
        "store::purge::before-delete",
        Expect::New,
    );
}

#[test]
fn purge_into_snapshot_killed_before_directory_sync() {
    crash_and_recover(
        purge_into_snapshot,
        "store::meta::before-dir-sync",
        Expect::New,
    );
}

#[test]
fn purge_into_head_killed_mid_copy() {
    crash_and_recover(purge_into_head, "store::purge::mid-copy", Expect::Old);
}

#[test]
fn purge_into_head_killed_before_commit() {
    crash_and_recover(purge_into_head, "store::purge::before-commit", Expect::Old);
}

#[test]
fn purge_into_head_killed_before_metadata_rename() {
    crash_and_recover(purge_into_head, "store::meta::before-rename", Expect::Old);
}

#[test]
fn purge_into_head_killed_before_delete() {
    crash_and_recover(purge_into_head, "store::purge::before-delete", Expect::New);
}

#[test]
fn purge_into_head_killed_before_directory_sync() {
    crash_and_recover(purge_into_head, "store::meta::before-dir-sync", Expect::New);
}

#[test]
fn unknown_crash_point_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["store", "info", dir.path().to_str().unwrap()])
        .env("SHORTHORN_CRASH_AT", "store::no-such-point")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("names no known fail point"), "{stderr}");
}
