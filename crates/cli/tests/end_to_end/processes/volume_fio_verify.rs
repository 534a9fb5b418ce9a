//! fio's NBD engine runs a verified random-write job on a three-replica `launch-simple`
//! volume: two jobs (one connection each), 32 requests in flight per job, disjoint
//! regions, crc32c verification of every block; then the replicas are identical.

use crate::common::{
    MIB, Volume, assert_fio_verified, fio, fio_verify_job, path_str, shorthorn_ok,
};

#[test]
fn random_writes_verify_and_replicas_agree() {
    const PER_JOB: u64 = 64 * MIB;
    const JOBS: u32 = 2;
    let mut volume = Volume::start("fio", u64::from(JOBS) * PER_JOB, 3);
    let job = fio_verify_job(&volume.scratch(), &volume.uri(), JOBS, PER_JOB);
    let outcome = fio(&job);
    assert_fio_verified(
        &outcome,
        u64::from(JOBS) * PER_JOB / 4096,
        &volume.log_tail(40),
    );
    // No replica was dropped along the way.
    volume.assert_healthy();

    volume.stop();
    volume.assert_replicas_identical(&[]);
    // randwrite covers each job's region exactly once: every block of the volume is
    // data on every replica.
    for index in 1..=volume.replicas {
        let dir = volume.replica_dir(index);
        let map = shorthorn_ok(&["store", "map", path_str(&dir)]);
        let rows: Vec<Vec<&str>> = map
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [vec!["0", &volume.size.to_string(), "data"]],
            "replica {index} should be all data:\n{map}"
        );
    }
}
