//! A replica process killed (`kill -9`) while fio writes and verifies through a
//! three-replica `launch-simple` volume: fio finishes with every block verified and no
//! error, the engine shows that replica ERR with its error and the others RW, the volume
//! is degraded, and the two survivors hold identical content after the volume stops.

use std::time::{Duration, Instant};

use crate::common::{MIB, Volume, assert_fio_verified, fio, fio_verify_job, signal};

#[test]
fn fio_survives_a_killed_replica_and_the_survivors_agree() {
    const PER_JOB: u64 = 48 * MIB;
    const JOBS: u32 = 2;
    const VICTIM: u16 = 2;
    let mut volume = Volume::start("fail", u64::from(JOBS) * PER_JOB, 3);
    volume.assert_healthy();
    let victim = volume
        .replica_pid(VICTIM)
        .unwrap_or_else(|| panic!("no process serves {}", volume.replica_dir(VICTIM).display()));

    let job = fio_verify_job(&volume.scratch(), &volume.uri(), JOBS, PER_JOB);
    let started = Instant::now();
    let fio_run = std::thread::spawn(move || fio(&job));

    // Let fio get going, then kill the replica in the middle of the write phase.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !fio_run.is_finished(),
        "fio finished within a second, before the replica could be killed; make the job larger"
    );
    signal(victim, "KILL");
    let killed_at = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{victim}/cmdline")).exists()
        && std::fs::read_to_string(format!("/proc/{victim}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(Instant::now() < deadline, "replica {victim} did not die");
        std::thread::sleep(Duration::from_millis(10));
    }

    let outcome = fio_run.join().unwrap();
    let context = format!(
        "replica {VICTIM} killed {killed_at:?} after fio started; fio ran {:?}\nlog:\n{}",
        outcome.elapsed,
        volume.log_tail(60)
    );
    assert_fio_verified(&outcome, u64::from(JOBS) * PER_JOB / 4096, &context);
    assert!(
        outcome.elapsed > killed_at,
        "fio finished before the kill; the test proves nothing:\n{context}"
    );

    // ls: the killed replica is ERR with an error line, the others RW without one.
    let ls = volume.ls();
    let rows = volume.modes();
    assert_eq!(rows.len(), 3, "ls:\n{ls}");
    for index in 1..=3 {
        let addr = volume.replica_addr(index);
        let (_, mode, error) = rows
            .iter()
            .find(|r| r.0 == addr)
            .unwrap_or_else(|| panic!("ls does not list {addr}:\n{ls}"));
        if index == VICTIM {
            assert_eq!(mode, "ERR", "the killed replica should be ERR:\n{ls}");
            assert!(
                error.as_deref().is_some_and(|e| !e.is_empty()),
                "the killed replica should show an error line:\n{ls}"
            );
        } else {
            assert_eq!(mode, "RW", "replica {index} should still be RW:\n{ls}");
            assert!(error.is_none(), "replica {index} has an error:\n{ls}");
        }
    }
    let info = volume.info();
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["state:", "degraded"]),
        "info should say degraded:\n{info}"
    );
    assert!(
        info.contains(&format!("{} ERR", volume.replica_addr(VICTIM))),
        "info should show the killed replica as ERR:\n{info}"
    );

    eprintln!("after the kill:\n{ls}\n{info}");

    // The volume still serves writes and reads with two replicas.
    crate::common::qemu_io(
        &volume.uri(),
        &["write -P 0x5a 4096 8192", "read -P 0x5a 4096 8192"],
    );

    volume.stop();
    volume.assert_replicas_identical(&[1, 3]);
}
