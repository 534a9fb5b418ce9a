//! The watch stream under `shorthorn up`, read by `shorthorn watch --json` as a client
//! would: every object first, then `synced`; a create → attach → snapshot → detach
//! sequence arrives as it happens and in order (the volume's states and the events the
//! managers record); an idle cluster sends nothing for 10 s; a bad kind is refused.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::BIN;
use crate::upnode::Node;

const WAIT: Duration = Duration::from_secs(60);

/// A running `shorthorn watch --json`, its messages as they arrive; killed when dropped.
struct Watcher {
    child: Child,
    messages: Receiver<Value>,
}

impl Watcher {
    fn start(node: &Node, extra: &[&str]) -> Watcher {
        let data_dir = node.data_dir();
        let mut child = Command::new(BIN)
            .args(["watch", "--json", "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .env_remove("SHORTHORN_URL")
            .env_remove("SHORTHORN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, messages) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let message: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if sender.send(message).is_err() {
                    return;
                }
            }
        });
        Watcher { child, messages }
    }

    /// Messages until one satisfies `done` (included), within [`WAIT`].
    fn until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(message) => {
                    let last = done(&message);
                    seen.push(message);
                    if last {
                        return seen;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("watch: no {what} within {WAIT:?}; got {seen:#?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("watch ended before {what}; got {seen:#?}")
                }
            }
        }
    }

    /// Everything that arrives within `quiet`.
    fn during(&self, quiet: Duration) -> Vec<Value> {
        let deadline = Instant::now() + quiet;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.messages.recv_timeout(left) {
                Ok(message) => seen.push(message),
                Err(_) => break,
            }
        }
        seen
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_volume_in(message: &Value, name: &str, state: &str) -> bool {
    message["type"] == "put"
        && message["kind"] == "volume"
        && message["name"] == name
        && message["object"]["status"]["state"] == state
}

/// The reasons of the events about `volume` among `messages`, in stream order.
fn event_reasons(messages: &[Value], volume: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["type"] == "put" && m["kind"] == "event")
        .filter(|m| m["object"]["volume"] == volume)
        .map(|m| {
            m["object"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// A node object without what the host changes under it: its heartbeat time and its
/// disks' free space.
fn without_free_space(node: &Value) -> Value {
    let mut node = node.clone();
    if let Some(status) = node["status"].as_object_mut() {
        status.remove("heartbeat");
    }
    if let Some(disks) = node["status"]["disks"].as_array_mut() {
        for disk in disks {
            if let Some(disk) = disk.as_object_mut() {
                disk.remove("available");
            }
        }
    }
    node
}

fn position(messages: &[Value], what: &str, test: impl Fn(&Value) -> bool) -> usize {
    messages
        .iter()
        .position(test)
        .unwrap_or_else(|| panic!("no {what} in {messages:#?}"))
}

#[test]
fn a_watch_sees_a_volume_lifecycle_in_order_and_nothing_while_idle() {
    let node = Node::start();
    node.create_attached("before", "32M", 1);

    let watch = Watcher::start(&node, &[]);
    let listed = watch.until("synced", |m| m["type"] == "synced");
    // Every object first: the volume made before the watch, and this node.
    assert!(
        listed.iter().any(|m| is_volume_in(m, "before", "attached")),
        "{listed:#?}"
    );
    assert!(
        listed
            .iter()
            .any(|m| m["kind"] == "node" && m["object"]["status"]["ready"] == true),
        "{listed:#?}"
    );

    node.create_attached("w1", "32M", 1);
    node.cli_ok(&["volume", "snapshot", "create", "w1", "s1"]);
    node.cli_ok(&["volume", "detach", "w1"]);
    // A new volume may pass through `detached` before it attaches (its replica runs
    // first): the detach asked for is the one after the snapshot.
    let snapshot_seen = std::cell::Cell::new(false);
    let seen = watch.until("w1 detached after its snapshot", |m| {
        if m["kind"] == "event" && m["object"]["reason"] == "SnapshotCreated" {
            snapshot_seen.set(true);
        }
        snapshot_seen.get() && is_volume_in(m, "w1", "detached")
    });
    let seen = [
        seen,
        watch.until("the Detached event", |m| {
            m["kind"] == "event"
                && m["object"]["volume"] == "w1"
                && m["object"]["reason"] == "Detached"
        }),
    ]
    .concat();

    let created = position(&seen, "w1's first put", |m| {
        m["type"] == "put" && m["kind"] == "volume" && m["name"] == "w1"
    });
    let attached = position(&seen, "w1 attached", |m| is_volume_in(m, "w1", "attached"));
    let snapshot = position(&seen, "the SnapshotCreated event", |m| {
        m["kind"] == "event" && m["object"]["reason"] == "SnapshotCreated"
    });
    let detached = seen
        .iter()
        .rposition(|m| is_volume_in(m, "w1", "detached"))
        .unwrap_or_default();
    assert!(
        created < attached && attached < snapshot && snapshot < detached,
        "{seen:#?}"
    );
    let reasons = event_reasons(&seen, "w1");
    let mut order: Vec<usize> = ["Created", "Attached", "SnapshotCreated"]
        .iter()
        .map(|reason| {
            reasons
                .iter()
                .position(|r| r == reason)
                .unwrap_or_else(|| panic!("no {reason} event in {reasons:?}"))
        })
        .collect();
    order.extend(reasons.iter().rposition(|r| r == "Detached"));
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{reasons:?}");
    assert_eq!(seen[snapshot]["object"]["object"], "w1/s1", "{seen:#?}");
    // One message per changed object: no list is sent again.
    let synced_again = seen.iter().filter(|m| m["type"] == "synced").count();
    assert_eq!(synced_again, 0, "{seen:#?}");

    // Settle (a last status write after the detach), then 10 idle seconds: nothing but
    // the node's free space, when other processes on this host (other tests, in CI) move
    // it by more than the 64 MiB the node report ignores; that is a real change.
    let settled = watch.during(Duration::from_secs(3));
    let idle = watch.during(Duration::from_secs(10));
    let mut last_node = [listed.as_slice(), &seen, &settled]
        .concat()
        .into_iter()
        .rfind(|m| m["kind"] == "node")
        .map(|m| without_free_space(&m["object"]));
    for message in &idle {
        assert_eq!(
            message["kind"], "node",
            "a message while nothing changed: {message:#}"
        );
        let node_now = without_free_space(&message["object"]);
        assert_eq!(
            last_node.as_ref(),
            Some(&node_now),
            "the node changed more than its free space while idle: {message:#}"
        );
        last_node = Some(node_now);
    }

    // One kind only; an unknown kind is refused with the list of kinds.
    let volumes_only = Watcher::start(&node, &["--kind", "volume"]);
    let listed = volumes_only.until("synced", |m| m["type"] == "synced");
    assert!(
        listed
            .iter()
            .all(|m| m["type"] == "synced" || m["kind"] == "volume"),
        "{listed:#?}"
    );
    assert_eq!(listed.len(), 3, "two volumes and synced: {listed:#?}");
    let refused = node.cli(&["watch", "--kind", "volumes"]);
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("unknown kind \"volumes\"")
            && refused.stderr.contains("backup-target"),
        "{refused:?}"
    );
}
