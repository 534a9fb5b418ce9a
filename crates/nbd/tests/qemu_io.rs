//! qemu-io, QEMU's NBD client, writes and reads patterns at aligned, 512-aligned and
//! unaligned offsets, zeroes and discards ranges, and reads zeros back. What it wrote is
//! also checked directly in the store behind the export.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use common::{TestServer, qemu_io};
use shorthorn_block::ExtentKind;

const MIB: u64 = 1 << 20;

#[test]
fn patterns_round_trip_at_aligned_sector_and_unaligned_offsets() {
    let server = TestServer::start(64 * MIB);
    let out = qemu_io(
        &server.uri(),
        &[
            // 4 KiB-aligned, 512-aligned and unaligned writes, each read back.
            "write -P 0xab 0 64k",
            "read -P 0xab 0 64k",
            "write -P 0xcd 512 1536",
            "read -P 0xcd 512 1536",
            "write -P 0x11 4097 333",
            "read -P 0x11 4097 333",
            "write -P 0x22 1048575 3",
            "read -P 0x22 1048575 3",
            // Neighbours of the partial writes are untouched.
            "read -P 0xab 0 512",
            "read -P 0xab 2048 2049",
            "read -P 0xab 4430 61106",
            "read -P 0 1048572 3",
            // A large write (bigger than one request of some clients) at the very end.
            "write -P 0x5a 60M 4M",
            "read -P 0x5a 60M 4M",
            "flush",
        ],
    );
    assert!(out.contains("wrote 333/333 bytes at offset 4097"), "{out}");
    // What qemu-io read back is really on the volume.
    assert!(server.read_store(0, 512).iter().all(|&b| b == 0xab));
    assert!(server.read_store(512, 1536).iter().all(|&b| b == 0xcd));
    assert!(server.read_store(4097, 333).iter().all(|&b| b == 0x11));
    assert_eq!(server.read_store(1048574, 5), vec![0, 0x22, 0x22, 0x22, 0]);
    assert!(
        server
            .read_store(60 * MIB, 4 << 20)
            .iter()
            .all(|&b| b == 0x5a)
    );
}

#[test]
fn write_zeroes_and_discard_read_back_as_zeros() {
    let server = TestServer::start(16 * MIB);
    qemu_io(
        &server.uri(),
        &[
            "write -P 0xab 0 4M",
            // Write-zeroes that may unmap (-u), aligned and unaligned.
            "write -z -u 0 256k",
            "read -P 0 0 256k",
            "write -z -u 300000 5000",
            "read -P 0 300000 5000",
            "read -P 0xab 256k 37856",
            "read -P 0xab 305000 5000",
            // Discard.
            "discard 1M 1M",
            "read -P 0 1M 1M",
            "read -P 0xab 2M 2M",
            // Write-zeroes without -u: qemu sends NBD_CMD_FLAG_NO_HOLE.
            "write -z 3M 64k",
            "read -P 0 3M 64k",
            "read -P 0xab 3136k 64k",
            "flush",
        ],
    );
    assert!(server.read_store(0, 256 << 10).iter().all(|&b| b == 0));
    assert!(server.read_store(MIB, MIB as usize).iter().all(|&b| b == 0));
    assert!(
        server
            .read_store(2 * MIB, MIB as usize)
            .iter()
            .all(|&b| b == 0xab)
    );
    // Discard and unmapping write-zeroes left holes; NO_HOLE zeroes stayed allocated.
    for (offset, len) in [(0, 256 << 10), (MIB, MIB)] {
        let status = server.store.block_status(offset, len).unwrap();
        assert!(
            status.iter().all(|e| e.kind == ExtentKind::Zero),
            "range {offset}+{len} should be unallocated: {status:?}"
        );
    }
    let status = server.store.block_status(3 * MIB, 64 << 10).unwrap();
    assert!(
        status.iter().all(|e| e.kind == ExtentKind::Data),
        "NO_HOLE zeroes must stay allocated: {status:?}"
    );
}

#[test]
fn the_empty_export_name_selects_the_default_export() {
    let server = TestServer::start(4 * MIB);
    qemu_io(&server.uri(), &["write -P 0x77 8192 4096"]);
    let default_uri = format!("nbd://127.0.0.1:{}", server.port());
    qemu_io(&default_uri, &["read -P 0x77 8192 4096"]);
}

#[test]
fn the_read_only_export_refuses_writes() {
    let server = TestServer::start(4 * MIB);
    let qemu_io = common::require("qemu-io", "qemu-utils");
    let uri = server.uri_of(common::RO_EXPORT);
    let out = common::run_ok(
        &qemu_io,
        &["-f", "raw", "-r", &uri, "-c", "read -P 0 0 64k"],
    );
    assert!(out.contains("read 65536/65536"), "{out}");
    // Opened writable, qemu refuses because the server advertised NBD_FLAG_READ_ONLY.
    // (The server's own EPERM for writes is covered by nbdsh.rs, which bypasses that.)
    let outcome = common::run(
        &qemu_io,
        &["-f", "raw", &uri, "-c", "write -P 1 0 4k"],
        common::CLIENT_TIMEOUT,
    );
    let all = format!("{}{}", outcome.stdout, outcome.stderr);
    assert!(
        !outcome.success() && all.contains("Permission denied"),
        "opening the read-only export for writing must fail:\n{all}"
    );
}
