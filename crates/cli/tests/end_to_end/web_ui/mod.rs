//! The web UI in a real browser: each test starts `shorthorn up`, then runs one of the
//! UI's playwright-core scripts (`ui/e2e/*.mjs`, driving Debian's Chromium) against it.
//! The scripts check what the page shows and does; they print `FIGURE name value unit`
//! lines (times, bytes), which these tests print again for the notes. Screenshots go to
//! `target/ui-screenshots/` — or to `docs/ui/` with `SHORTHORN_UI_SCREENSHOTS=docs`,
//! which is how the documentation's pictures are made.

mod lifecycle;
mod scale;
mod standby;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{require, run_command, tail_lines};
use crate::upnode::{Auth, Node};

/// The UI's directory (its `node_modules` installed by `scripts/setup.sh`).
fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui")
}

/// Where a script's screenshots go.
fn screenshot_dir() -> PathBuf {
    if std::env::var("SHORTHORN_UI_SCREENSHOTS").as_deref() == Ok("docs") {
        return Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ui");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots")
}

/// Runs `ui/e2e/SCRIPT.mjs` against `node`; fails the test with the script's output
/// unless it ends with `OK`. Returns its figures.
fn run_script(node: &Node, script: &str, timeout: Duration) -> Vec<String> {
    require("chromium", "chromium");
    let node_program = require("node", "nodejs");
    let ui = ui_dir();
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "ui/node_modules is missing: run scripts/setup.sh (it runs `npm ci` and the UI's build)"
    );
    let index = node.api.send("GET", "/", Auth::None, None, None);
    assert!(
        String::from_utf8_lossy(&index.body).contains("/assets/"),
        "this shorthorn binary was built without the web UI (ui/dist): run scripts/setup.sh, then build again"
    );
    let mut command = Command::new(node_program);
    command
        .arg(format!("e2e/{script}.mjs"))
        .current_dir(&ui)
        .env("SHORTHORN_URL", node.url())
        .env("SHORTHORN_TOKEN", &node.api.token)
        .env("SHORTHORN_DATA_DIR", node.data_dir())
        .env("SHORTHORN_SCREENSHOTS", screenshot_dir().join(script));
    let outcome = run_command(command, timeout);
    assert!(
        outcome.success() && outcome.stdout.lines().any(|line| line == "OK"),
        "ui/e2e/{script}.mjs failed (screenshot: {}/failure.png):\n{}\n{}\nup's log:\n{}",
        screenshot_dir().join(script).display(),
        outcome.stdout,
        outcome.stderr,
        tail_lines(&node.log(), 40)
    );
    let figures: Vec<String> = outcome
        .stdout
        .lines()
        .filter(|line| line.starts_with("FIGURE "))
        .map(str::to_owned)
        .collect();
    for figure in &figures {
        println!("{script}: {figure}");
    }
    figures
}
