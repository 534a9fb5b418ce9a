//! A standby (disaster recovery) volume driven from the web UI (`ui/e2e/standby.mjs`):
//! created with the form's Standby box, its page showing what it holds, a new backup
//! restored after "Sync now", activated with its name typed.

use std::time::Duration;

use super::run_script;
use crate::upnode::Node;

#[test]
fn web_ui_creates_follows_and_activates_a_standby_volume() {
    let node = Node::start();
    run_script(&node, "standby", Duration::from_secs(240));
}
