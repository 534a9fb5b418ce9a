//! Every way a replica directory can be broken gives a clear error naming the file, never
//! a panic, and never a silent repair: the directory is left exactly as it was.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shorthorn_store::{METADATA_FILE, SnapshotKind, Store, StoreError, layer_file_name};

/// A volume with one snapshot ("base") and some data in both layers.
fn volume() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), "vol", 1 << 20).unwrap();
    store.write(0, &[7; 8192]).unwrap();
    store
        .snapshot("base", SnapshotKind::User, BTreeMap::new())
        .unwrap();
    store.write(4096, &[9; 100]).unwrap();
    store.flush().unwrap();
    dir
}

fn snapshot_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Opens after `damage`, expects an error whose message names `needle`, and checks the
/// directory was not touched by the failed open.
fn open_fails(damage: impl FnOnce(&Path), needle: &str) -> StoreError {
    let dir = volume();
    damage(dir.path());
    let before = snapshot_of(dir.path());
    let err = Store::open(dir.path()).err().expect("open must fail");
    let message = err.to_string();
    assert!(
        message.contains(needle),
        "error {message:?} should mention {needle:?}"
    );
    assert_eq!(
        snapshot_of(dir.path()),
        before,
        "a failed open changed the directory"
    );
    err
}

fn edit_metadata(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join(METADATA_FILE);
    let mut value: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
}

fn head_id(dir: &Path) -> u64 {
    let value: Value = serde_json::from_slice(&fs::read(dir.join(METADATA_FILE)).unwrap()).unwrap();
    value["head"].as_u64().unwrap()
}

#[test]
fn missing_metadata_names_the_file() {
    let err = open_fails(
        |d| fs::remove_file(d.join(METADATA_FILE)).unwrap(),
        "volume.json",
    );
    assert!(matches!(err, StoreError::MissingMetadata { .. }), "{err:?}");
}

#[test]
fn corrupt_metadata_names_the_file() {
    let err = open_fails(
        |d| fs::write(d.join(METADATA_FILE), b"{\"format_versi").unwrap(),
        "volume.json",
    );
    assert!(matches!(err, StoreError::CorruptMetadata { .. }), "{err:?}");
    let err = open_fails(
        |d| fs::write(d.join(METADATA_FILE), b"\x00\xff garbage").unwrap(),
        "corrupt",
    );
    assert!(matches!(err, StoreError::CorruptMetadata { .. }), "{err:?}");
}

#[test]
fn empty_metadata_file_is_corrupt() {
    let err = open_fails(
        |d| fs::write(d.join(METADATA_FILE), b"").unwrap(),
        "volume.json",
    );
    assert!(matches!(err, StoreError::CorruptMetadata { .. }), "{err:?}");
}

#[test]
fn unknown_format_version_is_refused() {
    let err = open_fails(
        |d| edit_metadata(d, |v| v["format_version"] = 2.into()),
        "format version 2",
    );
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 2, .. }),
        "{err:?}"
    );
    let err = open_fails(
        |d| {
            edit_metadata(d, |v| {
                drop(v.as_object_mut().unwrap().remove("format_version"))
            })
        },
        "format_version",
    );
    assert!(matches!(err, StoreError::CorruptMetadata { .. }), "{err:?}");
}

#[test]
fn unknown_fields_are_refused_rather_than_dropped() {
    open_fails(
        |d| edit_metadata(d, |v| v["encryption"] = "aes".into()),
        "encryption",
    );
}

#[test]
fn missing_layer_file_names_the_layer() {
    let dir = volume();
    let head = layer_file_name(head_id(dir.path()));
    drop(dir);
    let err = open_fails(
        |d| fs::remove_file(d.join(layer_file_name(head_id(d)))).unwrap(),
        &head,
    );
    assert!(matches!(err, StoreError::MissingLayer { .. }), "{err:?}");
}

#[test]
fn layer_of_the_wrong_size_is_refused() {
    let err = open_fails(
        |d| {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(d.join("layer-1.img"))
                .unwrap();
            file.set_len(4096).unwrap();
        },
        "layer-1.img",
    );
    assert!(
        matches!(
            err,
            StoreError::LayerSizeMismatch {
                expected: 1048576,
                found: 4096,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_sizes_in_metadata_are_refused() {
    open_fails(
        |d| edit_metadata(d, |v| v["size"] = 1000.into()),
        "multiple of 4096",
    );
    open_fails(
        |d| edit_metadata(d, |v| v["size"] = 0.into()),
        "greater than zero",
    );
    open_fails(
        |d| edit_metadata(d, |v| v["size"] = (2u64 << 20).into()),
        "head layer",
    );
    open_fails(
        |d| edit_metadata(d, |v| v["block_size"] = 512.into()),
        "block_size",
    );
}

#[test]
fn broken_trees_are_refused() {
    open_fails(
        |d| edit_metadata(d, |v| v["head"] = 99.into()),
        "head layer 99",
    );
    open_fails(
        |d| edit_metadata(d, |v| v["layers"][0]["parent"] = 42.into()),
        "unknown parent",
    );
    open_fails(
        |d| edit_metadata(d, |v| v["layers"][0]["name"] = "a/b".into()),
        "path separators",
    );
    open_fails(
        |d| edit_metadata(d, |v| v["layers"][1]["name"] = "base".into()),
        "the head layer has a name",
    );
}

#[test]
fn debris_of_interrupted_operations_is_removed_and_other_files_kept() {
    let dir = volume();
    fs::write(dir.path().join(layer_file_name(99)), b"half-made layer").unwrap();
    fs::write(dir.path().join("volume.json.tmp"), b"{half").unwrap();
    fs::write(dir.path().join("notes.txt"), b"operator notes").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!dir.path().join(layer_file_name(99)).exists());
    assert!(!dir.path().join("volume.json.tmp").exists());
    assert!(
        dir.path().join("notes.txt").exists(),
        "files that are not ours stay"
    );
    let mut buf = [0; 2];
    store.read(4095, &mut buf).unwrap();
    assert_eq!(buf, [7, 9]);
}

#[test]
fn creating_over_an_existing_volume_is_refused() {
    let dir = volume();
    let before = snapshot_of(dir.path());
    let err = Store::create(dir.path(), "vol", 1 << 20).err().unwrap();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(snapshot_of(dir.path()), before);
}
