//! The same server on a unix socket (`nbd+unix://`): qemu-io writes and verifies data,
//! nbdinfo sees the export, and nbdcopy streams an image through it.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use common::{Listen, TestServer, qemu_io, require, run_ok};
use shorthorn_nbd::ServerConfig;

const MIB: u64 = 1 << 20;

#[test]
fn clients_work_over_a_unix_socket() {
    let server = TestServer::start_with(8 * MIB, Listen::Unix, ServerConfig::default());
    let uri = server.uri();
    assert!(uri.starts_with("nbd+unix:///vol?socket="), "{uri}");
    qemu_io(
        &uri,
        &[
            "write -P 0x3c 0 1M",
            "write -P 0x3d 1000 100",
            "read -P 0x3c 0 1000",
            "read -P 0x3d 1000 100",
            "flush",
        ],
    );
    assert!(server.read_store(1000, 100).iter().all(|&b| b == 0x3d));

    let size = run_ok(&require("nbdinfo", "libnbd-bin"), &["--size", &uri]);
    assert_eq!(size.trim(), (8 * MIB).to_string());

    let out = server.scratch().join("out.img");
    run_ok(
        &require("nbdcopy", "libnbd-bin"),
        &[&uri, out.to_str().unwrap()],
    );
    let image = std::fs::read(&out).unwrap();
    assert_eq!(image.len() as u64, 8 * MIB);
    assert_eq!(image, server.read_store(0, (8 * MIB) as usize));
}
