//! nbdcopy (libnbd) copies a 64 MiB image with data and zero regions into the export
//! and back out; the copies are identical (sha256), and the zero regions of the sparse
//! source became holes in the volume.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::{TestServer, require, run_ok};
use rand::{RngCore, SeedableRng};
use shorthorn_block::ExtentKind;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;

/// Data regions (offset, len) of the source image; everything else is zeros. Includes
/// unaligned edges and a region of explicit (written, not sparse) zeros.
const DATA: &[(u64, u64)] = &[
    (0, 3 * MIB),
    (5 * MIB + 100, 7 * MIB),
    (20 * MIB, 4096),
    (20 * MIB + 12288, 512),
    (30 * MIB, 16 * MIB),
    (63 * MIB, MIB),
];

fn sha256(program: &Path, file: &Path) -> String {
    let out = run_ok(program, &[file.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn copy_in_and_out_preserves_every_byte() {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let sha256sum = require("sha256sum", "coreutils");
    let server = TestServer::start(SIZE);
    let source = server.scratch().join("source.img");
    let copy = server.scratch().join("copy.img");

    // A sparse source file: random data regions, holes between them, and one data
    // region that is explicitly written zeros.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut f = File::create(&source).unwrap();
    f.set_len(SIZE).unwrap();
    for (i, &(offset, len)) in DATA.iter().enumerate() {
        let mut buf = vec![0u8; len as usize];
        if i != 3 {
            rng.fill_bytes(&mut buf);
        }
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);

    let uri = server.uri();
    run_ok(&nbdcopy, &[source.to_str().unwrap(), &uri]);
    run_ok(&nbdcopy, &[&uri, copy.to_str().unwrap()]);

    let original = std::fs::read(&source).unwrap();
    let copied = std::fs::read(&copy).unwrap();
    assert_eq!(copied.len() as u64, SIZE);
    assert_eq!(sha256(&sha256sum, &source), sha256(&sha256sum, &copy));
    assert!(original == copied, "copies differ");
    // The volume itself holds the image.
    for &(offset, len) in DATA {
        assert!(
            server.read_store(offset, len as usize)
                == original[offset as usize..(offset + len) as usize],
            "volume differs at {offset}+{len}"
        );
    }
    // The big gaps of the sparse source are holes on the volume, not written zeros.
    for (offset, len) in [(12 * MIB + 4096, 8 * MIB - 8192), (47 * MIB, 16 * MIB)] {
        let status = server.store.block_status(offset, len).unwrap();
        assert!(
            status.iter().all(|e| e.kind == ExtentKind::Zero),
            "gap {offset}+{len} should be a hole: {status:?}"
        );
    }
}
