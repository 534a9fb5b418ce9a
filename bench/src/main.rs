//! Store benchmarks.

fn main() {}
