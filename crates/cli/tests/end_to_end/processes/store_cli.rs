//! End to end through the `shorthorn` binary: the `store` commands on a real replica
//! directory, their output, and their errors on bad input.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shorthorn");
const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;

/// A finished run of the binary.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `shorthorn ARGS`; never may it panic.
fn shorthorn(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SHORTHORN_CRASH_AT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let output = Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!output.stderr.contains("panicked"), "{args:?}: {output:?}");
    output
}

/// Runs a command that must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = shorthorn(args);
    assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
    out.stdout
}

/// Runs a command that must fail with exit code 1 and an `error:` line mentioning every
/// one of `needles`; returns its stderr.
fn fails(args: &[&str], needles: &[&str]) -> String {
    let out = shorthorn(args);
    assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
    assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "{args:?}: stderr lacks {needle:?}: {}",
            out.stderr
        );
    }
    out.stderr
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic random-looking bytes (xorshift).
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

/// Writes a sparse image of `len` bytes with `pieces` (offset, data) written into it;
/// returns its full content.
fn write_image(file: &Path, len: u64, pieces: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let f = File::create(file).unwrap();
    f.set_len(len).unwrap();
    let mut content = vec![0; len as usize];
    for (offset, data) in pieces {
        f.write_all_at(data, *offset).unwrap();
        content[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
    }
    content
}

/// Exports the volume in `dir` and returns the image's bytes.
fn export(dir: &Path, scratch: &Path) -> Vec<u8> {
    let file = scratch.join("export.img");
    ok(&["store", "export", path(dir), path(&file)]);
    fs::read(file).unwrap()
}

/// The `store map` lines as (offset, length, kind).
fn map(args: &[&str]) -> Vec<(u64, u64, String)> {
    let stdout = ok(args);
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["OFFSET", "LENGTH", "KIND"]);
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{l}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].to_owned(),
            )
        })
        .collect()
}

/// Extents of `size` bytes where the blocks in `data` (sorted block numbers) are data.
fn expected_map(size: u64, data: &[u64]) -> Vec<(u64, u64, String)> {
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for block in 0..size / BLOCK {
        let kind = if data.contains(&block) {
            "data"
        } else {
            "zero"
        };
        match out.last_mut() {
            Some(last) if last.2 == kind => last.1 += BLOCK,
            _ => out.push((block * BLOCK, BLOCK, kind.to_owned())),
        }
    }
    out
}

fn ls_json(dir: &Path) -> Vec<Value> {
    let stdout = ok(&["store", "snapshot", "ls", path(dir), "--json"]);
    match serde_json::from_str(&stdout).unwrap() {
        Value::Array(layers) => layers,
        other => panic!("not an array: {other}"),
    }
}

fn names(layers: &[Value]) -> Vec<String> {
    layers
        .iter()
        .map(|l| l["name"].as_str().unwrap_or("(head)").to_owned())
        .collect()
}

#[test]
fn import_export_and_map_keep_holes() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("vol-a");
    let out = ok(&["store", "create", path(&dir), "--size", "4M"]);
    assert!(out.contains("\"vol-a\"") && out.contains("4 MiB"), "{out}");

    // 1 MiB image: data in some blocks, a block of written zeros (block 150), a partial
    // block (200), holes everywhere else.
    let image = scratch.path().join("in.img");
    let pieces = vec![
        (0, pattern(1, 4 * BLOCK as usize)),
        (10 * BLOCK, pattern(2, BLOCK as usize)),
        (64 * BLOCK, pattern(3, 64 * BLOCK as usize)),
        (100 * BLOCK, vec![0; BLOCK as usize]),
        (150 * BLOCK, vec![0; BLOCK as usize]),
        (200 * BLOCK + 17, pattern(4, 100)),
        (255 * BLOCK, pattern(5, BLOCK as usize)),
    ];
    let content = write_image(&image, MIB, &pieces);
    let out = ok(&["store", "import", path(&dir), path(&image)]);
    assert!(out.contains("1 MiB (1048576 bytes) read"), "{out}");

    let mut data_blocks: Vec<u64> = (0..4).chain([10]).chain(64..128).collect();
    data_blocks.retain(|&b| b != 100);
    data_blocks.extend([200, 255]);
    let data_bytes = data_blocks.len() as u64 * BLOCK;
    assert_eq!(
        map(&["store", "map", path(&dir)]),
        expected_map(4 * MIB, &data_blocks),
        "all-zero blocks of the image must stay holes"
    );
    assert_eq!(
        map(&[
            "store",
            "map",
            path(&dir),
            "--offset",
            "36K",
            "--length",
            "12K"
        ]),
        vec![
            (36 * 1024, 4096, "zero".to_owned()),
            (40 * 1024, 4096, "data".to_owned()),
            (44 * 1024, 4096, "zero".to_owned()),
        ]
    );

    let exported = export(&dir, scratch.path());
    assert_eq!(exported.len() as u64, 4 * MIB);
    assert!(exported[..MIB as usize] == content[..], "export differs");
    assert!(exported[MIB as usize..].iter().all(|&b| b == 0));
    let allocated = fs::metadata(scratch.path().join("export.img"))
        .unwrap()
        .blocks()
        * 512;
    assert!(
        allocated <= 2 * data_bytes,
        "the export is not sparse: {allocated} bytes allocated"
    );

    let info = ok(&["store", "info", path(&dir)]);
    assert!(info.contains("name:         vol-a"), "{info}");
    assert!(info.contains("4 MiB (4194304 bytes)"), "{info}");
    assert!(info.contains("1 in chain, 1 in tree"), "{info}");
    let json: Value = serde_json::from_str(&ok(&["store", "info", path(&dir), "--json"])).unwrap();
    assert_eq!(json["size"], 4 * MIB);
    assert_eq!(json["layers_in_chain"], 1);
    // The head holds exactly the data blocks (plus at most some filesystem metadata).
    let allocated = json["allocated_bytes"].as_u64().unwrap();
    assert!(
        (data_bytes..=data_bytes + 64 * 1024).contains(&allocated),
        "{allocated} bytes allocated for {data_bytes} bytes of data"
    );

    // A second image zeros what the first wrote where it has zeros.
    let second = scratch.path().join("second.img");
    let content = write_image(&second, 64 * 1024, &[(4096, pattern(9, 100))]);
    ok(&["store", "import", path(&dir), path(&second)]);
    let exported = export(&dir, scratch.path());
    assert!(
        exported[..content.len()] == content[..],
        "zero blocks were not zeroed"
    );
    assert_eq!(
        &map(&["store", "map", path(&dir), "--length", "64K"])[..2],
        [
            (0, 4096, "zero".to_owned()),
            (4096, 4096, "data".to_owned())
        ]
    );
}

#[test]
fn snapshots_list_revert_remove_and_purge() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("vol");
    ok(&[
        "store",
        "create",
        path(&dir),
        "--size",
        "1M",
        "--name",
        "tank",
    ]);
    let first = scratch.path().join("first.img");
    let first_content = write_image(&first, MIB, &[(0, pattern(1, 300 * 1024))]);
    ok(&["store", "import", path(&dir), path(&first)]);
    let out = ok(&[
        "store",
        "snapshot",
        "create",
        path(&dir),
        "s1",
        "--label",
        "env=test",
        "--label",
        "tier=gold",
    ]);
    assert!(out.contains("\"s1\""), "{out}");
    let second = scratch.path().join("second.img");
    let second_content = write_image(&second, 512 * 1024, &[(100 * 1024, pattern(2, 200 * 1024))]);
    ok(&["store", "import", path(&dir), path(&second)]);
    // The second image's zeros cover s1's data (written as zeros in the head, since s1
    // must keep its data); past its end the first image shows through.
    let mut both = first_content.clone();
    both[..second_content.len()].copy_from_slice(&second_content);
    assert!(
        export(&dir, scratch.path()) == both,
        "import over a snapshot"
    );
    ok(&["store", "snapshot", "create", path(&dir), "s2", "--system"]);

    let tree = ok(&["store", "snapshot", "ls", path(&dir)]);
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 4, "{tree}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LABELS"),
        "{tree}"
    );
    assert!(
        lines[1].starts_with("s1 ") && lines[1].contains("env=test,tier=gold"),
        "{tree}"
    );
    assert!(
        lines[1].contains("user") && lines[1].contains("KiB"),
        "{tree}"
    );
    assert!(
        lines[2].starts_with("s2 ") && lines[2].contains("system"),
        "{tree}"
    );
    assert!(
        lines[3].starts_with("(head) ") && lines[3].contains(" s2 "),
        "{tree}"
    );

    let layers = ls_json(&dir);
    assert_eq!(names(&layers), ["s1", "s2", "(head)"]);
    assert_eq!(layers[0]["labels"]["tier"], "gold");
    assert_eq!(layers[0]["kind"], "user");
    assert_eq!(layers[1]["kind"], "system");
    assert_eq!(layers[1]["parent"], "s1");
    assert_eq!(layers[2]["head"], true);
    assert_eq!(layers[2]["kind"], "head");
    assert!(layers[0]["allocated_bytes"].as_u64().unwrap() >= 300 * 1024);

    // Revert to s1: the volume shows the first image again; s2 stays on its branch.
    let out = ok(&["store", "snapshot", "revert", path(&dir), "s1"]);
    assert!(
        out.contains("reverted volume \"tank\" to snapshot \"s1\""),
        "{out}"
    );
    assert!(
        export(&dir, scratch.path()) == first_content,
        "revert to s1"
    );
    let tree = ok(&["store", "snapshot", "ls", path(&dir)]);
    let tree_names: Vec<&str> = tree
        .lines()
        .map(|l| l.split("  ").next().unwrap())
        .collect();
    assert_eq!(tree_names, ["NAME", "s1", "└─ s2", "(head)"], "{tree}");
    let layers = ls_json(&dir);
    assert_eq!(layers[1]["in_chain"], false);
    assert_eq!(layers[2]["parent"], "s1");

    // Remove s2 and purge it away.
    let out = ok(&["store", "snapshot", "rm", path(&dir), "s2"]);
    assert!(out.contains("purge"), "{out}");
    let tree = ok(&["store", "snapshot", "ls", path(&dir)]);
    assert!(tree.contains("s2 [removed]"), "{tree}");
    assert_eq!(ls_json(&dir)[1]["removed"], true);
    fails(
        &["store", "snapshot", "revert", path(&dir), "s2"],
        &["\"s2\"", "marked removed"],
    );
    let out = ok(&["store", "snapshot", "purge", path(&dir)]);
    assert!(out.contains("purged:       s2"), "{out}");
    assert!(out.contains("kept:         none"), "{out}");
    assert!(out.contains("bytes copied: "), "{out}");
    assert_eq!(names(&ls_json(&dir)), ["s1", "(head)"]);

    // Remove s1, the head's parent: purge folds it into the head, content unchanged.
    ok(&["store", "snapshot", "rm", path(&dir), "s1"]);
    let out = ok(&["store", "snapshot", "purge", path(&dir)]);
    assert!(out.contains("purged:       s1"), "{out}");
    assert!(
        out.contains("bytes copied: 300 KiB (307200 bytes)"),
        "{out}"
    );
    assert_eq!(names(&ls_json(&dir)), ["(head)"]);
    assert!(
        export(&dir, scratch.path()) == first_content,
        "purge changed the volume"
    );
    fails(
        &["store", "snapshot", "revert", path(&dir), "s1"],
        &["\"s1\"", "not found"],
    );
}

#[test]
fn expand_grows_and_keeps_data() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("grow");
    ok(&["store", "create", path(&dir), "--size", "1MiB"]);
    let image = scratch.path().join("in.img");
    let content = write_image(&image, MIB, &[(MIB - 8192, pattern(7, 8192))]);
    ok(&["store", "import", path(&dir), path(&image)]);
    ok(&["store", "snapshot", "create", path(&dir), "before"]);

    let out = ok(&["store", "expand", path(&dir), "3m"]);
    assert!(
        out.contains("from 1 MiB (1048576 bytes) to 3 MiB (3145728 bytes)"),
        "{out}"
    );
    let out = ok(&["store", "expand", path(&dir), "3145728"]);
    assert!(out.contains("nothing to do"), "{out}");
    fails(&["store", "expand", path(&dir), "2M"], &["only grow"]);

    let exported = export(&dir, scratch.path());
    assert_eq!(exported.len() as u64, 3 * MIB);
    assert!(exported[..MIB as usize] == content[..]);
    assert!(exported[MIB as usize..].iter().all(|&b| b == 0));
    // A 3 MiB image now fits.
    let big = scratch.path().join("big.img");
    let big_content = write_image(&big, 3 * MIB, &[(3 * MIB - 4096, pattern(8, 4096))]);
    ok(&["store", "import", path(&dir), path(&big)]);
    assert!(export(&dir, scratch.path()) == big_content);
    // The snapshot from before the expansion reverts to its bytes, zero-padded.
    ok(&["store", "snapshot", "revert", path(&dir), "before"]);
    let exported = export(&dir, scratch.path());
    assert!(exported[..MIB as usize] == content[..]);
    assert!(exported[MIB as usize..].iter().all(|&b| b == 0));
}

#[test]
fn bad_input_fails_with_a_clear_error_and_changes_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("vol");

    let stderr = fails(
        &["store", "create", path(&dir), "--size", "12Q"],
        &["12Q", "unknown unit"],
    );
    assert!(stderr.contains("--size"), "{stderr}");
    fails(
        &["store", "create", path(&dir), "--size", "99999999999T"],
        &["too large"],
    );
    fails(
        &["store", "create", path(&dir), "--size", "1000"],
        &["multiple of 4096"],
    );
    fails(
        &[
            "store",
            "create",
            path(&dir),
            "--size",
            "4M",
            "--name",
            "a/b",
        ],
        &["invalid name \"a/b\"", "path separators", path(&dir)],
    );
    assert!(!dir.exists(), "a failed create left {}", dir.display());
    let hidden = scratch.path().join(".hidden");
    fails(
        &["store", "create", path(&hidden), "--size", "4M"],
        &["\".hidden\"", "--name"],
    );

    let missing = scratch.path().join("missing");
    fails(
        &["store", "info", path(&missing)],
        &["does not exist", path(&missing)],
    );
    let empty = scratch.path().join("empty");
    fs::create_dir(&empty).unwrap();
    fails(
        &["store", "snapshot", "ls", path(&empty)],
        &["no Shorthorn volume", path(&empty)],
    );

    ok(&["store", "create", path(&dir), "--size", "4M"]);
    fails(
        &["store", "create", path(&dir), "--size", "4M"],
        &["already holds a volume"],
    );
    fails(
        &["store", "snapshot", "create", path(&dir), "../x"],
        &["invalid name \"../x\""],
    );
    fails(
        &[
            "store",
            "snapshot",
            "create",
            path(&dir),
            "s",
            "--label",
            "novalue",
        ],
        &["KEY=VALUE"],
    );
    fails(
        &[
            "store",
            "snapshot",
            "create",
            path(&dir),
            "s",
            "--label",
            "a b=c",
        ],
        &["invalid label"],
    );
    fails(
        &["store", "snapshot", "rm", path(&dir), "nope"],
        &["\"nope\" not found", path(&dir)],
    );
    let big = scratch.path().join("big.img");
    write_image(&big, 8 * MIB, &[(0, pattern(1, 4096))]);
    fails(
        &["store", "import", path(&dir), path(&big)],
        &["larger than the volume", path(&big)],
    );
    fails(
        &["store", "import", path(&dir), path(&missing)],
        &[path(&missing), "No such file"],
    );
    let layer = dir.join("layer-1.img");
    fails(
        &["store", "export", path(&dir), path(&layer)],
        &["inside the replica directory"],
    );
    assert_eq!(fs::metadata(&layer).unwrap().len(), 4 * MIB);
    fails(
        &["store", "map", path(&dir), "--offset", "5M"],
        &["past the end"],
    );
    fails(
        &[
            "store",
            "map",
            path(&dir),
            "--offset",
            "1M",
            "--length",
            "4M",
        ],
        &["past the end"],
    );
    fails(&["store", "frobnicate", path(&dir)], &["frobnicate"]);
    fails(&["store", "info"], &["<DIR>"]);

    // Nothing of the above changed the volume.
    assert_eq!(
        map(&["store", "map", path(&dir)]),
        vec![(0, 4 * MIB, "zero".to_owned())]
    );
    assert_eq!(names(&ls_json(&dir)), ["(head)"]);
}

#[test]
fn every_command_explains_itself() {
    let commands: [(&[&str], &str); 13] = [
        (&[], "store"),
        (&["store"], "replica directory"),
        (&["store", "create"], "thin"),
        (&["store", "info"], "on disk"),
        (&["store", "snapshot"], "purge"),
        (&["store", "snapshot", "create"], "--label"),
        (&["store", "snapshot", "ls"], "(head)"),
        (&["store", "snapshot", "rm"], "reverted to"),
        (&["store", "snapshot", "revert"], "discarded"),
        (&["store", "snapshot", "purge"], "bytes copied"),
        (&["store", "expand"], "only"),
        (&["store", "import"], "holes stay holes"),
        (&["store", "export"], "sparse"),
    ];
    for (command, needle) in commands {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let help = ok(&args);
        assert!(help.contains("Usage: shorthorn"), "{args:?}: {help}");
        assert!(help.contains(needle), "{args:?} lacks {needle:?}: {help}");
    }
    let help = ok(&["store", "map", "--help"]);
    assert!(help.contains("--offset") && help.contains("data"), "{help}");
}
