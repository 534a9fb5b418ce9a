//! A volume that cannot be placed is refused at once (within 2 s) with the scheduler's
//! reason and what would change it, instead of being accepted and waiting in silence:
//! too many replicas for one node under hard anti-affinity, a size no disk can hold,
//! and a disk selector no disk matches. A refused volume is not created; once the
//! setting named in the refusal is changed, the same create succeeds.

use std::time::{Duration, Instant};

use crate::upnode::Node;

/// Longest a refusal may take (the bound for "at once").
const AT_ONCE: Duration = Duration::from_secs(2);

/// `volume create ARGS` must fail within [`AT_ONCE`], its error mentioning each of
/// `mentions`.
fn refused(node: &Node, args: &[&str], mentions: &[&str]) {
    let started = Instant::now();
    let outcome = node.cli(&[&["volume", "create"], args].concat());
    let took = started.elapsed();
    assert!(!outcome.success(), "{args:?} was accepted: {outcome:?}");
    assert!(took < AT_ONCE, "{args:?} took {took:?} to be refused");
    for mention in mentions {
        assert!(
            outcome.stderr.contains(mention),
            "{args:?}: the refusal does not mention {mention:?}: {}",
            outcome.stderr
        );
    }
}

#[test]
fn an_unplaceable_volume_is_refused_at_once_with_the_reason_and_the_remedy() {
    let node = Node::start();
    node.cli_ok(&["setting", "set", "replica_soft_anti_affinity", "false"]);

    refused(
        &node,
        &["two", "--size", "32M", "--replicas", "2"],
        &[
            "cannot schedule replicas of volume two: placed 1 of 2",
            "hard node anti-affinity",
            "replica_soft_anti_affinity true (now false)",
        ],
    );
    refused(
        &node,
        &["huge", "--size", "900T", "--replicas", "1"],
        &[
            "insufficient storage (needs 900 TiB",
            "minimal_available_percentage (now 0)",
        ],
    );
    refused(
        &node,
        &[
            "picky",
            "--size",
            "32M",
            "--replicas",
            "1",
            "--disk-selector",
            "nvme",
        ],
        &["missing disk tags [nvme]", "--tag"],
    );
    let listed = node.cli_ok(&["volume", "ls"]);
    for name in ["two", "huge", "picky"] {
        assert!(
            !listed.split_whitespace().any(|w| w == name),
            "refused volume {name} exists:\n{listed}"
        );
    }

    node.cli_ok(&["setting", "set", "replica_soft_anti_affinity", "true"]);
    let uri = node.create_attached("two", "32M", 2);
    assert!(uri.starts_with("nbd://"), "{uri}");
}
