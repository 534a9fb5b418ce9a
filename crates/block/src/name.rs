//! Rules for volume and snapshot names. Names end up in file listings, URLs and CLI
//! output, so they are kept short and free of path and control characters.

/// A name that breaks the rules, and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    /// The rejected name.
    pub name: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Checks a volume or snapshot name: 1 to 63 bytes of ASCII letters, digits, `-`, `_` and
/// `.`, not starting with `.` or `-`, and never containing `..`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let reject = |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return reject("names cannot be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return reject("names are at most 63 bytes long");
    }
    if name.contains('/') || name.contains('\\') {
        return reject("names cannot contain path separators");
    }
    if name.contains("..") {
        return reject("names cannot contain '..'");
    }
    if name.chars().any(|c| c.is_control()) {
        return reject("names cannot contain control characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return reject("names may use only ASCII letters, digits, '-', '_' and '.'");
    }
    if name.starts_with(['.', '-']) {
        return reject("names cannot start with '.' or '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "vol1",
            "pvc-3f2a_b.c",
            "snap-2026-11-22T17.07",
            &"a".repeat(63),
        ] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_dangerous_names_with_a_reason() {
        for name in [
            "",
            "a/b",
            "..",
            "x..y",
            ".hidden",
            "-flag",
            "tab\there",
            "é",
            &"a".repeat(64),
        ] {
            let err = validate_name(name).expect_err(name).to_string();
            assert!(err.contains("invalid name"), "{err}");
        }
    }
}
