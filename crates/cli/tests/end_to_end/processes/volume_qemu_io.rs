//! qemu-io through a `launch-simple` volume's NBD frontend: pattern writes verified by
//! reads at 4 KiB-aligned, 512-byte-aligned and unaligned offsets and lengths, write
//! zeroes with and without unmap, discard; with one replica and with three. Afterwards
//! every replica holds the same content.

use crate::common::{MIB, Volume, qemu_io};

/// `(command, expected outcome)` as qemu-io commands; every `read -P` verifies bytes.
/// Offsets are in plain bytes so the expectation is visible in the failure output.
fn script() -> Vec<String> {
    let m = MIB;
    let mut c: Vec<String> = Vec::new();
    let mut add = |s: String| c.push(s);

    // 4 KiB aligned.
    add("write -P 0x11 0 65536".into());
    add("read -P 0x11 0 65536".into());
    add(format!("write -P 0x12 {} 4096", m));
    add(format!("read -P 0x12 {} 4096", m));
    add(format!("read -P 0 {} 4096", m - 4096));
    add(format!("read -P 0 {} 4096", m + 4096));

    // 512-byte aligned: partial 4 KiB blocks at both ends, neighbours untouched.
    let o = 2 * m + 512;
    add(format!("write -P 0x33 {o} 1536"));
    add(format!("read -P 0x33 {o} 1536"));
    add(format!("read -P 0 {} 512", 2 * m));
    add(format!("read -P 0 {} 2048", o + 1536));
    let o = 2 * m + 7 * 512;
    add(format!("write -P 0x34 {o} 9216")); // 3.5 KiB .. 12.5 KiB: crosses three blocks
    add(format!("read -P 0x34 {o} 9216"));
    add(format!("read -P 0x33 {} 1536", 2 * m + 512)); // the earlier write survived
    add(format!("read -P 0 {} 1536", 2 * m + 2048));

    // Unaligned offsets and lengths.
    let o = 3 * m + 1;
    add(format!("write -P 0x44 {o} 4097"));
    add(format!("read -P 0x44 {o} 4097"));
    add(format!("read -P 0 {} 1", 3 * m));
    add(format!("read -P 0 {} 4094", o + 4097));
    // Two small writes into one block keep each other (read-modify-write).
    let o = 4 * m;
    add(format!("write -P 0x55 {o} 8192"));
    add(format!("write -P 0x66 {} 50", o + 100));
    add(format!("write -P 0x67 {} 3", o + 4095));
    add(format!("read -P 0x55 {o} 100"));
    add(format!("read -P 0x66 {} 50", o + 100));
    add(format!("read -P 0x55 {} 3945", o + 150));
    add(format!("read -P 0x67 {} 3", o + 4095));
    add(format!("read -P 0x55 {} 4094", o + 4098));
    // A large unaligned write over a MiB boundary.
    let o = 5 * m - 7;
    add(format!("write -P 0x77 {o} {}", m + 13));
    add(format!("read -P 0x77 {o} {}", m + 13));
    add(format!("read -P 0 {} 7", 5 * m - 14));
    add(format!("read -P 0 {} 4096", o + m + 13));
    // Unaligned reads of aligned data.
    add("read -P 0x11 3 65533".into());
    add("read -P 0x11 4095 2".into());

    // Write zeroes (NBD WRITE_ZEROES with NO_HOLE), aligned and unaligned.
    let o = 6 * m;
    add(format!("write -P 0x88 {o} 65536"));
    add(format!("write -z {} 8192", o + 4096));
    add(format!("read -P 0x88 {o} 4096"));
    add(format!("read -P 0 {} 8192", o + 4096));
    add(format!("read -P 0x88 {} {}", o + 12288, 65536 - 12288));
    add(format!("write -z {} 3000", o + 20000));
    add(format!("read -P 0x88 {} {}", o + 12288, 20000 - 12288));
    add(format!("read -P 0 {} 3000", o + 20000));
    add(format!("read -P 0x88 {} {}", o + 23000, 65536 - 23000));
    // Write zeroes that may unmap (-u).
    let o = 7 * m;
    add(format!("write -P 0x99 {o} 65536"));
    add(format!("write -z -u {o} 65536"));
    add(format!("read -P 0 {o} 65536"));
    add(format!("write -P 0x9a {} 8192", o + 65536));
    add(format!("write -z -u {} 1000", o + 65536 + 100));
    add(format!("read -P 0x9a {} 100", o + 65536));
    add(format!("read -P 0 {} 1000", o + 65536 + 100));
    add(format!("read -P 0x9a {} {}", o + 65536 + 1100, 8192 - 1100));

    // Discard (NBD TRIM): Shorthorn documents that trimmed bytes read back as zeros.
    let o = 8 * m;
    add(format!("write -P 0xbb {o} 262144"));
    add(format!("discard {o} 131072"));
    add(format!("read -P 0 {o} 131072"));
    add(format!("read -P 0xbb {} 131072", o + 131072));
    add(format!("discard {} 5000", o + 131072 + 300));
    add(format!("read -P 0xbb {} 300", o + 131072));
    add(format!("read -P 0 {} 5000", o + 131072 + 300));
    add(format!(
        "read -P 0xbb {} {}",
        o + 131072 + 5300,
        131072 - 5300
    ));

    // Flush, then the end of the volume.
    add("flush".into());
    c
}

/// Applies the writes, zeroes and discards of qemu-io `commands` to `model`.
fn apply(model: &mut [u8], commands: &[String]) {
    for command in commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        let (fill, rest) = match words.as_slice() {
            ["write", "-P", p, rest @ ..] => (
                u8::from_str_radix(p.trim_start_matches("0x"), 16).unwrap(),
                rest,
            ),
            ["write", "-z", "-u", rest @ ..] | ["write", "-z", rest @ ..] => (0, rest),
            ["discard", rest @ ..] => (0, rest),
            _ => continue,
        };
        let offset: usize = rest[0].parse().unwrap();
        let len: usize = rest[1].parse().unwrap();
        model[offset..offset + len].fill(fill);
    }
}

fn check(replicas: u16) {
    let mut volume = Volume::start("qio", 16 * MIB, replicas);
    let uri = volume.uri();
    let commands = script();
    let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
    let out = qemu_io(&uri, &refs);
    // Every command ran: one `wrote`/`read`/`discard` report per command (flush prints
    // nothing).
    let reports = out
        .lines()
        .filter(|l| l.starts_with("wrote ") || l.starts_with("read ") || l.starts_with("discard "))
        .count();
    assert_eq!(reports, commands.len() - 1, "qemu-io output:\n{out}");

    // A second connection sees the same content (nothing was only in a cache).
    let last_byte = vec![format!("write -P 0xcc {} 1", 16 * MIB - 1)];
    let again = qemu_io(
        &uri,
        &[
            "read -P 0x11 0 65536",
            // (the last 6 bytes of that write were overwritten at 6 MiB)
            &format!("read -P 0x77 {} {}", 5 * MIB - 7, MIB + 7),
            &format!("read -P 0x88 {} 4096", 6 * MIB),
            &format!("read -P 0 {} 65536", 7 * MIB),
            &format!("read -P 0 {} 131072", 8 * MIB),
            // The last byte of the volume.
            &last_byte[0],
            &format!("read -P 0xcc {} 1", 16 * MIB - 1),
        ],
    );
    assert!(!again.contains("Pattern verification failed"), "{again}");
    volume.assert_healthy();

    volume.stop();
    let replicas_hash = volume.assert_replicas_identical(&[]);

    // And that content is exactly what the commands wrote.
    let mut model = vec![0u8; (16 * MIB) as usize];
    apply(&mut model, &commands);
    apply(&mut model, &last_byte);
    let expected = volume.scratch().join("model.raw");
    std::fs::write(&expected, &model).unwrap();
    assert_eq!(
        replicas_hash,
        crate::common::sha256(&expected),
        "the replicas' content differs from what qemu-io wrote"
    );
}

#[test]
fn patterns_zeroes_and_discards_with_one_replica() {
    check(1);
}

#[test]
fn patterns_zeroes_and_discards_with_three_replicas() {
    check(3);
}
