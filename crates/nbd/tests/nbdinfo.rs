//! nbdinfo (libnbd) sees what the server advertises: size, block size constraints,
//! transmission flags and contexts (`--json`), the allocation map (`--map`), and the
//! export list (`--list`).

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use common::{DESCRIPTION, EXPORT, RO_EXPORT, TestServer, require, run_ok};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn nbdinfo(args: &[&str]) -> String {
    run_ok(&require("nbdinfo", "libnbd-bin"), args)
}

fn json(args: &[&str]) -> Value {
    let out = nbdinfo(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("nbdinfo printed bad JSON ({e}):\n{out}"))
}

#[test]
fn json_shows_size_block_sizes_and_flags() {
    let server = TestServer::start(64 * MIB);
    let info = json(&["--json", &server.uri()]);
    assert_eq!(info["protocol"], "newstyle-fixed");
    assert_eq!(info["TLS"], false);
    assert_eq!(info["structured"], true);
    let exports = info["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 1);
    let e = &exports[0];
    assert_eq!(e["export-name"], EXPORT);
    assert_eq!(e["description"], DESCRIPTION);
    assert_eq!(e["export-size"], 64 * MIB);
    assert_eq!(e["block_size_minimum"], 1);
    assert_eq!(e["block_size_preferred"], 4096);
    assert_eq!(e["block_size_maximum"], 32 * MIB);
    for (key, expected) in [
        ("is_read_only", false),
        ("is_rotational", false),
        ("can_flush", true),
        ("can_fua", true),
        ("can_trim", true),
        ("can_zero", true),
        ("can_df", true),
        ("can_multi_conn", true),
        ("can_cache", false),
        ("can_fast_zero", false),
    ] {
        assert_eq!(e[key], expected, "{key} in {e}");
    }
    let contexts = e["contexts"].as_array().unwrap();
    assert_eq!(contexts, &vec![Value::from("base:allocation")]);
}

#[test]
fn the_read_only_export_advertises_read_only_without_multi_conn() {
    let server = TestServer::start(4 * MIB);
    let info = json(&["--json", &server.uri_of(RO_EXPORT)]);
    let e = &info["exports"][0];
    assert_eq!(e["export-name"], RO_EXPORT);
    assert_eq!(e["is_read_only"], true);
    assert_eq!(e["can_multi_conn"], false);
    assert_eq!(e["export-size"], MIB);
}

/// Parses `nbdinfo --map` lines: offset, length, type.
fn map(uri: &str) -> Vec<(u64, u64, u32, String)> {
    nbdinfo(&["--map", uri])
        .lines()
        .map(|line| {
            let mut fields = line.split_whitespace();
            let mut next = || {
                fields
                    .next()
                    .unwrap_or_else(|| panic!("short map line {line:?}"))
            };
            let offset = next().parse().unwrap();
            let len = next().parse().unwrap();
            let kind = next().parse().unwrap();
            (offset, len, kind, next().to_owned())
        })
        .collect()
}

#[test]
fn map_shows_data_only_where_written() {
    let server = TestServer::start(64 * MIB);
    assert_eq!(
        map(&server.uri()),
        vec![(0, 64 * MIB, 3, "hole,zero".to_owned())],
        "a fresh volume is one hole"
    );
    // Write through NBD (qemu-io), including an unaligned write that allocates two
    // 4 KiB blocks.
    common::qemu_io(
        &server.uri(),
        &[
            "write -P 1 1M 64k",
            "write -P 2 10M 4k",
            "write -P 3 20479k 2k",
        ],
    );
    let expected = vec![
        (0, MIB, 3, "hole,zero".to_owned()),
        (MIB, 64 << 10, 0, "data".to_owned()),
        (
            MIB + (64 << 10),
            9 * MIB - (64 << 10),
            3,
            "hole,zero".to_owned(),
        ),
        (10 * MIB, 4096, 0, "data".to_owned()),
        (10 * MIB + 4096, 10 * MIB - 8192, 3, "hole,zero".to_owned()),
        (20 * MIB - 4096, 8192, 0, "data".to_owned()),
        (20 * MIB + 4096, 44 * MIB - 4096, 3, "hole,zero".to_owned()),
    ];
    assert_eq!(map(&server.uri()), expected);
    // Trimming the first extent turns it back into a hole.
    common::qemu_io(&server.uri(), &["discard 1M 64k"]);
    let after = map(&server.uri());
    assert_eq!(
        after[0],
        (0, 10 * MIB, 3, "hole,zero".to_owned()),
        "{after:?}"
    );
}

#[test]
fn list_shows_every_export_with_its_description() {
    let server = TestServer::start(8 * MIB);
    let base = format!("nbd://127.0.0.1:{}", server.port());
    let text = nbdinfo(&["--list", &base]);
    assert!(text.contains(&format!("export=\"{EXPORT}\"")), "{text}");
    assert!(
        text.contains(&format!("description: {DESCRIPTION}")),
        "{text}"
    );
    assert!(text.contains(&format!("export=\"{RO_EXPORT}\"")), "{text}");

    let info = json(&["--list", "--json", &base]);
    let names: Vec<&str> = info["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![EXPORT, RO_EXPORT]);
    assert_eq!(info["exports"][0]["export-size"], 8 * MIB);
}

#[test]
fn size_of_an_unknown_export_fails_cleanly() {
    let server = TestServer::start(MIB);
    let outcome = common::run(
        &require("nbdinfo", "libnbd-bin"),
        &["--size", &server.uri_of("nope")],
        common::CLIENT_TIMEOUT,
    );
    assert!(!outcome.success());
    assert!(
        outcome.stderr.contains("nope") || outcome.stderr.contains("unknown"),
        "{}",
        outcome.stderr
    );
    // The server keeps serving.
    let size = nbdinfo(&["--size", &server.uri()]);
    assert_eq!(size.trim(), MIB.to_string());
}
