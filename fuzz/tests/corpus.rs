//! Replays the checked-in corpus (seeds and regression inputs) through every target
//! without libFuzzer, so `cargo test` in `fuzz/` catches regressions on any toolchain;
//! and checks that the NBD harness really reaches what it means to fuzz.

use std::path::Path;

use shorthorn_fuzz::{TARGETS, abort_on_panic, check_setups};

#[test]
fn corpus_replays_cleanly() {
    // A panic inside a server task must fail the run, not just be logged by tokio.
    abort_on_panic();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        for file in files {
            eprintln!("{name}: {}", file.display());
            target(&std::fs::read(&file).expect("read corpus file"));
        }
    }
}

#[test]
fn every_setup_reaches_the_transmission_phase() {
    abort_on_panic();
    check_setups();
}
