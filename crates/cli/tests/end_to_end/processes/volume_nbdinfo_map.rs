//! `nbdinfo --map` (NBD block status, `base:allocation`) through a `launch-simple`
//! volume: data shows exactly where qemu-io wrote, at 4 KiB granularity, holes
//! everywhere else; a discarded range becomes a hole again. After stopping, every
//! replica's own map (`shorthorn store map`) says the same and their content is identical.

use crate::common::{KIB, MIB, Volume, path_str, qemu_io, require, run_ok, shorthorn_ok};
use serde_json::Value;

const SIZE: u64 = 16 * MIB;
const BLOCK: u64 = 4 * KIB;

/// `(offset, length, is_data)` extents, sorted, gap-free, neighbours of the same kind
/// merged.
type Map = Vec<(u64, u64, bool)>;

fn normalize(extents: impl IntoIterator<Item = (u64, u64, bool)>) -> Map {
    let mut out: Map = Vec::new();
    for (offset, len, data) in extents {
        if len == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.2 == data && last.0 + last.1 == offset => last.1 += len,
            _ => out.push((offset, len, data)),
        }
    }
    out
}

/// The map a volume of `SIZE` bytes should have with data in `data` (start, end) ranges.
fn expected(data: &[(u64, u64)]) -> Map {
    let mut ranges = data.to_vec();
    ranges.sort_unstable();
    let mut extents = Vec::new();
    let mut at = 0;
    for (start, end) in ranges {
        assert!(start >= at && start % BLOCK == 0 && end % BLOCK == 0);
        extents.push((at, start - at, false));
        extents.push((start, end - start, true));
        at = end;
    }
    extents.push((at, SIZE - at, false));
    normalize(extents)
}

/// `nbdinfo --map --json URI`, checked to cover the volume gap-free.
fn nbd_map(uri: &str) -> Map {
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let out = run_ok(&nbdinfo, &["--map", "--json", uri]);
    let json: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("nbdinfo --map --json printed no JSON ({e}):\n{out}"));
    let mut at = 0;
    let mut extents = Vec::new();
    for e in json.as_array().unwrap() {
        let offset = e["offset"].as_u64().unwrap();
        let len = e["length"].as_u64().unwrap();
        let kind = e["type"].as_u64().unwrap();
        assert_eq!(offset, at, "map has a gap or overlap:\n{out}");
        // base:allocation: bit 0 hole, bit 1 zero. Shorthorn reports holes as
        // hole+zero (3) and allocated blocks as data (0), nothing else.
        assert!(
            kind == 0 || kind == 3,
            "unexpected extent type {kind}:\n{out}"
        );
        extents.push((offset, len, kind == 0));
        at = offset + len;
    }
    assert_eq!(at, SIZE, "map does not cover the volume:\n{out}");
    // The text form agrees with the JSON form.
    let text = run_ok(&nbdinfo, &["--map", uri]);
    let from_text = normalize(text.lines().map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2] == "0")
    }));
    let from_json = normalize(extents);
    assert_eq!(
        from_text, from_json,
        "nbdinfo --map text:\n{text}\njson:\n{out}"
    );
    from_json
}

/// `shorthorn store map DIR` of a stopped replica.
fn store_map(dir: &std::path::Path) -> Map {
    let out = shorthorn_ok(&["store", "map", path_str(dir)]);
    normalize(out.lines().skip(1).map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f[2] == "data" || f[2] == "zero", "store map row {l:?}");
        (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2] == "data")
    }))
}

#[test]
fn map_shows_written_extents_and_discards_become_holes() {
    let mut volume = Volume::start("map", SIZE, 3);
    let uri = volume.uri();

    // A fresh volume is one hole.
    assert_eq!(nbd_map(&uri), expected(&[]), "fresh volume");

    let m = MIB;
    qemu_io(
        &uri,
        &[
            // A: one aligned block at 0.
            "write -P 0x01 0 4096",
            // B: 64 KiB at 1 MiB.
            &format!("write -P 0x02 {m} 65536"),
            // C: 10 bytes inside the block at 5 MiB: the whole block becomes data.
            &format!("write -P 0x03 {} 10", 5 * m + 100),
            // D: 4096 unaligned bytes straddling 8 MiB: two blocks.
            &format!("write -P 0x04 {} 4096", 8 * m - 4095),
            // E: zeroes that must stay allocated (NO_HOLE): data.
            &format!("write -z {} 8192", 12 * m),
            // F: written, then zeroed with unmap allowed: a hole again.
            &format!("write -P 0x05 {} 65536", 15 * m),
            &format!("write -z -u {} 65536", 15 * m),
            "flush",
        ],
    );
    let written = [
        (0, BLOCK),
        (m, m + 64 * KIB),
        (5 * m, 5 * m + BLOCK),
        (8 * m - BLOCK, 8 * m + BLOCK),
        (12 * m, 12 * m + 8 * KIB),
    ];
    assert_eq!(nbd_map(&uri), expected(&written), "after the writes");

    qemu_io(
        &uri,
        &[
            // B discarded whole: a hole again.
            &format!("discard {m} 65536"),
            // The first block of D: a hole; its second block stays data.
            &format!("discard {} 4096", 8 * m - BLOCK),
            // Part of C's block: zeroed in place, the block stays data.
            &format!("discard {} 10", 5 * m + 100),
            &format!("read -P 0 {m} 65536"),
            &format!("read -P 0 {} 4096", 8 * m - BLOCK),
            &format!("read -P 0x04 {} 1", 8 * m),
            &format!("read -P 0 {} 4096", 5 * m),
            "flush",
        ],
    );
    let remaining = [
        (0, BLOCK),
        (5 * m, 5 * m + BLOCK),
        (8 * m, 8 * m + BLOCK),
        (12 * m, 12 * m + 8 * KIB),
    ];
    assert_eq!(nbd_map(&uri), expected(&remaining), "after the discards");

    // A 2-block discard spanning a data block and a hole is fine too.
    qemu_io(&uri, &["discard 0 8192", "read -P 0 0 8192"]);
    assert_eq!(
        nbd_map(&uri),
        expected(&remaining[1..]),
        "after discarding A"
    );

    volume.stop();
    for index in 1..=volume.replicas {
        assert_eq!(
            store_map(&volume.replica_dir(index)),
            expected(&remaining[1..]),
            "replica {index}'s own map differs from what the volume reported"
        );
    }
    volume.assert_replicas_identical(&[]);
}
