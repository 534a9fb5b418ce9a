//! A volume's life driven from the web UI (`ui/e2e/lifecycle.mjs`): login refused and
//! accepted (session cookie, CSRF), create, attach, snapshot, backup, a replica killed
//! and rebuilt live on the page, expand, an HTML label shown as text, detach, delete,
//! logout; every page screenshotted and checked by axe.

use std::time::Duration;

use super::run_script;
use crate::upnode::Node;

#[test]
fn web_ui_drives_a_volume_through_its_life() {
    let node = Node::start();
    let figures = run_script(&node, "lifecycle", Duration::from_secs(480));
    assert!(
        figures
            .iter()
            .any(|f| f.starts_with("FIGURE healthy_again_after_kill")),
        "{figures:?}"
    );
}
