//! libFuzzer entry point; the target itself is `shorthorn_fuzz::nbd_transmission` (see src/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shorthorn_fuzz::nbd_transmission(data));
