//! Purging removed snapshots while a client writes, on a three-replica `launch-simple`
//! volume.
//!
//! Ten snapshots are taken, each after overwriting a 16 MiB region that starts 4 MiB
//! further than the last one (so each snapshot holds 16 MiB, and folding them must copy
//! the parts later ones do not cover); all ten are marked removed. Then fio writes a
//! 16 MiB range *inside* the folded data (with crc32c verification) while `snapshot
//! purge --wait` runs, so the purge copies old data into the head at the very places
//! new writes land. Afterwards:
//! - fio verifies every block, during its run and again (`--verify_only`) after the
//!   purge, so the purge never put old data over a newer write;
//! - the volume's content outside fio's range is the same, by sha256, as before the
//!   purge (both taken with no writer running);
//! - `snapshot ls` lists no snapshot, removed or not, and `purge --wait` named all ten;
//! - each replica's directory shrank from at least the ten snapshots' 160 MiB to at most
//!   the live data (52 MiB) plus 8 MiB of slack: one copy of each live block is all a
//!   replica without snapshots may keep;
//! - after the volume stops, every replica is identical and holds one layer.

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{MIB, Volume, assert_fio_verified, path_str, qemu_io, require, sha256};
use crate::ops::{Background, du_allocated, du_apparent, engine_layers, on_engine_ok};

const SNAPSHOTS: u64 = 10;
/// Snapshot i (0-based) follows overwriting `REGION` bytes at `i * STEP`.
const STEP: u64 = 4 * MIB;
const REGION: u64 = 16 * MIB;
/// Where the writer writes during the purge: inside the folded data.
const WRITER_OFFSET: u64 = 32 * MIB;
const WRITER_LEN: u64 = 16 * MIB;
const VOLUME_SIZE: u64 = 128 * MIB;

/// The data the ten overwrites leave: from 0 to the end of the last region.
const LIVE: u64 = (SNAPSHOTS - 1) * STEP + REGION;

fn snapshot_name(i: u64) -> String {
    format!("p{}", i + 1)
}

/// The byte every 4 MiB chunk below [`LIVE`] holds: the newest region covering it.
fn expected_pattern(chunk: u64) -> u8 {
    0x10 + chunk.min(SNAPSHOTS - 1) as u8
}

/// The fio job: verified random writes over the writer's range, 32 in flight.
fn writer_job(dir: &Path, uri: &str) -> PathBuf {
    let job = format!(
        "[global]
ioengine=nbd
uri={uri}
filename=unused
rw=randwrite
bs=4k
iodepth=32
offset={WRITER_OFFSET}
size={WRITER_LEN}
verify=crc32c
do_verify=1
verify_fatal=1
verify_state_save=0
randrepeat=1

[purge-writer]
"
    );
    let path = dir.join("purge-writer.fio");
    std::fs::write(&path, job).unwrap();
    path
}

/// Copies the volume through a new NBD connection, zeroes the writer's range, and
/// returns the sha256 of the rest with the image.
fn content_outside_writer(volume: &Volume, image: &Path) -> String {
    crate::ops::nbdcopy_to_file(&volume.uri(), image);
    let mut file = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    file.seek(SeekFrom::Start(WRITER_OFFSET)).unwrap();
    file.write_all(&vec![0; WRITER_LEN as usize]).unwrap();
    drop(file);
    sha256(image)
}

#[test]
fn purge_under_load_frees_the_space_and_keeps_the_content() {
    let fio = require("fio", "fio");
    let mut volume = crate::ops::start_volume("purge", VOLUME_SIZE, 3, &|_| vec![]);
    let scratch = volume.scratch();
    let images = crate::ops::image_dir();

    // Ten snapshots, each after overwriting a 16 MiB region.
    for i in 0..SNAPSHOTS {
        qemu_io(
            &volume.uri(),
            &[&format!("write -P {:#x} {} {}", 0x10 + i, i * STEP, REGION)],
        );
        on_engine_ok(&volume, &["snapshot", "create", &snapshot_name(i)]);
    }
    let layers = engine_layers(&volume);
    for i in 0..SNAPSHOTS {
        let name = snapshot_name(i);
        let layer = layers
            .iter()
            .find(|l| l.name.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("snapshot ls lacks {name}: {layers:?}"));
        assert!(
            layer.allocated_bytes >= REGION,
            "{name} should hold the 16 MiB written before it: {layer:?}"
        );
    }
    for i in 0..SNAPSHOTS {
        on_engine_ok(&volume, &["snapshot", "rm", &snapshot_name(i)]);
    }
    let layers = engine_layers(&volume);
    assert!(
        layers.iter().filter(|l| !l.head).all(|l| l.removed) && layers.len() == 11,
        "all ten should be marked removed: {layers:?}"
    );

    // The content before the purge, and the space it takes.
    let before = content_outside_writer(&volume, &images.path().join("before.raw"));
    let du_before: Vec<(u64, u64)> = (1..=volume.replicas)
        .map(|i| {
            let dir = volume.replica_dir(i);
            (du_allocated(&dir), du_apparent(&dir))
        })
        .collect();

    // The writer, and the purge while it writes.
    let job = writer_job(&scratch, &volume.uri());
    let mut writer = Background::spawn(
        &fio,
        &["--output-format=normal", path_str(&job)],
        &scratch,
        "fio",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        writer.is_running(),
        "fio finished before the purge started: {}{}",
        writer.stdout_so_far(),
        writer.stderr_so_far()
    );
    let purge_started = Instant::now();
    let purged = on_engine_ok(&volume, &["snapshot", "purge", "--wait"]);
    let purge_took = purge_started.elapsed();
    let writer_ran_through = writer.is_running();
    let outcome = writer.wait(crate::common::CLIENT_TIMEOUT);
    let timing = format!(
        "purge took {purge_took:?} (fio still running at its end: {writer_ran_through}); \
         fio ran {:?}",
        outcome.elapsed
    );
    eprintln!("{timing}");
    let context = format!("{timing}\nlog:\n{}", volume.log_tail(40));
    assert_fio_verified(&outcome, WRITER_LEN / 4096, &context);

    let names: BTreeSet<String> = purged
        .lines()
        .find_map(|l| l.strip_prefix("purged:"))
        .unwrap_or_else(|| panic!("purge --wait printed no `purged:` line: {purged}"))
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let all: BTreeSet<String> = (0..SNAPSHOTS).map(snapshot_name).collect();
    assert_eq!(names, all, "purge --wait printed: {purged}");
    let layers = engine_layers(&volume);
    assert!(
        layers.len() == 1 && layers[0].head && !layers[0].removed,
        "after the purge only the head should be left: {layers:?}"
    );
    let info = volume.info();
    assert!(
        info.lines()
            .any(|l| l.starts_with("purge:") && l.contains("done")),
        "info should show the purge done:\n{info}"
    );

    // No writer now: fio's blocks still verify, and the rest is as before.
    let reverify = crate::common::run(
        &fio,
        &["--output-format=normal", "--verify_only", path_str(&job)],
        crate::common::CLIENT_TIMEOUT,
    );
    let all_output = reverify.all();
    assert!(
        reverify.success() && !all_output.contains("verify:") && all_output.contains("err= 0"),
        "PRODUCT BUG: after the purge, fio --verify_only no longer verifies the blocks \
         written during it:\n{all_output}"
    );
    let after_image = images.path().join("after.raw");
    let after = content_outside_writer(&volume, &after_image);
    if after != before {
        let a = std::fs::read(images.path().join("before.raw")).unwrap();
        let b = std::fs::read(&after_image).unwrap();
        let first = a
            .chunks(4096)
            .zip(b.chunks(4096))
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        panic!(
            "PRODUCT BUG: the purge changed the volume's content outside the writer's \
             range: sha256 {before} before, {after} after; first differing 4 KiB block at \
             byte {}",
            first * 4096
        );
    }
    // Spot-check the expected patterns too (the hash alone cannot say what is wrong).
    for chunk in 0..LIVE / STEP {
        let offset = chunk * STEP;
        if (WRITER_OFFSET..WRITER_OFFSET + WRITER_LEN).contains(&offset) {
            continue;
        }
        let got = crate::ops::read_at(&after_image, offset, 4096);
        assert!(
            got.iter().all(|&b| b == expected_pattern(chunk)),
            "chunk at {offset} should hold {:#x} after the purge, holds {:#x}…",
            expected_pattern(chunk),
            got[0]
        );
    }

    // The space came back.
    for (index, (allocated_before, apparent_before)) in (1..=volume.replicas).zip(&du_before) {
        let dir = volume.replica_dir(index);
        let allocated_after = du_allocated(&dir);
        let apparent_after = du_apparent(&dir);
        eprintln!(
            "replica {index}: du --block-size=1 {allocated_before} → {allocated_after}, \
             du -sb {apparent_before} → {apparent_after}"
        );
        assert!(
            *allocated_before >= SNAPSHOTS * REGION,
            "replica {index} should hold the ten snapshots' {} bytes before the purge: \
             {allocated_before}",
            SNAPSHOTS * REGION
        );
        assert!(
            allocated_after <= LIVE + 8 * MIB,
            "PRODUCT BUG: replica {index} still occupies {allocated_after} bytes after purging \
             every snapshot; at most {} (the live data plus 8 MiB) should be left",
            LIVE + 8 * MIB
        );
        assert!(
            apparent_after < *apparent_before,
            "replica {index}: du -sb did not drop ({apparent_before} → {apparent_after})"
        );
    }
    volume.assert_healthy();

    volume.stop();
    volume.assert_replicas_identical(&[]);
    for index in 1..=volume.replicas {
        let dir = volume.replica_dir(index);
        let info = crate::common::shorthorn_ok(&["store", "info", path_str(&dir), "--json"]);
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["layers_in_tree"], 1, "replica {index}: {info}");
        assert_eq!(info["snapshots"], 0, "replica {index}: {info}");
    }
}
