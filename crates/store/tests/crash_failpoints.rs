//! Fault injection inside snapshot, revert, expand, remove and purge: at every injected
//! point the operation fails, and the directory then opens in exactly the old or exactly
//! the new state (which one is fixed by where the point sits), a retry completes, and a
//! store whose commit failed refuses further work instead of diverging from the disk.
//!
//! Run with `--features failpoints` (the test command uses `--all-features`).

#![cfg(feature = "failpoints")]
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use fail::FailScenario;
use rustix::fs::SeekFrom;
use shorthorn_store::{SnapshotKind, Store, StoreError};

const SIZE: u64 = 256 * 1024;

/// What a volume shows: size, snapshots (name, removed), head bytes, and the bytes each
/// live snapshot reverts to.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    size: u64,
    snapshots: Vec<(String, bool)>,
    head: Vec<u8>,
    contents: BTreeMap<String, Vec<u8>>,
}

fn read_all(store: &Store) -> Vec<u8> {
    let mut buf = vec![0; store.size() as usize];
    store.read(0, &mut buf).unwrap();
    buf
}

/// Copies a replica directory, keeping every layer's holes exactly where they are: the
/// format relies on them (a hole falls through to older layers, written zeros do not).
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let source = fs::File::open(entry.path()).unwrap();
        let target = fs::File::create(to.path().join(entry.file_name())).unwrap();
        let len = source.metadata().unwrap().len();
        target.set_len(len).unwrap();
        let mut position = 0;
        while position < len {
            let Ok(data) = rustix::fs::seek(&source, SeekFrom::Data(position)) else {
                break;
            };
            let hole = rustix::fs::seek(&source, SeekFrom::Hole(data)).unwrap();
            let mut buf = vec![0; (hole - data) as usize];
            source.read_exact_at(&mut buf, data).unwrap();
            target.write_all_at(&buf, data).unwrap();
            position = hole;
        }
    }
    to
}

fn observe(dir: &Path) -> Observed {
    let store = Store::open(dir).unwrap();
    let mut snapshots: Vec<(String, bool)> = store
        .layers()
        .unwrap()
        .into_iter()
        .filter_map(|l| l.name.map(|n| (n, l.removed)))
        .collect();
    snapshots.sort();
    let head = read_all(&store);
    let size = store.size();
    drop(store);
    let mut contents = BTreeMap::new();
    for (name, removed) in &snapshots {
        if !removed {
            let copy = copy_dir(dir);
            let store = Store::open(copy.path()).unwrap();
            store.revert(name).unwrap();
            contents.insert(name.clone(), read_all(&store));
        }
    }
    Observed {
        size,
        snapshots,
        head,
        contents,
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 253) as u8))
        .collect()
}

/// base (removed) ← mid (removed) ← head, with data in every layer at unaligned places.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), "vol", SIZE).unwrap();
    store.write(0, &pattern(1, 100_000)).unwrap();
    store
        .snapshot("base", SnapshotKind::User, BTreeMap::new())
        .unwrap();
    store.write(50_001, &pattern(2, 70_000)).unwrap();
    store
        .snapshot("mid", SnapshotKind::User, BTreeMap::new())
        .unwrap();
    store.write(90_000, &pattern(3, 9_000)).unwrap();
    store.trim(8192, 16384).unwrap();
    store
        .snapshot("top", SnapshotKind::User, BTreeMap::new())
        .unwrap();
    store.write(200_000, &pattern(4, 5_000)).unwrap();
    store.flush().unwrap();
    dir
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Old,
    New,
}

type Operation = fn(&Store) -> Result<(), StoreError>;

fn snapshot_op(store: &Store) -> Result<(), StoreError> {
    store.snapshot("new", SnapshotKind::User, BTreeMap::new())
}

fn revert_op(store: &Store) -> Result<(), StoreError> {
    store.revert("mid")
}

fn expand_op(store: &Store) -> Result<(), StoreError> {
    store.expand(2 * SIZE)
}

fn remove_op(store: &Store) -> Result<(), StoreError> {
    store.remove_snapshot("top")
}

fn purge_op(store: &Store) -> Result<(), StoreError> {
    store.purge().map(drop)
}

/// Points after which memory and disk may disagree, so the store must refuse more work.
const POISONING_POINTS: [&str; 4] = [
    "store::meta::before-rename",
    "store::meta::before-dir-sync",
    "store::expand::after-intent",
    "store::expand::after-resize",
];

/// Injects a failure at `point` during `op`, then checks the reopened state and a retry.
fn check(op: Operation, point: &str, expect: Expect) {
    check_with_removed(None, op, point, expect);
}

/// Like [`check`], after marking snapshot `removed` removed (part of the old state).
fn check_with_removed(removed: Option<&str>, op: Operation, point: &str, expect: Expect) {
    // Fail points are process-wide: the scenario serialises tests that use them.
    let _scenario = FailScenario::setup();
    let dir = setup();
    if let Some(name) = removed {
        Store::open(dir.path())
            .unwrap()
            .remove_snapshot(name)
            .unwrap();
    }
    let old = observe(dir.path());
    let new = {
        let copy = copy_dir(dir.path());
        op(&Store::open(copy.path()).unwrap()).unwrap();
        observe(copy.path())
    };
    assert_ne!(old, new, "{point}: the operation must change something");

    fail::cfg(point, "return").unwrap();
    let store = Store::open(dir.path()).unwrap();
    let result = op(&store);
    fail::remove(point);
    match result {
        Err(StoreError::Injected(at)) => assert_eq!(at, point),
        other => panic!("{point}: expected the injected failure, got {other:?}"),
    }
    // A store whose commit may have reached the disk must refuse work until reopened.
    let poisoned = matches!(store.flush(), Err(StoreError::Poisoned { .. }));
    assert_eq!(
        poisoned,
        POISONING_POINTS.contains(&point),
        "{point}: poisoned = {poisoned}"
    );
    if !poisoned && expect == Expect::Old {
        // The same instance goes on serving the old state correctly.
        store.write(1, &[0xaa]).unwrap();
        let mut byte = [0];
        store.read(1, &mut byte).unwrap();
        assert_eq!(byte, [0xaa]);
        store.write(1, &old.head[1..2]).unwrap();
    }
    drop(store);

    let reopened = observe(dir.path());
    let wanted = if expect == Expect::Old { &old } else { &new };
    assert!(
        reopened == *wanted,
        "{point}: expected the {expect:?} state after reopening"
    );
    let stray: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "volume.json" && !(n.starts_with("layer-") && n.ends_with(".img")))
        .collect();
    assert!(stray.is_empty(), "{point}: stray files {stray:?}");

    if expect == Expect::Old {
        op(&Store::open(dir.path()).unwrap()).unwrap();
        let retried = observe(dir.path());
        assert!(
            retried == new,
            "{point}: the retry must reach the new state"
        );
    }
}

#[test]
fn snapshot_is_atomic() {
    check(snapshot_op, "store::snapshot::after-new-head", Expect::Old);
    check(snapshot_op, "store::meta::before-rename", Expect::Old);
    check(snapshot_op, "store::meta::before-dir-sync", Expect::New);
}

#[test]
fn revert_is_atomic() {
    check(revert_op, "store::revert::after-new-head", Expect::Old);
    check(revert_op, "store::meta::before-rename", Expect::Old);
    check(revert_op, "store::meta::before-dir-sync", Expect::New);
    check(revert_op, "store::revert::before-delete", Expect::New);
}

#[test]
fn expand_is_atomic() {
    // The first metadata save records the intent; an open that finds it finishes the job.
    check(expand_op, "store::meta::before-rename", Expect::Old);
    check(expand_op, "store::meta::before-dir-sync", Expect::New);
    check(expand_op, "store::expand::after-intent", Expect::New);
    check(expand_op, "store::expand::after-resize", Expect::New);
}

#[test]
fn remove_is_atomic() {
    check(remove_op, "store::meta::before-rename", Expect::Old);
    check(remove_op, "store::meta::before-dir-sync", Expect::New);
}

#[test]
fn purge_into_a_snapshot_is_atomic() {
    check_with_removed(
        Some("base"),
        purge_op,
        "store::purge::mid-copy",
        Expect::Old,
    );
    check_with_removed(
        Some("base"),
        purge_op,
        "store::purge::before-commit",
        Expect::Old,
    );
    check_with_removed(
        Some("base"),
        purge_op,
        "store::meta::before-rename",
        Expect::Old,
    );
    check_with_removed(
        Some("base"),
        purge_op,
        "store::meta::before-dir-sync",
        Expect::New,
    );
    check_with_removed(
        Some("base"),
        purge_op,
        "store::purge::before-delete",
        Expect::New,
    );
}

#[test]
fn purge_into_the_head_is_atomic() {
    check_with_removed(Some("top"), purge_op, "store::purge::mid-copy", Expect::Old);
    check_with_removed(
        Some("top"),
        purge_op,
        "store::purge::before-commit",
        Expect::Old,
    );
    check_with_removed(
        Some("top"),
        purge_op,
        "store::meta::before-rename",
        Expect::Old,
    );
    check_with_removed(
        Some("top"),
        purge_op,
        "store::meta::before-dir-sync",
        Expect::New,
    );
    check_with_removed(
        Some("top"),
        purge_op,
        "store::purge::before-delete",
        Expect::New,
    );
}
