//! Snapshot, revert, purge and expand behaviour that the model test does not spell out:
//! the tree listing, space coming back, clear refusals of bad requests.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use shorthorn_block::{ExtentKind, ZeroMode};
use shorthorn_store::{SnapshotKind, Store, StoreError};

const MIB: u64 = 1 << 20;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), "vol", 4 * MIB).unwrap();
    (dir, store)
}

fn snap(store: &Store, name: &str) {
    store
        .snapshot(name, SnapshotKind::User, BTreeMap::new())
        .unwrap();
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn listing_shows_the_tree_with_labels_kinds_and_sizes() {
    let (_dir, store) = store();
    store.write(0, &[1; 65536]).unwrap();
    let labels = BTreeMap::from([("app".to_owned(), "db".to_owned())]);
    store
        .snapshot("s1", SnapshotKind::User, labels.clone())
        .unwrap();
    store
        .snapshot("sys", SnapshotKind::System, BTreeMap::new())
        .unwrap();
    store.revert("s1").unwrap();
    let layers = store.layers().unwrap();
    assert_eq!(layers.len(), 3);
    let s1 = layers
        .iter()
        .find(|l| l.name.as_deref() == Some("s1"))
        .unwrap();
    assert_eq!(s1.labels, labels);
    assert!(s1.user_created && s1.in_chain && !s1.is_head);
    assert_eq!(
        s1.children,
        vec!["sys".to_owned()],
        "the head is not listed as a child"
    );
    assert!(s1.allocated_bytes >= 65536);
    let sys = layers
        .iter()
        .find(|l| l.name.as_deref() == Some("sys"))
        .unwrap();
    assert!(
        !sys.user_created && !sys.in_chain,
        "after revert, sys is on a side branch"
    );
    let head = layers.last().unwrap();
    assert!(head.is_head && head.name.is_none());
    assert_eq!(head.parent.as_deref(), Some("s1"));
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let (_dir, store) = store();
    snap(&store, "s1");
    let mut buf = [0; 2];
    assert!(matches!(
        store.read(4 * MIB - 1, &mut buf),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.write(u64::MAX, &[1]),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.trim(4 * MIB, 1),
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.snapshot("s1", SnapshotKind::User, BTreeMap::new()),
        Err(StoreError::SnapshotExists(_))
    ));
    for name in ["../x", "a/b", "", "x\n"] {
        assert!(matches!(
            store.snapshot(name, SnapshotKind::User, BTreeMap::new()),
            Err(StoreError::InvalidName { .. })
        ));
    }
    let bad_label = BTreeMap::from([("k".to_owned(), "line\nbreak".to_owned())]);
    assert!(matches!(
        store.snapshot("s2", SnapshotKind::User, bad_label),
        Err(StoreError::InvalidLabel { .. })
    ));
    assert!(matches!(
        store.revert("nope"),
        Err(StoreError::SnapshotNotFound(_))
    ));
    assert!(matches!(
        store.expand(MIB),
        Err(StoreError::InvalidSize { .. })
    ));
    assert!(matches!(
        store.expand(4 * MIB + 1),
        Err(StoreError::InvalidSize { .. })
    ));
    store.remove_snapshot("s1").unwrap();
    assert!(matches!(
        store.revert("s1"),
        Err(StoreError::SnapshotRemoved(_))
    ));
    assert_eq!(store.layers().unwrap().len(), 2);
    assert_eq!(store.size(), 4 * MIB);
}

#[test]
fn purge_gives_space_back_and_keeps_content() {
    let (dir, store) = store();
    for i in 0..10u8 {
        store.write(0, &vec![i; (2 * MIB) as usize]).unwrap();
        snap(&store, &format!("s{i}"));
    }
    let mut before = vec![0; (4 * MIB) as usize];
    store.read(0, &mut before).unwrap();
    let used_before = dir_bytes(dir.path());
    for i in 0..10 {
        store.remove_snapshot(&format!("s{i}")).unwrap();
    }
    let report = store.purge().unwrap();
    assert_eq!(report.purged.len(), 10);
    assert!(report.kept.is_empty());
    let used_after = dir_bytes(dir.path());
    assert!(
        used_after < used_before / 5,
        "{used_before} bytes before, {used_after} after"
    );
    let mut after = vec![0; (4 * MIB) as usize];
    store.read(0, &mut after).unwrap();
    assert!(before == after);
    assert_eq!(store.layers().unwrap().len(), 1, "only the head is left");
}

#[test]
fn purge_keeps_a_removed_snapshot_with_two_children() {
    let (_dir, store) = store();
    snap(&store, "base");
    snap(&store, "left");
    store.revert("base").unwrap();
    snap(&store, "right");
    store.remove_snapshot("base").unwrap();
    let report = store.purge().unwrap();
    assert_eq!(report.kept, vec!["base".to_owned()]);
    assert!(report.purged.is_empty());
}

#[test]
fn trim_frees_head_space_only_where_no_snapshot_holds_data() {
    let (_dir, store) = store();
    store.write(0, &[5; (2 * MIB) as usize]).unwrap();
    snap(&store, "s1");
    store.write(2 * MIB, &[6; MIB as usize]).unwrap();
    store.write(0, &[6; MIB as usize]).unwrap();
    store.trim(0, 4 * MIB).unwrap();
    let mut buf = vec![1; (4 * MIB) as usize];
    store.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "trimmed ranges read as zeros");
    // Over the snapshot's data the head must hold written zeros; above it, a hole.
    let status = store.block_status(0, 4 * MIB).unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!((status[0].kind, status[0].len), (ExtentKind::Data, 2 * MIB));
    assert_eq!((status[1].kind, status[1].len), (ExtentKind::Zero, 2 * MIB));
    // The snapshot still has its data.
    store.revert("s1").unwrap();
    let mut buf = vec![0; (2 * MIB) as usize];
    store.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 5));
}

#[test]
fn write_zeroes_with_allocate_keeps_the_range_allocated() {
    let (_dir, store) = store();
    store.write_zeroes(4096, 8192, ZeroMode::Allocate).unwrap();
    let status = store.block_status(0, 4 * 4096).unwrap();
    assert_eq!(status[1].offset, 4096);
    assert_eq!((status[1].kind, status[1].len), (ExtentKind::Data, 8192));
}

#[test]
fn expansion_keeps_data_and_reads_zeros_past_the_old_end() {
    let (dir, store) = store();
    store.write(4 * MIB - 10, &[3; 10]).unwrap();
    snap(&store, "small");
    store.expand(8 * MIB).unwrap();
    store.write(6 * MIB, &[4; 10]).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.size(), 8 * MIB);
    let mut buf = vec![0; 20];
    store.read(4 * MIB - 10, &mut buf).unwrap();
    assert_eq!(&buf[..10], &[3; 10]);
    assert_eq!(&buf[10..], &[0; 10]);
    store.revert("small").unwrap();
    assert_eq!(store.size(), 8 * MIB, "revert keeps the current size");
    let mut buf = vec![9; 10];
    store.read(6 * MIB, &mut buf).unwrap();
    assert_eq!(buf, [0; 10]);
}

#[test]
fn concurrent_sector_writes_into_one_block_all_survive() {
    // Eight threads each write their own 512-byte sector of the same blocks, which live
    // in a snapshot, so every first write is a read-modify-write of a shared block.
    let (_dir, store) = store();
    store.write(0, &[0xee; 65536]).unwrap();
    snap(&store, "s1");
    std::thread::scope(|scope| {
        for sector in 0..8u64 {
            let store = &store;
            scope.spawn(move || {
                for block in 0..16u64 {
                    store
                        .write(block * 4096 + sector * 512, &[sector as u8 + 1; 512])
                        .unwrap();
                }
            });
        }
    });
    let mut buf = vec![0; 65536];
    store.read(0, &mut buf).unwrap();
    for (i, chunk) in buf.chunks(512).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == (i % 8) as u8 + 1),
            "sector {i} lost its write"
        );
    }
}

#[test]
fn snapshot_views_read_what_each_snapshot_held_while_the_volume_goes_on() {
    let (_dir, store) = store();
    store.write(100, &[1; 5000]).unwrap();
    snap(&store, "one");
    store.write(3000, &[2; 5000]).unwrap();
    store.trim(0, 4096).unwrap();
    snap(&store, "two");
    store.write(0, &[3; 9000]).unwrap();
    let one = store.snapshot_view("one").unwrap();
    let two = store.snapshot_view("two").unwrap();
    let mut buf = vec![0; 9000];
    one.read(0, &mut buf).unwrap();
    assert!(buf[..100].iter().all(|&b| b == 0) && buf[100..5100].iter().all(|&b| b == 1));
    two.read(0, &mut buf).unwrap();
    assert!(
        buf[..4096].iter().all(|&b| b == 0),
        "the trimmed block reads as zeros"
    );
    assert!(buf[4096..8000].iter().all(|&b| b == 2));
    assert!(buf[8000..].iter().all(|&b| b == 0));
    assert_eq!(
        two.block_status(0, 4 * MIB).unwrap()[0].kind,
        ExtentKind::Data
    );
    // Purging "one" away keeps the open view of "two" intact.
    store.remove_snapshot("one").unwrap();
    store.purge().unwrap();
    let mut again = vec![0; 9000];
    two.read(0, &mut again).unwrap();
    assert_eq!(buf, again);
    assert!(matches!(
        store.snapshot_view("one"),
        Err(StoreError::SnapshotNotFound(_))
    ));
    assert!(matches!(
        two.read(4 * MIB, &mut [0]),
        Err(StoreError::OutOfRange { .. })
    ));
}
