//! fio's NBD engine (libnbd, one connection per job) runs a verified random-write job
//! with 32 requests in flight per job and two jobs on two connections at once.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::time::Duration;

use common::{TestServer, require, run};

const MIB: u64 = 1 << 20;

#[test]
fn randwrite_with_crc32c_verification_passes() {
    let fio = require("fio", "fio");
    let server = TestServer::start(64 * MIB);
    // The nbd engine takes the export from `uri` and ignores the file name, which fio
    // still wants; each job gets its own 32 MiB region (offset_increment) so the two
    // jobs' verification does not see each other's writes.
    let job = format!(
        "[global]
ioengine=nbd
uri={uri}
filename=unused
rw=randwrite
bs=4k
iodepth=32
numjobs=2
size=32M
offset_increment=32M
verify=crc32c
do_verify=1
verify_fatal=1
verify_state_save=0
group_reporting=1

[verify-randwrite]
",
        uri = server.uri()
    );
    let job_file = server.scratch().join("randwrite.fio");
    std::fs::write(&job_file, job).unwrap();
    let outcome = run(
        &fio,
        &["--output-format=normal", job_file.to_str().unwrap()],
        Duration::from_secs(180),
    );
    let all = format!("{}{}", outcome.stdout, outcome.stderr);
    assert!(outcome.success(), "fio failed ({:?}):\n{all}", outcome.code);
    assert!(
        !all.contains("verify:"),
        "fio reported verification errors:\n{all}"
    );
    assert!(all.contains("err= 0"), "fio reported errors:\n{all}");
    // 2 jobs x 32 MiB of 4 KiB blocks written, then all read back for verification.
    assert!(
        all.contains("issued rwts: total=16384,16384,"),
        "fio did not write and verify every block:\n{all}"
    );
    // Every block of both regions was written (randwrite covers the whole size once).
    let status = server.store.block_status(0, 64 * MIB).unwrap();
    assert!(
        status
            .iter()
            .all(|e| e.kind == shorthorn_block::ExtentKind::Data),
        "fio should have written all 64 MiB: {status:?}"
    );
}
