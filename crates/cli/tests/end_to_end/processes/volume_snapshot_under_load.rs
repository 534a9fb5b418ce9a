//! Snapshots taken through the engine while clients write.
//!
//! 1. fio (two jobs, 32 requests in flight each, crc32c verification) writes a
//!    three-replica volume while snapshots are taken every 0.3 s: fio verifies every
//!    block, and after the volume stops every snapshot exports (`store export
//!    --snapshot`) to the same bytes on every replica.
//! 2. A stamping writer of our own (Python on libnbd, as `nbdsh` runs it) proves each
//!    snapshot is the volume at one instant: it writes whole 4 KiB blocks, each filled
//!    with (block index, global sequence number), 16 writes in flight and never two on
//!    the same block at once, records when it issued each write and when it saw it
//!    complete, and runs `shorthorn snapshot create` itself, recording when the command
//!    started and when it had returned. For every snapshot (exported from every replica,
//!    all identical) and every block:
//!    - the block is zero or one whole stamp of a write to that block (never torn);
//!    - that write was issued, and seen completing, before the snapshot command returned;
//!    - it is no older than the newest write to that block that completed before the
//!      command started;
//!    - and one instant exists, inside the command's run, that lies after every stamped
//!      write was issued and before every write that replaced a stamped one completed.
//!
//!    The head after the writer stops holds every block's last write.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{MIB, Volume, assert_fio_verified, fio_verify_job, path_str, require, sha256};
use crate::ops::{Background, engine_layers, export_snapshot, on_engine_ok, snapshot_names};

/// Exports snapshot `name` from every replica of the stopped `volume`; asserts they are
/// byte-identical; returns replica 1's image (kept) and the common sha256.
fn export_everywhere(volume: &Volume, name: &str, dir: &Path) -> (std::path::PathBuf, String) {
    let hashes: Vec<(u16, std::path::PathBuf, String)> = std::thread::scope(|s| {
        let jobs: Vec<_> = (1..=volume.replicas)
            .map(|i| {
                s.spawn(move || {
                    let file = dir.join(format!("{name}-replica-{i}.raw"));
                    export_snapshot(&volume.replica_dir(i), name, &file);
                    let hash = sha256(&file);
                    (i, file, hash)
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let first = hashes[0].2.clone();
    let all: Vec<(u16, &str)> = hashes.iter().map(|(i, _, h)| (*i, h.as_str())).collect();
    assert!(
        hashes.iter().all(|(_, _, h)| *h == first),
        "snapshot {name} differs between replicas (replica, sha256): {all:?}"
    );
    for (_, file, _) in &hashes[1..] {
        std::fs::remove_file(file).unwrap();
    }
    (hashes[0].1.clone(), first)
}

#[test]
fn fio_verifies_while_snapshots_are_taken_and_replicas_hold_the_same_snapshots() {
    const PER_JOB: u64 = 24 * MIB;
    const JOBS: u32 = 2;
    const MAX_SNAPSHOTS: usize = 6;
    let fio = require("fio", "fio");
    let mut volume =
        crate::ops::start_volume("snapload", u64::from(JOBS) * PER_JOB, 3, &|_| vec![]);
    let scratch = volume.scratch();
    let job = fio_verify_job(&scratch, &volume.uri(), JOBS, PER_JOB);
    let mut writer = Background::spawn(
        &fio,
        &["--output-format=normal", path_str(&job)],
        &scratch,
        "fio",
    );

    // Snapshots every 0.3 s while fio runs.
    let mut taken = Vec::new();
    let mut during = 0;
    std::thread::sleep(Duration::from_millis(300));
    while taken.len() < MAX_SNAPSHOTS && writer.is_running() {
        let name = format!("load-{}", taken.len() + 1);
        let started = Instant::now();
        let printed = on_engine_ok(&volume, &["snapshot", "create", &name]);
        assert_eq!(printed.trim(), name);
        if writer.is_running() {
            during += 1;
        }
        eprintln!("{name} took {:?}", started.elapsed());
        taken.push(name);
        std::thread::sleep(Duration::from_millis(300));
    }
    let outcome = writer.wait(crate::common::CLIENT_TIMEOUT);
    eprintln!("fio ran {:?}", outcome.elapsed);
    let context = format!(
        "snapshots taken: {taken:?}, {during} while fio ran\nlog:\n{}",
        volume.log_tail(40)
    );
    assert_fio_verified(&outcome, u64::from(JOBS) * PER_JOB / 4096, &context);
    assert!(
        during >= 3,
        "only {during} snapshots were taken while fio ran; the test proves little: {context}"
    );
    volume.assert_healthy();
    let layers = engine_layers(&volume);
    assert_eq!(snapshot_names(&layers), taken, "snapshot ls: {layers:?}");
    let ls = volume.ls();
    for index in 1..=volume.replicas {
        let addr = volume.replica_addr(index);
        let row = ls
            .lines()
            .find(|l| l.starts_with(&addr))
            .unwrap_or_else(|| panic!("ls does not list {addr}:\n{ls}"));
        let chain: Vec<&str> = row.split_whitespace().skip(2).collect();
        let mut expected = vec!["volume-head"];
        expected.extend(taken.iter().rev().map(String::as_str));
        assert_eq!(chain, expected, "replica {index}'s chain in ls:\n{ls}");
    }

    volume.stop();
    volume.assert_replicas_identical(&[]);
    let images = crate::ops::image_dir();
    let mut distinct = BTreeSet::new();
    for name in &taken {
        let (image, hash) = export_everywhere(&volume, name, images.path());
        std::fs::remove_file(image).unwrap();
        distinct.insert(hash);
    }
    assert!(
        distinct.len() >= 2,
        "every snapshot holds the same content, so none caught fio writing: {taken:?}"
    );
}

/// The stamping writer: see the module documentation. Arguments: URI, shorthorn binary,
/// engine address, log path, blocks, queue depth, snapshots, and the least seconds and
/// writes issued before each snapshot (and after the last), so the snapshots differ
/// however fast the host runs.
const STAMP_WRITER: &str = r##"
import nbd, random, struct, subprocess, sys, time

uri, shorthorn, engine, log_path = sys.argv[1:5]
blocks, depth, snapshots = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
gap, between = float(sys.argv[8]), int(sys.argv[9])

BS = 4096
h = nbd.NBD()
h.connect_uri(uri)
assert h.get_size() >= blocks * BS, "volume smaller than the blocks to write"

issue, done, target = [], [], []
busy = set()
failures = []

def completion(seq, block):
    def cb(err):
        done[seq - 1] = time.monotonic_ns()
        if err.value != 0:
            failures.append((seq, block, err.value))
        busy.discard(block)
        return 1

    return cb

def drain_ready():
    # Handles every reply already received, so a write that completed before the
    # snapshot command returned is recorded as completed before its end time.
    while h.aio_in_flight() > 0 and h.poll(0) == 1:
        pass

snaps = []
running = None
start = time.monotonic()
next_snapshot = start + gap
last_snapshot_seq = 0
stop_at_seq = None
seq = 0
rng = random.Random(20261122)
while stop_at_seq is None or seq < stop_at_seq:
    if (
        running is None
        and len(snaps) < snapshots
        and time.monotonic() >= next_snapshot
        and seq - last_snapshot_seq >= between
    ):
        name = "stamp-%d" % (len(snaps) + 1)
        begin = time.monotonic_ns()
        proc = subprocess.Popen(
            [shorthorn, "--engine", engine, "snapshot", "create", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        running = (name, begin, proc)
    if running is not None and running[2].poll() is not None:
        drain_ready()
        end = time.monotonic_ns()
        name, begin, proc = running
        out, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit("snapshot create %s failed (%d): %s" % (name, proc.returncode, err.decode()))
        snaps.append((name, begin, end, out.decode().strip()))
        running = None
        next_snapshot = time.monotonic() + gap
        last_snapshot_seq = seq
        if len(snaps) == snapshots:
            stop_at_seq = seq + between
    if failures:
        sys.exit("write failed: %r" % (failures[:5],))
    while h.aio_in_flight() < depth:
        block = rng.randrange(blocks)
        if block in busy:
            continue
        seq += 1
        busy.add(block)
        issue.append(0)
        done.append(0)
        target.append(block)
        data = bytearray(struct.pack("<QQ", block, seq) * (BS // 16))
        issue[seq - 1] = time.monotonic_ns()
        h.aio_pwrite(nbd.Buffer.from_bytearray(data), block * BS, completion=completion(seq, block))
    h.poll(20)

while h.aio_in_flight() > 0:
    h.poll(1000)
if failures:
    sys.exit("write failed: %r" % (failures[:5],))
h.flush()
h.shutdown()

with open(log_path, "w") as log:
    for name, begin, end, printed in snaps:
        log.write("S %s %d %d %s\n" % (name, begin, end, printed))
    for i in range(seq):
        log.write("W %d %d %d %d\n" % (i + 1, target[i], issue[i], done[i]))
print("%d writes, %d snapshots in %.2f s" % (seq, len(snaps), time.monotonic() - start))
"##;

/// One snapshot the writer took: name, when the command started and when it had
/// returned (monotonic ns).
#[derive(Debug)]
struct Snap {
    name: String,
    start: u64,
    end: u64,
}

/// The writer's log: snapshots, and per write (index seq-1) its block, issue and
/// completion time.
struct WriterLog {
    snaps: Vec<Snap>,
    block: Vec<u64>,
    issued: Vec<u64>,
    done: Vec<u64>,
    /// Sequence numbers of the writes to each block, ascending.
    per_block: Vec<Vec<u64>>,
}

impl WriterLog {
    fn parse(text: &str, blocks: u64) -> WriterLog {
        let mut log = WriterLog {
            snaps: Vec::new(),
            block: Vec::new(),
            issued: Vec::new(),
            done: Vec::new(),
            per_block: vec![Vec::new(); blocks as usize],
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["S", name, start, end, printed] => {
                    assert_eq!(name, printed, "snapshot create printed another name");
                    log.snaps.push(Snap {
                        name: (*name).to_owned(),
                        start: start.parse().unwrap(),
                        end: end.parse().unwrap(),
                    });
                }
                ["W", seq, block, issued, done] => {
                    let seq: u64 = seq.parse().unwrap();
                    assert_eq!(seq as usize, log.block.len() + 1, "writer log out of order");
                    let block: u64 = block.parse().unwrap();
                    log.block.push(block);
                    log.issued.push(issued.parse().unwrap());
                    log.done.push(done.parse().unwrap());
                    log.per_block[block as usize].push(seq);
                }
                _ => panic!("unexpected writer log line {line:?}"),
            }
        }
        // The writer's own promises, which the checks below rely on.
        for (b, seqs) in log.per_block.iter().enumerate() {
            for pair in seqs.windows(2) {
                assert!(
                    log.done(pair[0]) <= log.issued(pair[1]),
                    "test bug: writes {pair:?} to block {b} overlapped in time"
                );
            }
        }
        assert!(
            log.done.iter().all(|&d| d > 0),
            "test bug: a write never completed"
        );
        log
    }

    fn issued(&self, seq: u64) -> u64 {
        self.issued[seq as usize - 1]
    }

    fn done(&self, seq: u64) -> u64 {
        self.done[seq as usize - 1]
    }

    /// The write to `block` after `seq` (after the block's initial zeros for seq 0).
    fn next_write(&self, block: u64, seq: u64) -> Option<u64> {
        let seqs = &self.per_block[block as usize];
        let at = seqs.partition_point(|&s| s <= seq);
        seqs.get(at).copied()
    }
}

/// The stamp a 4 KiB block holds: 0 for all zeros, else the sequence number of the
/// write; panics on anything that is not one whole stamp for `block`.
fn stamp_of(data: &[u8], block: u64, log: &WriterLog, what: &str) -> u64 {
    if data.iter().all(|&b| b == 0) {
        return 0;
    }
    let record = &data[..16];
    assert!(
        data.chunks(16).all(|r| r == record),
        "PRODUCT BUG: {what}: block {block} is torn (mixes several writes)"
    );
    let in_block = u64::from_le_bytes(record[..8].try_into().unwrap());
    let seq = u64::from_le_bytes(record[8..].try_into().unwrap());
    assert_eq!(
        in_block, block,
        "PRODUCT BUG: {what}: block {block} holds the data written to block {in_block}"
    );
    assert!(
        seq >= 1 && (seq as usize) <= log.block.len() && log.block[seq as usize - 1] == block,
        "PRODUCT BUG: {what}: block {block} holds stamp {seq}, which no write to it carried"
    );
    seq
}

/// Checks that `image` (the content of snapshot `snap`) is the volume at one instant of
/// the writer's run; returns how many blocks hold a write that was in flight while the
/// snapshot command ran.
fn check_snapshot(image: &Path, snap: &Snap, log: &WriterLog, blocks: u64) -> usize {
    let data = std::fs::read(image).unwrap();
    let what = format!("snapshot {}", snap.name);
    // The instant must lie after `latest_issue` and before `earliest_replaced`.
    let mut latest_issue = (0, 0, 0);
    let mut earliest_replaced = (u64::MAX, 0, 0);
    let mut in_window = 0;
    for block in 0..blocks {
        let at = (block * 4096) as usize;
        let stamp = stamp_of(&data[at..at + 4096], block, log, &what);
        if stamp > 0 {
            assert!(
                log.issued(stamp) < snap.end,
                "PRODUCT BUG: {what}: block {block} holds write {stamp}, issued {} µs after \
                 the snapshot command returned",
                (log.issued(stamp) - snap.end) / 1000
            );
            assert!(
                log.done(stamp) <= snap.end,
                "PRODUCT BUG: {what}: block {block} holds write {stamp}, which completed {} µs \
                 after the snapshot command returned",
                (log.done(stamp) - snap.end) / 1000
            );
            if log.issued(stamp) >= snap.start {
                in_window += 1;
            }
            if log.issued(stamp) > latest_issue.0 {
                latest_issue = (log.issued(stamp), block, stamp);
            }
        }
        // The newest write to this block that completed before the command started
        // must be in the snapshot (or a later one).
        let newest_before: u64 = log.per_block[block as usize]
            .iter()
            .copied()
            .filter(|&s| log.done(s) < snap.start)
            .max()
            .unwrap_or(0);
        assert!(
            stamp >= newest_before,
            "PRODUCT BUG: {what}: block {block} holds {} but write {newest_before} to it \
             completed {} µs before the snapshot command started",
            if stamp == 0 {
                "zeros".to_owned()
            } else {
                format!("write {stamp}")
            },
            (snap.start - log.done(newest_before)) / 1000
        );
        if let Some(next) = log.next_write(block, stamp)
            && log.done(next) < earliest_replaced.0
        {
            earliest_replaced = (log.done(next), block, next);
        }
    }
    let low = latest_issue.0.max(snap.start);
    let high = earliest_replaced.0.min(snap.end);
    assert!(
        low < high,
        "PRODUCT BUG: {what} is not the volume at one instant: block {} holds write {} \
         (issued at {} ns), block {} lost write {} that completed at {} ns; the command ran \
         from {} to {} ns",
        latest_issue.1,
        latest_issue.2,
        latest_issue.0,
        earliest_replaced.1,
        earliest_replaced.2,
        earliest_replaced.0,
        snap.start,
        snap.end
    );
    in_window
}

#[test]
fn each_snapshot_is_the_volume_at_one_instant_of_a_stamping_writer() {
    const BLOCKS: u64 = 2048;
    const SNAPSHOTS: usize = 5;
    /// Writes before each snapshot: about 40 % of the blocks change between two.
    const WRITES_BETWEEN: u64 = 1000;
    let python = crate::ops::python3_with_nbd();
    let mut volume = crate::ops::start_volume("stamps", BLOCKS * 4096, 3, &|_| vec![]);
    let scratch = volume.scratch();
    let script = scratch.join("stamp_writer.py");
    std::fs::write(&script, STAMP_WRITER).unwrap();
    let log_path = scratch.join("writer.log");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg(volume.uri())
        .arg(crate::common::BIN)
        .arg(volume.engine_addr())
        .arg(&log_path)
        .args([BLOCKS.to_string(), "16".into(), SNAPSHOTS.to_string()])
        .args(["0.5", &WRITES_BETWEEN.to_string()])
        .env_remove("RUST_LOG")
        .env_remove("SHORTHORN_ENGINE");
    let outcome = crate::common::run_command(command, Duration::from_secs(60));
    assert!(
        outcome.success(),
        "the stamping writer failed: {outcome:?}\nlog:\n{}",
        volume.log_tail(40)
    );
    eprintln!("writer: {}", outcome.stdout.trim());
    let log = WriterLog::parse(&std::fs::read_to_string(&log_path).unwrap(), BLOCKS);
    assert_eq!(log.snaps.len(), SNAPSHOTS);
    assert!(
        log.block.len() as u64 >= (SNAPSHOTS as u64 + 1) * WRITES_BETWEEN,
        "only {} writes",
        log.block.len()
    );
    volume.assert_healthy();

    volume.stop();
    volume.assert_replicas_identical(&[]);
    let images = crate::ops::image_dir();
    let mut hashes = BTreeSet::new();
    for snap in &log.snaps {
        let (image, hash) = export_everywhere(&volume, &snap.name, images.path());
        let in_window = check_snapshot(&image, snap, &log, BLOCKS);
        eprintln!(
            "{}: command ran {} ms; consistent; {in_window} blocks hold writes issued while it ran",
            snap.name,
            (snap.end - snap.start) / 1_000_000
        );
        std::fs::remove_file(image).unwrap();
        hashes.insert(hash);
    }
    assert_eq!(
        hashes.len(),
        SNAPSHOTS,
        "two snapshots hold the same content although the writer never paused"
    );

    // The head holds every block's last write.
    let head = std::fs::read(volume.export_replica(1)).unwrap();
    for block in 0..BLOCKS {
        let at = (block * 4096) as usize;
        let stamp = stamp_of(&head[at..at + 4096], block, &log, "the head");
        let last = log.per_block[block as usize].last().copied().unwrap_or(0);
        assert_eq!(
            stamp, last,
            "PRODUCT BUG: the head's block {block} holds write {stamp}, not its last write {last}"
        );
    }
}
