//! Backups checked against an in-memory model: random writes, zeroes, snapshots,
//! snapshot removal + purge (which folds layers, so an incremental backup's base
//! snapshot may vanish) and backups (incremental or full) of a real store into a
//! `file://` target. Every backup must restore — into a fresh directory, in place onto
//! the directory holding the previous restore, and in place comparing only the two
//! backups' block maps (`since_last_restore`) — to exactly the model's content at its
//! snapshot.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use shorthorn_backup::{
    BackupOptions, Progress, RestoreOptions, SnapshotId, SnapshotSource, SourceInfo, Target,
    TargetOptions, create_backup, restore_backup,
};
use shorthorn_block::ZeroMode;
use shorthorn_store::{SnapshotKind, Store, StoreError};

const SIZE: u64 = 1 << 20;
const BLOCK: u64 = 64 << 10;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: u64, byte: u8 },
    Zero { offset: u64, len: u64 },
    Snapshot,
    Backup { full: bool },
    RemoveOldestSnapshot,
}

fn op() -> impl Strategy<Value = Op> {
    let range =
        (0..SIZE - 1).prop_flat_map(|offset| (Just(offset), 1..=(SIZE - offset).min(200_000)));
    prop_oneof![
        4 => (range.clone(), 1u8..=255).prop_map(|((offset, len), byte)| Op::Write { offset, len, byte }),
        1 => range.prop_map(|(offset, len)| Op::Zero { offset, len }),
        2 => Just(Op::Snapshot),
        2 => any::<bool>().prop_map(|full| Op::Backup { full }),
        1 => Just(Op::RemoveOldestSnapshot),
    ]
}

/// Reads a store's snapshot, as a replica would serve it.
struct StoreSource {
    store: Arc<Store>,
    /// The snapshot, then its ancestors, nearest first.
    lineage: Vec<String>,
}

impl SnapshotSource for StoreSource {
    type Error = StoreError;

    async fn changed_since(&self, since: Option<&str>) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut extents = Vec::new();
        for layer in self
            .lineage
            .iter()
            .take_while(|l| Some(l.as_str()) != since)
        {
            extents.extend(self.store.layer_extents(Some(layer))?);
        }
        Ok(extents)
    }

    async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut data = vec![0; len as usize];
        self.store
            .snapshot_view(&self.lineage[0])?
            .read(offset, &mut data)?;
        Ok(data)
    }
}

fn source_of(store: &Arc<Store>, snapshot: &str) -> (StoreSource, SourceInfo) {
    let layers = store.layers().unwrap();
    let by_name: BTreeMap<String, _> = layers
        .iter()
        .filter_map(|l| l.name.clone().map(|n| (n, l)))
        .collect();
    let mut lineage = vec![by_name[snapshot]];
    while let Some(parent) = lineage.last().unwrap().parent.as_ref() {
        lineage.push(by_name[parent]);
    }
    let id = |l: &&shorthorn_store::LayerInfo| SnapshotId {
        name: l.name.clone().unwrap(),
        created: l.created.clone(),
    };
    let info = SourceInfo {
        volume: "model".into(),
        size: SIZE,
        snapshot: id(&lineage[0]),
        ancestors: lineage[1..].iter().map(id).collect(),
    };
    let source = StoreSource {
        store: store.clone(),
        lineage: lineage.iter().map(|l| l.name.clone().unwrap()).collect(),
    };
    (source, info)
}

fn read_all(dir: &std::path::Path) -> Vec<u8> {
    let store = Store::open(dir).unwrap();
    let mut data = vec![0; SIZE as usize];
    store.read(0, &mut data).unwrap();
    data
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::create(&dir.path().join("volume"), "model", SIZE).unwrap());
    let target = Target::open(
        &format!("file://{}/target", dir.path().display()),
        &TargetOptions {
            create_directory: true,
            ..TargetOptions::default()
        },
    )
    .unwrap();
    let mut model = vec![0u8; SIZE as usize];
    // Snapshots in the chain, oldest first, with the model's content at each.
    let mut snapshots: Vec<(String, Vec<u8>)> = Vec::new();
    let mut backups: Vec<(String, Vec<u8>)> = Vec::new();
    let standby = dir.path().join("standby");
    let follower = dir.path().join("follower");
    let mut followed: Option<String> = None;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Write { offset, len, byte } => {
                let data = vec![byte; len as usize];
                store.write(offset, &data).unwrap();
                model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            }
            Op::Zero { offset, len } => {
                store.write_zeroes(offset, len, ZeroMode::MayUnmap).unwrap();
                model[offset as usize..(offset + len) as usize].fill(0);
            }
            Op::Snapshot => {
                let name = format!("s{step}");
                store
                    .snapshot(&name, SnapshotKind::User, BTreeMap::new())
                    .unwrap();
                snapshots.push((name, model.clone()));
            }
            Op::RemoveOldestSnapshot => {
                if snapshots.len() > 1 {
                    let (name, _) = snapshots.remove(0);
                    store.remove_snapshot(&name).unwrap();
                    store.purge().unwrap();
                }
            }
            Op::Backup { full } => {
                let Some((snapshot, content)) = snapshots.last().cloned() else {
                    continue;
                };
                let (source, info) = source_of(&store, &snapshot);
                let options = BackupOptions {
                    block_size: Some(BLOCK),
                    full,
                    parallel: 3,
                    ..BackupOptions::default()
                };
                let record = runtime
                    .block_on(create_backup(
                        &target,
                        Arc::new(source),
                        &info,
                        &options,
                        Arc::new(Progress::default()),
                    ))
                    .unwrap();
                prop_assert!(record.stats.read_bytes <= SIZE);
                let restore = |to: &std::path::Path| {
                    runtime
                        .block_on(restore_backup(
                            &target,
                            "model",
                            &record.name,
                            to,
                            RestoreOptions::default(),
                            Arc::new(Progress::default()),
                        ))
                        .unwrap()
                };
                let fresh = dir.path().join(format!("fresh{step}"));
                restore(&fresh);
                prop_assert!(
                    read_all(&fresh) == content,
                    "fresh restore of {}",
                    record.name
                );
                restore(&standby);
                prop_assert!(
                    read_all(&standby) == content,
                    "in-place restore of {}",
                    record.name
                );
                let summary = runtime
                    .block_on(restore_backup(
                        &target,
                        "model",
                        &record.name,
                        &follower,
                        RestoreOptions {
                            since_last_restore: true,
                            ..RestoreOptions::default()
                        },
                        Arc::new(Progress::default()),
                    ))
                    .unwrap();
                prop_assert!(
                    read_all(&follower) == content,
                    "restore of {} comparing records",
                    record.name
                );
                prop_assert_eq!(&summary.since, &followed, "the records compared");
                followed = Some(record.name.clone());
                std::fs::remove_dir_all(&fresh).unwrap();
                backups.push((record.name, content));
            }
        }
    }
    // Every backup still restores after all that followed it.
    for (name, content) in &backups {
        let to = dir.path().join(format!("final-{name}"));
        runtime
            .block_on(restore_backup(
                &target,
                "model",
                name,
                &to,
                RestoreOptions::default(),
                Arc::new(Progress::default()),
            ))
            .unwrap();
        prop_assert!(&read_all(&to) == content, "final restore of {}", name);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn every_backup_restores_to_its_snapshot(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
