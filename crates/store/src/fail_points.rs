//! The fault-injection points of the store's crash-safe commits (metadata, snapshot, revert, expand, purge), for the `fail` crate (compiled in with
//! the `failpoints` feature). The names are exported so the crash tests and the CLI's
//! `SHORTHORN_CRASH_AT` take them from here, not from a copy.

/// `store::expand::after-intent`.
pub const EXPAND_AFTER_INTENT: &str = "store::expand::after-intent";
/// `store::expand::after-resize`.
pub const EXPAND_AFTER_RESIZE: &str = "store::expand::after-resize";
/// `store::meta::before-dir-sync`.
pub const META_BEFORE_DIR_SYNC: &str = "store::meta::before-dir-sync";
/// `store::meta::before-rename`.
pub const META_BEFORE_RENAME: &str = "store::meta::before-rename";
/// `store::purge::before-commit`.
pub const PURGE_BEFORE_COMMIT: &str = "store::purge::before-commit";
/// `store::purge::before-delete`.
pub const PURGE_BEFORE_DELETE: &str = "store::purge::before-delete";
/// `store::purge::mid-copy`.
pub const PURGE_MID_COPY: &str = "store::purge::mid-copy";
/// `store::revert::after-new-head`.
pub const REVERT_AFTER_NEW_HEAD: &str = "store::revert::after-new-head";
/// `store::revert::before-delete`.
pub const REVERT_BEFORE_DELETE: &str = "store::revert::before-delete";
/// `store::snapshot::after-new-head`.
pub const SNAPSHOT_AFTER_NEW_HEAD: &str = "store::snapshot::after-new-head";

/// Every point above.
pub const ALL: [&str; 10] = [
    EXPAND_AFTER_INTENT,
    EXPAND_AFTER_RESIZE,
    META_BEFORE_DIR_SYNC,
    META_BEFORE_RENAME,
    PURGE_BEFORE_COMMIT,
    PURGE_BEFORE_DELETE,
    PURGE_MID_COPY,
    REVERT_AFTER_NEW_HEAD,
    REVERT_BEFORE_DELETE,
    SNAPSHOT_AFTER_NEW_HEAD,
];

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
