//! nbdcopy (several connections, large requests, zero detection) copies a 256 MiB image
//! of random data with zero regions into a three-replica `launch-simple` volume and back
//! out: the copy equals the image, and every replica holds exactly the image.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::common::{MIB, Volume, path_str, pattern, qemu_io, require, run, sha256};

const SIZE: u64 = 256 * MIB;

/// Writes the test image: per MiB, random data, a hole, written zeros, or half data half
/// zeros, in a fixed rotation, with a few unaligned data islands in the holes.
fn make_image(path: &Path) {
    let mut file = File::create(path).unwrap();
    file.set_len(SIZE).unwrap();
    let chunk = MIB as usize;
    for i in 0..SIZE / MIB {
        let offset = i * MIB;
        let data = match i % 8 {
            // Holes (never written).
            2 | 6 => {
                if i % 16 == 6 {
                    // An odd-sized island of data in the middle of the hole.
                    file.seek(SeekFrom::Start(offset + 12_345)).unwrap();
                    file.write_all(&pattern(i, 777)).unwrap();
                }
                continue;
            }
            // Written zeros.
            4 => vec![0; chunk],
            // Half data, half zeros, split off 4 KiB alignment.
            5 => {
                let mut d = pattern(i, chunk);
                d[chunk / 2 + 1000..].fill(0);
                d
            }
            _ => pattern(i, chunk),
        };
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&data).unwrap();
    }
    file.sync_all().unwrap();
}

#[test]
fn image_round_trips_through_a_three_replica_volume() {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let mut volume = Volume::start("copy", SIZE, 3);
    let uri = volume.uri();
    let scratch = volume.scratch();
    let image = scratch.join("image.raw");
    let out = scratch.join("out.raw");
    make_image(&image);
    let image_hash = sha256(&image);

    // Something already on the volume where the image has a hole, to see that nbdcopy
    // zeroes it (holes in the source are written as zeroes/trims, not skipped).
    qemu_io(&uri, &[&format!("write -P 0xee {} {}", 2 * MIB, MIB)]);

    let copy_in = run(
        &nbdcopy,
        &["--progress=0", path_str(&image), &uri],
        crate::common::CLIENT_TIMEOUT,
    );
    assert!(
        copy_in.success(),
        "nbdcopy IMAGE {uri} failed ({:?}):\n{}\nlog:\n{}",
        copy_in.code,
        copy_in.all(),
        volume.log_tail(40)
    );
    let copy_out = run(
        &nbdcopy,
        &["--progress=0", &uri, path_str(&out)],
        crate::common::CLIENT_TIMEOUT,
    );
    assert!(
        copy_out.success(),
        "nbdcopy {uri} OUT failed ({:?}):\n{}\nlog:\n{}",
        copy_out.code,
        copy_out.all(),
        volume.log_tail(40)
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), SIZE);
    assert_eq!(
        sha256(&out),
        image_hash,
        "what nbdcopy read back differs from the image it wrote"
    );
    std::fs::remove_file(&out).unwrap();
    volume.assert_healthy();

    volume.stop();
    let replicas_hash = volume.assert_replicas_identical(&[]);
    assert_eq!(
        replicas_hash, image_hash,
        "the replicas' content differs from the image"
    );
}
