//! The `shorthorn` binary.

fn main() {}
