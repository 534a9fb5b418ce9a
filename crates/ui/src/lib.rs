//! The web UI's files, embedded at compile time from `ui/dist` (see `build.rs`), and what
//! the manager serves when they were not built.

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// One file of the UI, ready to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The file's content.
    pub bytes: &'static [u8],
    /// Its `Content-Type`, from its extension.
    pub content_type: &'static str,
    /// Vite names what it builds under `assets/` by content hash: such a file never
    /// changes, so browsers may keep it for good.
    pub immutable: bool,
}

/// The built file at `path` (relative, `/`-separated, e.g. `index.html`), if any.
pub fn asset(path: &str) -> Option<Asset> {
    let index = ASSETS.binary_search_by(|(name, _)| name.cmp(&path)).ok()?;
    let (name, bytes) = ASSETS[index];
    Some(Asset {
        bytes,
        content_type: content_type(name),
        immutable: name.starts_with("assets/"),
    })
}

/// Whether the UI was built into this binary.
pub fn is_built() -> bool {
    asset("index.html").is_some()
}

/// The page served at `/` by a binary built without the UI: how to build it.
pub const NOT_BUILT_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Shorthorn: web UI not built</title></head><body>\
<h1>The web UI is not in this build</h1>\
<p>This shorthorn binary was compiled without the UI's assets. Build them, then build shorthorn again:</p>\
<pre>cd ui &amp;&amp; npm ci &amp;&amp; npm run build\ncargo build --release -p shorthorn</pre>\
<p><code>scripts/setup.sh</code> does the first step. The REST API works without the UI: \
see <a href=\"/v1/openapi.json\">/v1/openapi.json</a> and the <code>shorthorn</code> CLI.</p>\
</body></html>\n";

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_sorted_for_the_binary_search() {
        assert!(ASSETS.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("assets/x.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }

    /// Every file the page loads is in the build (a stale half-copied `ui/dist` fails).
    #[test]
    fn the_page_loads_only_files_of_the_build() {
        let Some(index) = asset("index.html") else {
            return; // built without the UI: `/` serves NOT_BUILT_PAGE
        };
        let html = std::str::from_utf8(index.bytes).unwrap();
        let mut referenced = 0;
        for part in html.split(['"', '\'']) {
            if let Some(path) = part
                .strip_prefix('/')
                .filter(|p| p.starts_with("assets/") || p.ends_with(".svg"))
            {
                assert!(
                    asset(path).is_some(),
                    "index.html loads /{path}, which is not built"
                );
                referenced += 1;
            }
        }
        assert!(
            referenced >= 2,
            "index.html loads no script or style: {html}"
        );
    }

    #[test]
    fn a_missing_file_is_none() {
        assert_eq!(asset("no/such/file.js"), None);
    }
}
