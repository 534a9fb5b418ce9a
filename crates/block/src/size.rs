//! Byte sizes for people: parsing `10G`, `512M`, `64KiB`, `4096` (the command line, the
//! benchmarks) and printing them (`1.5 GiB`). One copy, used by every crate that shows
//! a size.

/// Binary units, smallest first: the letter and its power of 1024.
const UNITS: [(char, u32); 6] = [('K', 1), ('M', 2), ('G', 3), ('T', 4), ('P', 5), ('E', 6)];

/// Parses a byte size: a whole number, optionally followed by a binary unit (`K`, `M`,
/// `G`, `T`, `P`, `E`, each a power of 1024) written as `G`, `Gi`, `GiB` or `GB`, or by
/// `B` alone for bytes. Case does not matter. Overflow and anything else is rejected
/// with a message that says what is wrong.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the size is empty; give a number of bytes or use a unit, e.g. 10G".into());
    }
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} does not start with a whole number of bytes or units (e.g. 4096, 512M, 10G)"
        ));
    }
    let multiplier = unit_multiplier(suffix).ok_or_else(|| {
        if suffix.starts_with(['.', ',']) {
            format!("{text:?}: only whole numbers are accepted; use a smaller unit (e.g. 1536M)")
        } else {
            format!(
                "{text:?} has an unknown unit {suffix:?}; use K, M, G, T, P or E \
                 (powers of 1024, optionally written KiB/KB) or a plain number of bytes"
            )
        }
    })?;
    let too_large = || format!("{text:?} is too large: sizes must be below 16 EiB");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(multiplier).ok_or_else(too_large)
}

/// The number of bytes a unit suffix stands for, or `None` if it is not a known unit.
fn unit_multiplier(suffix: &str) -> Option<u64> {
    let upper = suffix.to_ascii_uppercase();
    if upper.is_empty() || upper == "B" {
        return Some(1);
    }
    let mut chars = upper.chars();
    let letter = chars.next()?;
    let rest = chars.as_str();
    if !matches!(rest, "" | "I" | "IB" | "B") {
        return None;
    }
    UNITS
        .iter()
        .find(|(unit, _)| *unit == letter)
        .map(|&(_, power)| 1u64 << (10 * power))
}

/// Formats a byte count for people: `4096` → `4 KiB`, `1610612736` → `1.5 GiB`, with at
/// most one decimal (rounded down), and plain bytes below 1 KiB.
/// Sums of sizes above 16 EiB (`u128`) are shown in EiB.
pub fn format_size(bytes: impl Into<u128>) -> String {
    let bytes: u128 = bytes.into();
    let Some(&(letter, power)) = UNITS
        .iter()
        .rev()
        .find(|&&(_, power)| bytes >= 1u128 << (10 * power))
    else {
        return format!("{bytes} B");
    };
    let unit = 1u128 << (10 * power);
    // The remainder is below 2^60, so multiplying it by ten cannot overflow.
    let (whole, fraction) = (bytes / unit, bytes % unit * 10 / unit);
    if fraction == 0 {
        format!("{whole} {letter}iB")
    } else {
        format!("{whole}.{fraction} {letter}iB")
    }
}

/// Formats a byte count for people with the exact number in parentheses when it is not
/// already shown exactly: `1 MiB (1048576 bytes)`.
pub fn format_size_exact(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{} ({bytes} bytes)", format_size(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size(" 512 "), Ok(512));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn units_are_binary_and_case_insensitive() {
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("2P"), Ok(2 << 50));
        assert_eq!(parse_size("15E"), Ok(15 << 60));
        for spelling in [
            "10GiB", "10gib", "10Gi", "10gi", "10GB", "10gb", "10G", "10g",
        ] {
            assert_eq!(parse_size(spelling), Ok(10 << 30), "{spelling}");
        }
    }

    #[test]
    fn overflow_is_rejected() {
        let err = parse_size("16E").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_size("18446744073709551616").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_size("99999999999999999999999999G").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_size("17179869184G").unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn junk_is_rejected_with_a_reason() {
        let err = parse_size("12Q").unwrap_err();
        assert!(err.contains("unknown unit \"Q\""), "{err}");
        let err = parse_size("").unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = parse_size("G").unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        let err = parse_size("-5").unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        let err = parse_size("1.5G").unwrap_err();
        assert!(err.contains("whole numbers"), "{err}");
        for junk in ["10GiBs", "10 G", "10KM", "10iB", "0x10", "10Bi", "1e3"] {
            assert!(parse_size(junk).is_err(), "{junk} was accepted");
        }
    }

    #[test]
    fn formatting_picks_the_largest_whole_unit() {
        assert_eq!(format_size(0u64), "0 B");
        assert_eq!(format_size(1023u64), "1023 B");
        assert_eq!(format_size(4096u64), "4 KiB");
        assert_eq!(format_size(1536u64 << 20), "1.5 GiB");
        assert_eq!(format_size((1u64 << 30) - 1), "1023.9 MiB");
        assert_eq!(format_size(10u64 << 40), "10 TiB");
        assert_eq!(format_size(u64::MAX), "15.9 EiB");
        // Sums of sizes (the scheduler's) may pass 16 EiB.
        assert_eq!(format_size(u128::MAX), format!("{}.9 EiB", u128::MAX >> 60));
        assert_eq!(format_size_exact(512), "512 bytes");
        assert_eq!(format_size_exact(1 << 20), "1 MiB (1048576 bytes)");
    }

    #[test]
    fn formatted_whole_units_parse_back() {
        for bytes in [4096, 1 << 20, 10 << 30, 3 << 40] {
            let text = format_size(bytes).replace(' ', "");
            assert_eq!(parse_size(&text), Ok(bytes), "{text}");
        }
    }
}
