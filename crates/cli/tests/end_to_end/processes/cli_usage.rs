//! What a new user of the command line meets: the engine address (`--engine`) is shown
//! only where it is used — in the top-level help, for the commands that talk to one
//! engine — and not in the help of the cluster commands and daemons, which never use
//! it; `setting ls` lists the settings, as the other cluster objects' `ls` do.

use crate::common::{BIN, run};
use crate::upnode::Node;

#[test]
fn the_engine_address_is_offered_only_where_it_is_used() {
    let top = run(BIN, &["--help"], std::time::Duration::from_secs(30));
    assert!(top.success(), "{top:?}");
    assert!(top.stdout.contains("--engine <ENGINE>"), "{}", top.stdout);
    for command in [
        "volume",
        "node",
        "setting",
        "job",
        "backup-target",
        "up",
        "agent",
        "store",
        "launch-simple",
    ] {
        let help = run(
            BIN,
            &[command, "--help"],
            std::time::Duration::from_secs(30),
        );
        assert!(help.success(), "{command} --help: {help:?}");
        assert!(
            !help.stdout.contains("--engine <ENGINE>"),
            "`{command} --help` offers --engine, which it never uses:\n{}",
            help.stdout
        );
    }
}

#[test]
fn setting_ls_lists_every_setting() {
    let node = Node::start();
    let listed = node.cli_ok(&["setting", "ls"]);
    assert_eq!(listed, node.cli_ok(&["setting", "get"]));
    for name in [
        "auto_salvage",
        "default_replica_count",
        "engine_replica_timeout",
    ] {
        assert!(
            listed.lines().any(|l| l.starts_with(&format!("{name} = "))),
            "no {name} in `setting ls`:\n{listed}"
        );
    }
    let unknown = node.cli(&["setting", "get", "no_such_setting"]);
    assert!(!unknown.success(), "{unknown:?}");
    assert!(
        unknown.stderr.contains("`setting ls` lists them"),
        "{unknown:?}"
    );
}
