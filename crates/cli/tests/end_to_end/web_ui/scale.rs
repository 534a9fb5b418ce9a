//! The volume list with 1,000 real volumes (`ui/e2e/scale.mjs`): time to interactive,
//! filtering, scrolling to the last row, a bulk delete, and the watch bytes of an idle
//! page (under 1 KiB in 10 s).

use std::time::Duration;

use super::run_script;
use crate::upnode::Node;

#[test]
fn web_ui_stays_fast_and_quiet_with_a_thousand_volumes() {
    let node = Node::start();
    let figures = run_script(&node, "scale", Duration::from_secs(600));
    assert!(
        figures
            .iter()
            .any(|f| f.starts_with("FIGURE idle_watch_bytes_10s")),
        "{figures:?}"
    );
}
