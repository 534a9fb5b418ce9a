//! The chunk digest engine and replicas compare during rebuilds and reconciliation:
//! blake3 of the chunk's bytes. One definition, so both ends always agree.

/// The digest of `data`.
pub fn chunk_digest(data: &[u8]) -> Vec<u8> {
    blake3::hash(data).as_bytes().to_vec()
}

/// The digest of `len` zero bytes (a hole), computed without a buffer of that size.
pub fn zero_digest(len: u64) -> Vec<u8> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut hasher = blake3::Hasher::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64);
        #[allow(clippy::cast_possible_truncation, reason = "at most 4096")]
        hasher.update(&ZEROS[..n as usize]);
        left -= n;
    }
    hasher.finalize().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hole_digest_equals_the_digest_of_written_zeros() {
        for len in [0usize, 1, 4096, 4097, 256 << 10] {
            assert_eq!(zero_digest(len as u64), chunk_digest(&vec![0; len]));
        }
        assert_ne!(chunk_digest(b"a"), chunk_digest(b"b"));
    }
}
