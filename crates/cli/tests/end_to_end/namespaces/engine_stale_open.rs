//! An engine never opens on replicas that may miss acknowledged writes. Three replicas,
//! each on its own "host" (network namespace), the engine on another, qemu-io as the
//! client; every write is one 4 KiB block at offset 0 plus a flush, acknowledged.
//!
//! - The sequence that once rolled back silently: write A1, `kill -9` r0; write B2,
//!   `kill -9` r1 (only r2 records that); write C3; `kill -9` the engine and r2; restart
//!   r0 and r1 and start the engine without `--salvage`. It must refuse, naming r2's
//!   address and pointing to `--salvage`. With r2 back it opens, serves C3 from r2, and
//!   the two stale replicas rebuild to C3.
//! - Random sequences of writes, replica kills and restarts, and engine restarts
//!   (bounded: 12 cases of 8 to 20 steps; STALE_OPEN_CASES sets the count): every engine start either refuses or serves
//!   the last acknowledged value (or a value whose write failed after it).

use std::time::Duration;

use crate::common::MIB;
use crate::netns::{Cluster, replica_addr, uri};
use proptest::prelude::*;

const SIZE: u64 = 16 * MIB;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const MODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `value` over block 0 and flushes; whether both were acknowledged.
fn write_block(cluster: &Cluster, value: u8) -> bool {
    let write = format!("write -P {value} 0 4k");
    let outcome = cluster.client(
        "qemu-io",
        &["-f", "raw", &uri(), "-c", &write, "-c", "flush"],
        CLIENT_TIMEOUT,
    );
    let all = outcome.all();
    outcome.success() && !all.contains("failed")
}

/// Whether every byte of block 0 reads as `expected` (qemu-io checks the pattern).
fn block_is(cluster: &Cluster, expected: u8) -> bool {
    let read = format!("read -P {expected} 0 4k");
    let outcome = cluster.client(
        "qemu-io",
        &["-f", "raw", &uri(), "-c", &read],
        CLIENT_TIMEOUT,
    );
    let all = outcome.all();
    outcome.success() && !all.contains("failed") && !all.contains("Pattern verification")
}

#[test]
fn an_engine_refuses_to_open_without_the_replica_holding_the_newest_writes() {
    let mut cluster = Cluster::new(3, SIZE);
    cluster.start_replicas();
    cluster.start_engine(&[]);
    assert!(write_block(&cluster, 0xa1), "A1\n{}", cluster.context());
    cluster.kill_replica(0);
    cluster.wait_mode(0, "ERR", MODE_TIMEOUT);
    assert!(write_block(&cluster, 0xb2), "B2\n{}", cluster.context());
    cluster.kill_replica(1);
    cluster.wait_mode(1, "ERR", MODE_TIMEOUT);
    assert!(write_block(&cluster, 0xc3), "C3\n{}", cluster.context());
    cluster.kill_engine();
    cluster.kill_replica(2);

    cluster.start_replica(0);
    cluster.start_replica(1);
    let refused = cluster
        .try_start_engine(&[])
        .expect_err("the engine opened without r2, which alone holds C3");
    for needed in [
        replica_addr(2).as_str(),
        "did not answer",
        "--salvage",
        "loses",
    ] {
        assert!(
            refused.contains(needed),
            "the refusal does not say {needed:?}:\n{refused}"
        );
    }

    cluster.start_replica(2);
    cluster.start_engine(&[]);
    assert_eq!(cluster.mode(2).0, "RW", "{}", cluster.ls_text());
    for stale in [0, 1] {
        let (mode, error) = cluster.mode(stale);
        assert_eq!(mode, "ERR", "{}", cluster.ls_text());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("stale")),
            "replica {stale}: {error:?}"
        );
    }
    assert!(
        block_is(&cluster, 0xc3),
        "C3 is not served\n{}",
        cluster.context()
    );
    for stale in [0, 1] {
        cluster.replica_add(stale, Duration::from_secs(60));
    }
    cluster.assert_all_rw(&[0, 1, 2]);
    for _ in 0..3 {
        assert!(block_is(&cluster, 0xc3), "C3 after the rebuilds");
    }
    cluster.stop_engine();
    for i in 0..3 {
        cluster.stop_replica(i);
    }
    cluster.assert_replicas_identical(&[0, 1, 2]);
}

/// One step of a random sequence.
#[derive(Debug, Clone)]
enum Step {
    Write,
    KillReplica(usize),
    RestartReplica(usize),
    RestartEngine,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Write),
        2 => (0..3usize).prop_map(Step::KillReplica),
        2 => (0..3usize).prop_map(Step::RestartReplica),
        2 => Just(Step::RestartEngine),
    ]
}

/// What block 0 may hold: the last acknowledged value, or one written after it whose
/// write failed (it may have reached some replicas).
struct Expected {
    acknowledged: u8,
    since: Vec<u8>,
}

impl Expected {
    fn allows(&self) -> Vec<u8> {
        std::iter::once(self.acknowledged)
            .chain(self.since.iter().copied())
            .collect()
    }
}

/// Runs `steps` against real processes; panics with the logs if an engine serves a
/// value older than the last acknowledged one.
fn run_sequence(steps: &[Step]) {
    let mut cluster = Cluster::new(3, SIZE);
    cluster.start_replicas();
    cluster.start_engine(&[]);
    let mut value = 1u8;
    assert!(write_block(&cluster, value));
    let mut expected = Expected {
        acknowledged: value,
        since: Vec::new(),
    };
    let (mut opens, mut refusals) = (0, 0);
    let mut engine_up = true;
    for step in steps {
        eprintln!("step {step:?}");
        match step {
            Step::Write if engine_up => {
                value += 1;
                if write_block(&cluster, value) {
                    expected = Expected {
                        acknowledged: value,
                        since: Vec::new(),
                    };
                } else {
                    expected.since.push(value);
                }
            }
            Step::Write => {}
            Step::KillReplica(i) if cluster.replica_running(*i) => cluster.kill_replica(*i),
            Step::RestartReplica(i) if !cluster.replica_running(*i) => {
                cluster.start_replica(*i);
            }
            Step::KillReplica(_) | Step::RestartReplica(_) => {}
            Step::RestartEngine => {
                if engine_up {
                    cluster.kill_engine();
                    engine_up = false;
                }
                match cluster.try_start_engine(&[]) {
                    Ok(()) => {
                        engine_up = true;
                        opens += 1;
                        let allowed = expected.allows();
                        let served = allowed.iter().find(|&&v| block_is(&cluster, v));
                        assert!(
                            served.is_some(),
                            "after {steps:?}, the engine opened and block 0 holds none of \
                             {allowed:?}\n{}\n{}",
                            cluster.ls_text(),
                            cluster.context()
                        );
                    }
                    Err(why) => {
                        refusals += 1;
                        assert!(
                            why.contains("--salvage")
                                || why.contains("no replica could be reached"),
                            "the engine failed to start for another reason:\n{why}"
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "{} steps: {opens} opens, {refusals} refusals, last acknowledged write {}",
        steps.len(),
        expected.acknowledged
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("STALE_OPEN_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(12),
        max_shrink_iters: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_kills_and_restarts_never_open_on_stale_replicas(
        steps in proptest::collection::vec(step(), 8..20)
    ) {
        run_sequence(&steps);
    }
}
