//! The rules every request body keeps before a handler sees it: each string a length
//! limit and a character rule, each list a length limit, each number a range. A
//! violation is a 400 that names the field (`tags[3]: ...`). Rules that need the
//! cluster's state (does the node exist, is the disk in use) stay in the handlers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

/// Largest volume the API creates (the store's own limit is higher).
pub const MAX_SIZE: u64 = 1 << 50;
/// Longest URL accepted (backup targets, backups to restore from).
pub const MAX_URL_LENGTH: usize = 1024;
/// Most items in one list of names (tags, selectors, jobs, groups).
pub const MAX_LIST: usize = 32;
/// Most labels on one object.
pub const MAX_LABELS: usize = 32;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 256;
/// Most disks on one node.
pub const MAX_DISKS: usize = 64;
/// Longest disk path (Linux's PATH_MAX).
pub const MAX_DISK_PATH: usize = 4096;
/// Longest cron expression.
pub const MAX_CRON: usize = 128;
/// Most snapshots or backups a recurring job keeps per volume.
pub const MAX_RETAIN: u32 = 1000;
/// Most replicas of one volume.
pub const MAX_REPLICAS: usize = 16;
/// Most bytes a disk may keep back from scheduling (1 EiB).
pub const MAX_RESERVED: u64 = 1 << 60;
/// Largest over-provisioning percentage (100 times the disks' space).
pub const MAX_OVER_PROVISIONING: u64 = 10_000;

/// The name rule ([`shorthorn_block::validate_name`]) as a regular expression, for the
/// OpenAPI document: a dot is never followed by another.
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9_]([A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$";

/// A field that breaks its rule: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field's path in the body, such as `disks[1].path`.
    pub field: String,
    /// The rule it breaks.
    pub reason: String,
}

/// What a request body checks about itself.
pub trait Validate {
    /// The first field that breaks its rule, if any.
    fn validate(&self) -> Result<(), FieldError>;
}

impl FieldError {
    /// `field` breaks its rule for `reason` (a rule between fields, say).
    pub fn new(field: impl Display, reason: impl Display) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn fail<T>(field: impl Display, reason: impl Display) -> Result<T, FieldError> {
    Err(FieldError::new(field, reason))
}

/// A name by the name rule.
pub fn name(field: impl Display, value: &str) -> Result<(), FieldError> {
    shorthorn_block::validate_name(value).or_else(|e| fail(field, e))
}

/// A name by the name rule, when given.
pub fn optional_name(field: impl Display, value: Option<&str>) -> Result<(), FieldError> {
    value.map_or(Ok(()), |value| name(field, value))
}

/// At most [`MAX_LIST`] distinct names.
pub fn names(field: &str, values: &[String]) -> Result<(), FieldError> {
    if values.len() > MAX_LIST {
        return fail(
            field,
            format!("at most {MAX_LIST} items, not {}", values.len()),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, value) in values.iter().enumerate() {
        name(format_args!("{field}[{i}]"), value)?;
        if !seen.insert(value) {
            return fail(
                format_args!("{field}[{i}]"),
                format!("{value} is listed twice"),
            );
        }
    }
    Ok(())
}

/// Text of at most `max` bytes with no control characters.
pub fn text(field: impl Display, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return fail(field, format!("is longer than {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return fail(field, "cannot contain control characters");
    }
    Ok(())
}

/// A URL: 1 to [`MAX_URL_LENGTH`] bytes, no whitespace or control characters. (What
/// its scheme must be is the backup target's rule.)
pub fn url(field: impl Display + Copy, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return fail(field, "not a URL: it is empty");
    }
    if value.chars().any(char::is_whitespace) {
        return fail(field, format!("{value:?} is not a URL (it has whitespace)"));
    }
    text(field, value, MAX_URL_LENGTH)
}

/// At most [`MAX_LABELS`] labels: keys by the name rule, values text of at most
/// [`MAX_LABEL_VALUE`] bytes.
pub fn labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if labels.len() > MAX_LABELS {
        return fail(
            field,
            format!("at most {MAX_LABELS} labels, not {}", labels.len()),
        );
    }
    for (key, value) in labels {
        name(format_args!("{field}: key"), key)?;
        text(format_args!("{field}.{key}"), value, MAX_LABEL_VALUE)?;
    }
    Ok(())
}

/// A number in `range`.
pub fn range<T: PartialOrd + Display>(
    field: impl Display,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), FieldError> {
    if range.contains(&value) {
        Ok(())
    } else {
        fail(
            field,
            format!(
                "{value} is out of range: {} to {}",
                range.start(),
                range.end()
            ),
        )
    }
}

/// A volume size: a positive multiple of 4096, at most [`MAX_SIZE`].
pub fn size(field: impl Display, size: u64) -> Result<(), FieldError> {
    if size == 0 || size % 4096 != 0 || size > MAX_SIZE {
        return fail(
            field,
            format!("{size} must be a positive multiple of 4096, at most {MAX_SIZE}"),
        );
    }
    Ok(())
}

/// A disk path is absolute, plain (no `.`/`..` components, no control characters),
/// not the root, and at most [`MAX_DISK_PATH`] bytes: the agent creates and removes
/// replica directories under it as root.
pub fn disk_path(field: impl Display, path: &str) -> Result<(), FieldError> {
    let reason = if path.len() > MAX_DISK_PATH {
        "is longer than 4096 bytes"
    } else if !path.starts_with('/') {
        "must be absolute"
    } else if path.chars().any(char::is_control) {
        "cannot contain control characters"
    } else if path.split('/').any(|part| part == "." || part == "..") {
        "cannot contain '.' or '..' components"
    } else if path.trim_end_matches('/').is_empty() {
        "cannot be the root directory"
    } else {
        return Ok(());
    };
    fail(field, format!("{path:?} {reason}"))
}

/// The OpenAPI schemas of these rules, for `#[schema(schema_with = ...)]` on request
/// fields, so that the document states what the API enforces.
pub mod schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};

    use super::{MAX_LABEL_VALUE, MAX_LABELS, MAX_LIST, MAX_URL_LENGTH, NAME_PATTERN};

    fn string(max: usize) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(max))
    }

    fn or_null(builder: ObjectBuilder) -> Schema {
        builder
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .into()
    }

    fn name_builder() -> ObjectBuilder {
        string(shorthorn_block::MAX_NAME_LEN)
            .min_length(Some(1))
            .pattern(Some(NAME_PATTERN))
    }

    /// A name by the name rule.
    pub fn name() -> Schema {
        name_builder().into()
    }

    /// A name by the name rule, or null (absent).
    pub fn optional_name() -> Schema {
        or_null(name_builder())
    }

    /// A node's zone: a name, or empty for none.
    pub fn zone() -> Schema {
        or_null(string(shorthorn_block::MAX_NAME_LEN).pattern(Some(format!("{NAME_PATTERN}|^$"))))
    }

    /// Distinct names, at most [`MAX_LIST`].
    pub fn names() -> Schema {
        ArrayBuilder::new()
            .items(name_builder())
            .max_items(Some(MAX_LIST))
            .unique_items(true)
            .into()
    }

    /// Distinct names, at most [`MAX_LIST`], or null (absent).
    pub fn optional_names() -> Schema {
        ArrayBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .items(name_builder())
            .max_items(Some(MAX_LIST))
            .unique_items(true)
            .into()
    }

    fn url_builder() -> ObjectBuilder {
        string(MAX_URL_LENGTH)
            .min_length(Some(1))
            .pattern(Some(r"^\S+$"))
    }

    /// A URL without whitespace.
    pub fn url() -> Schema {
        url_builder().into()
    }

    /// A URL without whitespace, or null (absent).
    pub fn optional_url() -> Schema {
        or_null(url_builder())
    }

    /// Printable text of at most `max` bytes (see [`super::text`]), or null (absent).
    pub fn optional_text(max: usize) -> Schema {
        or_null(string(max).pattern(Some(PRINTABLE)))
    }

    /// No control characters (what [`super::text`] refuses).
    const PRINTABLE: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

    /// Labels: name keys, printable values.
    pub fn labels() -> Schema {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(name()))
            .additional_properties(Some(string(MAX_LABEL_VALUE).pattern(Some(PRINTABLE))))
            .max_properties(Some(MAX_LABELS))
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_pattern_states_the_name_rule() {
        let pattern = regex::Regex::new(NAME_PATTERN).unwrap();
        for candidate in [
            "a", "a.b", "a-b", "_x", "a.", "a..b", ".a", "-a", "a/b", "", "a b", "a.-b", "9",
            "a.b.c", "a_.", "é",
        ] {
            assert_eq!(
                pattern.is_match(candidate),
                shorthorn_block::validate_name(candidate).is_ok(),
                "{candidate:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_field_and_item() {
        let tags = vec!["ok".to_string(), "a/b".to_string()];
        let e = names("tags", &tags).unwrap_err();
        assert_eq!(e.field, "tags[1]");
        let twice = vec!["x".to_string(), "x".to_string()];
        assert!(names("tags", &twice).unwrap_err().reason.contains("twice"));
        let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
        assert!(names("tags", &many).unwrap_err().reason.contains("32"));
        assert!(text("zone", "a\u{0}", 10).is_err());
        assert!(text("zone", &"z".repeat(11), 10).is_err());
        assert!(
            range("retain", 0, 1..=10)
                .unwrap_err()
                .reason
                .contains("1 to 10")
        );
        let mut map = BTreeMap::new();
        map.insert("k".to_string(), "line\nbreak".to_string());
        assert_eq!(labels("labels", &map).unwrap_err().field, "labels.k");
    }

    #[test]
    fn disk_paths_are_absolute_plain_and_not_the_root() {
        for bad in ["relative", "/", "//", "/a/../b", "/a/./b", "/a\nb"] {
            assert!(disk_path("path", bad).is_err(), "{bad:?}");
        }
        assert!(disk_path("path", &format!("/{}", "a".repeat(4096))).is_err());
        assert!(disk_path("path", "/var/lib/shorthorn").is_ok());
    }
}
