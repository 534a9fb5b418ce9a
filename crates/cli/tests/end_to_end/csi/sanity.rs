//! csi-sanity, the CSI conformance suite, against `shorthorn csi --mode all` over a real
//! `shorthorn up`, with real mounts under its mount and staging directories: every spec
//! it runs passes, and nothing is left behind (mounts, loop devices, nbdfuse processes,
//! volumes in the manager).

use std::time::Duration;

use super::CsiDriver;
use crate::common::{path_str, require, run_command};
use crate::upnode::Node;

#[test]
fn csi_sanity_passes_with_nothing_left_behind() {
    let sanity = require("csi-sanity", "csi-sanity (scripts/setup.sh installs it)");
    let node = Node::start();
    // One node: one replica each keeps the suite quick.
    node.cli_ok(&["setting", "set", "default_replica_count", "1"]);
    let driver = CsiDriver::start(&node, &node.dir.path().join("csi"));
    let root = driver.root();
    let mut command = std::process::Command::new(sanity);
    command.args([
        &format!("-csi.endpoint=unix://{}", path_str(&driver.socket())),
        &format!("-csi.mountdir={}", path_str(&root.join("mount"))),
        &format!("-csi.stagingdir={}", path_str(&root.join("staging"))),
        "-csi.testvolumesize=33554432",
        "-csi.testvolumeexpandsize=67108864",
        "-ginkgo.no-color",
        "-ginkgo.timeout=10m",
    ]);
    let outcome = run_command(command, Duration::from_secs(660));
    let summary = outcome
        .stdout
        .lines()
        .find(|l| l.contains("Passed |"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        outcome.success() && summary.contains("| 0 Failed |"),
        "csi-sanity: {summary}\n{}\n--- driver:\n{}",
        crate::common::tail_lines(&outcome.stdout, 120),
        crate::common::tail_lines(&driver.log(), 60)
    );
    eprintln!("csi-sanity: {summary}");
    let passed: usize = summary
        .split_whitespace()
        .zip(summary.split_whitespace().skip(1))
        .find(|(_, word)| *word == "Passed")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 70, "only {passed} specs passed: {summary}");
    driver.assert_nothing_left(&node);
}
