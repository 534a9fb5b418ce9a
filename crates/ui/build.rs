//! Embeds the web UI's build output (`ui/dist`, made by `npm run build` in `ui/`) into
//! the crate: one `include_bytes!` per file, listed in `$OUT_DIR/assets.rs`. Without a
//! build output the list is empty and the manager serves a page saying how to build it,
//! so a plain `cargo build` works on a machine without Node.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dist = manifest.join("../../ui/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut table = String::from("/// Every built file: its path under `ui/dist` and its bytes.\n");
    table.push_str("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (relative, absolute) in &files {
        writeln!(table, "    ({relative:?}, include_bytes!({absolute:?})),").expect("a String");
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("assets.rs"), table).expect("writing OUT_DIR/assets.rs");
}

/// Every file under `dir`, as (path relative to `root` with `/`, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("under root");
            let relative = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let absolute = path
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files.push((relative, absolute.to_string_lossy().into_owned()));
        }
    }
}
