//! Random operation sequences against an in-memory model of the volume and its snapshots;
//! every read is compared byte for byte, and block status must never call data a hole.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use shorthorn_block::{ExtentKind, ZeroMode};
use shorthorn_store::{SnapshotKind, Store, StoreError};

const INITIAL_SIZE: u64 = 128 * 1024;
const MAX_SIZE: u64 = 512 * 1024;

/// How a generated offset is aligned, so every class of request shows up often.
#[derive(Debug, Clone, Copy)]
enum Align {
    Byte,
    Sector,
    Block,
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        at: u32,
        len: u32,
        align: Align,
        seed: u8,
    },
    WriteZeroes {
        at: u32,
        len: u32,
        align: Align,
        allocate: bool,
    },
    Trim {
        at: u32,
        len: u32,
        align: Align,
    },
    Read {
        at: u32,
        len: u32,
        align: Align,
    },
    Flush,
    Snapshot,
    Remove {
        pick: u8,
    },
    Purge,
    Revert {
        pick: u8,
    },
    Expand {
        blocks: u8,
    },
    Reopen,
}

fn align() -> impl Strategy<Value = Align> {
    prop_oneof![Just(Align::Byte), Just(Align::Sector), Just(Align::Block)]
}

fn op() -> impl Strategy<Value = Op> {
    let range = || (any::<u32>(), 1..40_000u32, align());
    prop_oneof![
        6 => (range(), any::<u8>()).prop_map(|((at, len, align), seed)| Op::Write { at, len, align, seed }),
        2 => (range(), any::<bool>()).prop_map(|((at, len, align), allocate)| Op::WriteZeroes { at, len, align, allocate }),
        2 => range().prop_map(|(at, len, align)| Op::Trim { at, len, align }),
        4 => range().prop_map(|(at, len, align)| Op::Read { at, len, align }),
        1 => Just(Op::Flush),
        2 => Just(Op::Snapshot),
        2 => any::<u8>().prop_map(|pick| Op::Remove { pick }),
        1 => Just(Op::Purge),
        1 => any::<u8>().prop_map(|pick| Op::Revert { pick }),
        1 => (1..16u8).prop_map(|blocks| Op::Expand { blocks }),
        1 => Just(Op::Reopen),
    ]
}

/// Places a generated range inside a volume of `size` bytes with the requested alignment.
fn place(at: u32, len: u32, align: Align, size: u64) -> (u64, u64) {
    let unit = match align {
        Align::Byte => 1,
        Align::Sector => 512,
        Align::Block => 4096,
    };
    let offset = (u64::from(at) % size) / unit * unit;
    let len = (u64::from(len).div_ceil(unit) * unit).min(size - offset);
    (offset, len)
}

struct Model {
    volume: Vec<u8>,
    /// Content of each live snapshot at the moment it was taken, and whether it is removed.
    snapshots: BTreeMap<String, (Vec<u8>, bool)>,
    next_snapshot: u32,
}

fn pattern(seed: u8, offset: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add(((offset + i) % 251) as u8) | 1)
        .collect()
}

fn full_read(store: &Store) -> Vec<u8> {
    let mut buf = vec![0; store.size() as usize];
    store.read(0, &mut buf).unwrap();
    buf
}

fn check_block_status(store: &Store, model: &Model) {
    let mut position = 0;
    for extent in store.block_status(0, store.size()).unwrap() {
        assert_eq!(extent.offset, position, "block status must be gap-free");
        if extent.kind == ExtentKind::Zero {
            let range = &model.volume[extent.offset as usize..extent.end() as usize];
            assert!(
                range.iter().all(|&b| b == 0),
                "hole at {} holds data",
                extent.offset
            );
        }
        position = extent.end();
    }
    assert_eq!(position, store.size());
}

fn run(dir: &Path, ops: Vec<Op>) {
    let mut store = Store::create(dir, "model", INITIAL_SIZE).unwrap();
    let mut model = Model {
        volume: vec![0; INITIAL_SIZE as usize],
        snapshots: BTreeMap::new(),
        next_snapshot: 0,
    };
    for op in ops {
        let size = model.volume.len() as u64;
        match op {
            Op::Write {
                at,
                len,
                align,
                seed,
            } => {
                let (offset, len) = place(at, len, align, size);
                let data = pattern(seed, offset, len);
                store.write(offset, &data).unwrap();
                model.volume[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            }
            Op::WriteZeroes {
                at,
                len,
                align,
                allocate,
            } => {
                let (offset, len) = place(at, len, align, size);
                let mode = if allocate {
                    ZeroMode::Allocate
                } else {
                    ZeroMode::MayUnmap
                };
                store.write_zeroes(offset, len, mode).unwrap();
                model.volume[offset as usize..(offset + len) as usize].fill(0);
            }
            Op::Trim { at, len, align } => {
                let (offset, len) = place(at, len, align, size);
                store.trim(offset, len).unwrap();
                model.volume[offset as usize..(offset + len) as usize].fill(0);
            }
            Op::Read { at, len, align } => {
                let (offset, len) = place(at, len, align, size);
                let mut buf = vec![0; len as usize];
                store.read(offset, &mut buf).unwrap();
                assert!(
                    buf == model.volume[offset as usize..(offset + len) as usize],
                    "read at {offset} len {len} differs from the model"
                );
            }
            Op::Flush => store.flush().unwrap(),
            Op::Snapshot => {
                let name = format!("snap-{}", model.next_snapshot);
                model.next_snapshot += 1;
                store
                    .snapshot(&name, SnapshotKind::User, BTreeMap::new())
                    .unwrap();
                model.snapshots.insert(name, (model.volume.clone(), false));
            }
            Op::Remove { pick } => {
                if let Some(name) = nth_key(&model.snapshots, pick) {
                    store.remove_snapshot(&name).unwrap();
                    model.snapshots.get_mut(&name).unwrap().1 = true;
                }
            }
            Op::Purge => {
                let report = store.purge().unwrap();
                let listed = store.layers().unwrap();
                for layer in &listed {
                    if layer.removed {
                        assert!(
                            layer.children.len() + usize::from(has_head_child(&listed, layer)) > 1,
                            "removed snapshot {:?} with one child survived the purge",
                            layer.name
                        );
                    }
                }
                for name in &report.purged {
                    let (_, removed) = model
                        .snapshots
                        .remove(name)
                        .expect("purged a known snapshot");
                    assert!(removed, "purged {name}, which was not marked removed");
                }
                assert_eq!(full_read(&store), model.volume, "purge changed the volume");
            }
            Op::Revert { pick } => {
                if let Some(name) = nth_key(&model.snapshots, pick) {
                    let (content, removed) = model.snapshots[&name].clone();
                    match store.revert(&name) {
                        Ok(()) => {
                            assert!(!removed, "reverted to removed snapshot {name}");
                            let mut volume = content;
                            volume.resize(model.volume.len(), 0);
                            model.volume = volume;
                        }
                        Err(StoreError::SnapshotRemoved(_)) => assert!(removed),
                        Err(e) => panic!("revert to {name}: {e}"),
                    }
                }
            }
            Op::Expand { blocks } => {
                let new_size = (size + u64::from(blocks) * 4096).min(MAX_SIZE);
                store.expand(new_size).unwrap();
                model.volume.resize(new_size as usize, 0);
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(dir).unwrap();
            }
        }
        assert_eq!(store.size(), model.volume.len() as u64);
    }
    check_block_status(&store, &model);
    assert_eq!(full_read(&store), model.volume, "final content differs");
    drop(store);
    let store = Store::open(dir).unwrap();
    assert_eq!(
        full_read(&store),
        model.volume,
        "content differs after reopen"
    );
    // Every snapshot still shows what it held when it was taken.
    for (name, (content, removed)) in &model.snapshots {
        if *removed {
            continue;
        }
        store.revert(name).unwrap();
        let mut expected = content.clone();
        expected.resize(store.size() as usize, 0);
        assert!(full_read(&store) == expected, "snapshot {name} changed");
    }
}

fn has_head_child(
    layers: &[shorthorn_store::LayerInfo],
    layer: &shorthorn_store::LayerInfo,
) -> bool {
    layers.iter().any(|l| l.is_head && l.parent == layer.name)
}

fn nth_key(map: &BTreeMap<String, (Vec<u8>, bool)>, pick: u8) -> Option<String> {
    if map.is_empty() {
        return None;
    }
    map.keys().nth(usize::from(pick) % map.len()).cloned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), ops);
    }
}
