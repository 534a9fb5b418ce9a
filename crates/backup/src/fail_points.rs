//! The fault-injection points of backup create, restore and delete, for the `fail` crate (compiled in with
//! the `failpoints` feature). The names are exported so the crash tests and the CLI's
//! `SHORTHORN_CRASH_AT` take them from here, not from a copy.

/// `backup::create::before-record`.
pub const CREATE_BEFORE_RECORD: &str = "backup::create::before-record";
/// `backup::delete::before-gc`.
pub const DELETE_BEFORE_GC: &str = "backup::delete::before-gc";
/// `backup::restore::after-block`.
pub const RESTORE_AFTER_BLOCK: &str = "backup::restore::after-block";

/// Every point above.
pub const ALL: [&str; 3] = [CREATE_BEFORE_RECORD, DELETE_BEFORE_GC, RESTORE_AFTER_BLOCK];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    /// A point named by a literal in the source would be missing from [`super::ALL`].
    #[test]
    fn every_fail_point_is_named_from_here() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains(concat!("fail_point!", "(\"")),
                    "{} names a fail point by a literal",
                    path.display()
                );
            }
        }
    }
}
