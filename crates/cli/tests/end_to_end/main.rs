//! Shorthorn's end-to-end tests: the real `shorthorn` binary driven by real clients
//! (qemu-io, nbdcopy, nbdinfo, fio, mkfs and mount, curl-like HTTP). One binary, so the
//! shared helpers compile once; the tests are grouped by what they need, each behaviour
//! one module named for it:
//!
//! - [`processes`]: plain processes on loopback (volumes, store commands, backups,
//!   managers on one host);
//! - [`namespaces`]: root, with hosts in network namespaces and real block devices;
//! - [`csi`]: root, the CSI driver over `shorthorn up` (csi-sanity, the kubelet's calls);
//! - [`web_ui`]: the web UI in Chromium (playwright-core scripts in `ui/e2e/`);
//! - `failpoints`: crash tests at fail points (only with `--features failpoints`).
//!
//! `cargo nextest run -p shorthorn --test end_to_end namespaces::` runs one group.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod backupstore;
mod blockdev;
mod common;
mod csi;
mod http;
mod netns;
mod ops;
mod upnode;

#[cfg(feature = "failpoints")]
mod failpoints;
mod namespaces;
mod processes;
mod web_ui;
