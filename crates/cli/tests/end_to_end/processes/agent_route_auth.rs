//! The node agent's routes (`/agent/v1/…`) against a real `shorthorn up`: they start
//! root processes and remove directories, so they take only the node credential, never
//! a path.
//!
//! - `up` keeps the node credential in `DATA_DIR/node-token` (mode 0600), apart from the
//!   user token; `manager.json`, which users are given, does not hold it.
//! - The user token gets 403 on every agent route, no token 401, and the node credential
//!   403 on the user routes.
//! - With the node credential: a removal whose body names a `data_dir` is refused (400)
//!   and the victim directory outside the disks survives; removing a name that is no
//!   replica of the agent deletes nothing; a path smuggled in as the name gets 400; a
//!   directory under the disk without the agent's marker survives (409); a restore
//!   from a target outside the node's target policy is refused (400, naming the flag).
//! - A replica started through the agent route gets a marked directory on the disk, and
//!   removing it by name stops it and removes the directory. A replica of a volume made
//!   the normal way (`volume create`) has its marker, and deleting the volume removes
//!   its directory (the reconciler removes by name).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{free_port_range, path_str, processes_mentioning};
use crate::http::{Response, request};
use crate::upnode::Node;

/// Ports the agent lets daemons use (its `PORT_RANGE`).
const DAEMON_PORTS: std::ops::Range<u16> = 20000..30000;
/// A replica name no volume of the node has.
const STRANGER: &str = "stranger-r-0000abcd";

/// One request with an optional bearer token and JSON body, answered without chunking.
fn call(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let addr = url.strip_prefix("http://").unwrap().parse().unwrap();
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    let body = body.map(Value::to_string);
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let answer = request(
        addr,
        method,
        path,
        &headers,
        body.as_deref().map(str::as_bytes),
    );
    assert!(!answer.chunked, "{answer}");
    answer
}

/// The agent routes, each with a body it would take.
fn agent_routes() -> Vec<(&'static str, String, Option<Value>)> {
    let launch = json!({"name": STRANGER, "volume": "stranger", "size": 4194304,
        "disk": "default", "listen": "127.0.0.1:20000"});
    vec![
        ("POST", "/agent/v1/replicas".into(), Some(launch)),
        (
            "POST",
            format!("/agent/v1/replicas/{STRANGER}/remove"),
            Some(json!({})),
        ),
        (
            "POST",
            "/agent/v1/engines".into(),
            Some(
                json!({"name": "stranger-e", "volume": "stranger", "size": 4194304,
                "listen": "127.0.0.1:20000", "nbd": "127.0.0.1:20001", "replicas": []}),
            ),
        ),
        (
            "POST",
            "/agent/v1/restores".into(),
            Some(
                json!({"replica": STRANGER, "disk": "default", "volume": "stranger",
                "url": "file:///nowhere?backup=b&volume=v"}),
            ),
        ),
        ("GET", format!("/agent/v1/processes/{STRANGER}"), None),
        ("DELETE", format!("/agent/v1/processes/{STRANGER}"), None),
    ]
}

/// A directory with a file in it; both must survive every refused removal.
fn make_victim(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("precious");
    std::fs::write(&file, b"not the agent's").unwrap();
    file
}

/// A port pair free now, inside the agent's daemon range.
fn free_daemon_port() -> u16 {
    loop {
        let port = free_port_range(2);
        if DAEMON_PORTS.contains(&(port + 1)) {
            return port;
        }
    }
}

#[test]
fn agent_routes_take_only_the_node_credential_and_never_a_path() {
    let node = Node::start();
    let data = node.data_dir();
    let connection: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("manager.json")).unwrap()).unwrap();
    let url = connection["url"].as_str().unwrap().to_string();
    let user_token = std::fs::read_to_string(data.join("token")).unwrap();
    let node_token = std::fs::read_to_string(data.join("node-token")).unwrap();
    let (user_token, node_token) = (user_token.trim(), node_token.trim());

    // The node credential: its own file, private, not the user token, not given out.
    assert!(node_token.len() >= 32, "{node_token:?}");
    assert_ne!(node_token, user_token);
    let mode = std::fs::metadata(data.join("node-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "node-token mode {mode:o}");
    assert!(
        !std::fs::read_to_string(data.join("manager.json"))
            .unwrap()
            .contains(node_token),
        "manager.json holds the node credential"
    );

    // Credentials per route family.
    for (method, path, body) in agent_routes() {
        let answer = call(&url, method, &path, Some(user_token), body.as_ref());
        assert_eq!(
            answer.status, 403,
            "{method} {path} with the user token: {answer:?}"
        );
        assert!(
            answer.message().contains("node credential"),
            "{method} {path}: {answer:?}"
        );
        let answer = call(&url, method, &path, None, body.as_ref());
        assert_eq!(
            answer.status, 401,
            "{method} {path} without a token: {answer:?}"
        );
        let answer = call(&url, method, &path, Some("not-a-token"), body.as_ref());
        assert_eq!(
            answer.status, 401,
            "{method} {path} with a wrong token: {answer:?}"
        );
    }
    let answer = call(&url, "GET", "/v1/volumes", Some(node_token), None);
    assert_eq!(
        answer.status, 403,
        "a user route with the node credential: {answer:?}"
    );
    assert_eq!(
        call(&url, "GET", "/v1/volumes", Some(user_token), None).status,
        200
    );

    // A path in the removal body: refused, with either credential; the victim stays.
    let outside = tempfile::tempdir().unwrap();
    let victim = make_victim(&outside.path().join("victim"));
    let remove_stranger = format!("/agent/v1/replicas/{STRANGER}/remove");
    let with_path = json!({"data_dir": path_str(victim.parent().unwrap())});
    let answer = call(
        &url,
        "POST",
        &remove_stranger,
        Some(node_token),
        Some(&with_path),
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.message().contains("data_dir"), "{answer:?}");
    let answer = call(
        &url,
        "POST",
        &remove_stranger,
        Some(user_token),
        Some(&with_path),
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(victim.exists(), "the victim outside the disks was removed");

    // A name that is no replica of this agent: nothing to remove, nothing removed.
    let answer = call(
        &url,
        "POST",
        &remove_stranger,
        Some(node_token),
        Some(&json!({})),
    );
    assert_eq!(answer.status, 204, "{answer:?}");
    assert!(victim.exists());
    // A path as the name: not a replica name.
    let smuggled = format!(
        "/agent/v1/replicas/..%2F..%2F..%2F{}/remove",
        path_str(outside.path())
            .trim_start_matches('/')
            .replace('/', "%2F")
    );
    let answer = call(&url, "POST", &smuggled, Some(node_token), Some(&json!({})));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.message().contains("not a replica name"),
        "{answer:?}"
    );
    assert!(victim.exists());

    // Under the disk, where the replica's directory would be, but not made by the agent.
    let disk = data.join("disks/default");
    let unmarked = make_victim(&disk.join("replicas").join(STRANGER));
    let answer = call(
        &url,
        "POST",
        &remove_stranger,
        Some(node_token),
        Some(&json!({})),
    );
    assert_eq!(answer.status, 409, "{answer:?}");
    let message = answer.message();
    assert!(
        message.contains(STRANGER) && message.contains("marker"),
        "{message}"
    );
    assert!(
        unmarked.exists(),
        "an unmarked directory under the disk was removed"
    );

    // A replica the agent starts: marked, and removed by its name alone.
    let own = "own-r-0000beef";
    let port = free_daemon_port();
    let launch = json!({"name": own, "volume": "own", "size": 4194304, "disk": "default",
        "listen": format!("127.0.0.1:{port}")});
    let answer = call(
        &url,
        "POST",
        "/agent/v1/replicas",
        Some(node_token),
        Some(&launch),
    );
    assert_eq!(answer.status, 204, "{answer:?}\n{}", node.log());
    let own_dir = disk.canonicalize().unwrap().join("replicas").join(own);
    let marker: Value =
        serde_json::from_str(&std::fs::read_to_string(own_dir.join(".shorthorn-replica")).unwrap())
            .unwrap();
    assert_eq!(marker, json!({"replica": own, "volume": "own"}));
    assert_eq!(processes_mentioning(path_str(&own_dir)).len(), 1);
    let answer = call(
        &url,
        "POST",
        &format!("/agent/v1/replicas/{own}/remove"),
        Some(node_token),
        Some(&json!({})),
    );
    assert_eq!(answer.status, 204, "{answer:?}");
    assert!(
        !own_dir.exists(),
        "the agent's own replica directory stayed"
    );
    assert!(processes_mentioning(path_str(&own_dir)).is_empty());
    // A launch naming a directory is refused like the removal.
    let mut with_dir = launch.clone();
    with_dir["data_dir"] = json!(path_str(outside.path()));
    let answer = call(
        &url,
        "POST",
        "/agent/v1/replicas",
        Some(node_token),
        Some(&with_dir),
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    // A restore reads its backup as root: only from targets under this node's file
    // target roots (DATA_DIR/backups by default) or NFS hosts it lists.
    for (target, flag) in [
        ("file:///etc".to_string(), "--file-target-root"),
        (
            format!("file://{}", path_str(outside.path())),
            "--file-target-root",
        ),
        ("nfs://nfs.example/export".into(), "--nfs-target-host"),
    ] {
        let restore = json!({"replica": "restored-r-0123abcd", "disk": "default",
            "volume": "restored", "url": format!("{target}?backup=b&volume=v")});
        let answer = call(
            &url,
            "POST",
            "/agent/v1/restores",
            Some(node_token),
            Some(&restore),
        );
        assert_eq!(answer.status, 400, "{target}: {answer:?}");
        assert!(answer.message().contains(flag), "{target}: {answer:?}");
    }

    // The normal volume flow: a marked directory, removed by name when the volume goes.
    node.cli_ok(&[
        "volume",
        "create",
        "real",
        "--size",
        "16M",
        "--replicas",
        "1",
    ]);
    node.wait_for("real", "running", Duration::from_secs(60), |v| {
        v["replicas"][0]["status"]["state"] == "running"
    });
    let replica = node.volume("real")["replicas"][0].clone();
    let name = replica["name"].as_str().unwrap().to_string();
    let dir = Path::new(replica["spec"]["data_dir"].as_str().unwrap()).to_path_buf();
    let marker: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".shorthorn-replica")).unwrap())
            .unwrap();
    assert_eq!(marker, json!({"replica": name, "volume": "real"}));
    node.cli_ok(&["volume", "rm", "real"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} not removed:\n{}",
            dir.display(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    assert!(victim.exists() && unmarked.exists());
}
