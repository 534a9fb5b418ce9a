use crate::BlockError;

/// The unit in which Shorthorn stores allocate and track data. Requests of any size are
/// accepted; this is only the granularity of allocation and of read-modify-write.
pub const BLOCK_SIZE: u64 = 4096;

/// Rounds `value` down to a multiple of `unit` (a power of two).
pub fn align_down(value: u64, unit: u64) -> u64 {
    debug_assert!(unit.is_power_of_two());
    value & !(unit - 1)
}

/// Rounds `value` up to a multiple of `unit` (a power of two); saturates at the largest
/// multiple that fits in a `u64`.
pub fn align_up(value: u64, unit: u64) -> u64 {
    debug_assert!(unit.is_power_of_two());
    match value.checked_add(unit - 1) {
        Some(v) => v & !(unit - 1),
        None => align_down(u64::MAX, unit),
    }
}

/// Checks that `len` bytes at `offset` lie inside a device of `size` bytes.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<(), BlockError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_rounds_to_block_boundaries() {
        assert_eq!(align_down(4097, BLOCK_SIZE), 4096);
        assert_eq!(align_up(4097, BLOCK_SIZE), 8192);
        assert_eq!(align_up(8192, BLOCK_SIZE), 8192);
        assert_eq!(align_up(u64::MAX, BLOCK_SIZE), u64::MAX - 4095);
    }

    #[test]
    fn check_range_rejects_overflow_and_past_end() {
        assert!(check_range(0, 4096, 4096).is_ok());
        assert!(check_range(4096, 0, 4096).is_ok());
        assert!(check_range(1, 4096, 4096).is_err());
        assert!(check_range(u64::MAX, 2, u64::MAX).is_err());
    }
}
