//! The OpenAPI document is served without a token and lists every endpoint. Each
//! documented operation (and `/metrics`) answers 401 with a JSON `message` without a
//! token, with a wrong one, with another scheme or a bare token, and has no effect
//! then. With the token each one works in a volume's life: settings get and set,
//! nodes, create, get (replica running), list, attach (the NBD endpoint greets like
//! an NBD server), the engine (running, reachable) and replica lists, the cluster
//! (embedded store, this node leads), a backup target (a directory) set and read, a
//! backup taken (pending, then completed with its URL and record in the target),
//! refused target deletion while a backup is not complete, the backup deleted (its
//! record goes from the target, then the object), the target deleted, the replica count set, salvage of a
//! healthy volume and removal of a foreign replica refused, detach, a
//! snapshot of the detached volume (taken, got, listed, reverted to, removed, purged),
//! delete (replica data removed). The operations exercised must be exactly those of the
//! document, so a new endpoint without a test fails.

use super::*;
use crate::common::wanted_replicas;

/// Records which documented operations a test exercised.
struct Exercised<'a> {
    api: &'a Api,
    operations: BTreeSet<(String, String)>,
}

impl Exercised<'_> {
    /// `method template` with its parameter set to `parameter`, with the token.
    fn call(
        &mut self,
        method: &str,
        template: &str,
        parameter: &str,
        body: Option<&Value>,
    ) -> Response {
        self.operations
            .insert((template.to_owned(), method.to_ascii_lowercase()));
        self.api.call(method, &fill(template, parameter), body)
    }
}

/// A valid body for a documented operation (`{}` for one this test does not know).
fn valid_body(template: &str, method: &str) -> Option<Value> {
    match (template, method) {
        ("/v1/volumes", "post") => Some(json!({"name": VOLUME, "size": SIZE, "replicas": 1})),
        ("/v1/settings/{name}", "put") => Some(json!({"value": false})),
        ("/v1/volumes/{name}/expand", "post") => Some(json!({"size": SIZE * 2})),
        ("/v1/volumes/{name}/replica-count", "post") => Some(json!({"replicas": 1})),
        ("/v1/volumes/{name}/data-locality", "post") => {
            Some(json!({"data_locality": "best-effort"}))
        }
        ("/v1/nodes/{name}", "put") => Some(json!({"zone": "refused"})),
        ("/v1/recurring-jobs", "post") => Some(json!({"name": "refused-job", "spec": {
            "task": "snapshot", "cron": "0 3 * * *", "retain": 1}})),
        ("/v1/backup-targets/{name}", "put") => {
            Some(json!({"url": "file:///tmp/shorthorn-refused-target", "poll_interval": 60}))
        }
        ("/v1/backups", "post") => Some(json!({"volume": VOLUME, "target": "default"})),
        (_, "get" | "delete" | "head" | "options") => None,
        _ => Some(json!({})),
    }
}

/// Host and port of `nbd://HOST:PORT/NAME`.
fn nbd_address(endpoint: &str, name: &str) -> SocketAddr {
    let rest = endpoint
        .strip_prefix("nbd://")
        .unwrap_or_else(|| panic!("endpoint {endpoint:?} is not nbd://"));
    let (address, export) = rest.split_once('/').unwrap();
    assert_eq!(export, name, "endpoint {endpoint:?} names another export");
    address.parse().unwrap()
}

#[test]
fn every_documented_endpoint_requires_the_token_and_works() {
    let mut up = start_up();
    let api = up.api.clone();

    // The document, without a token.
    let doc = api.send("GET", OPENAPI, Auth::None, None, None).expect(200);
    let doc = doc.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not an OpenAPI 3 document: {doc:#}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"}),
        "the document declares bearer authentication"
    );
    assert!(
        doc["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some())),
        "the document requires the bearer token everywhere: {}",
        doc["security"]
    );
    let documented = documented_operations(&doc);
    assert!(!documented.is_empty(), "no operations in {doc:#}");
    for (path, method) in &documented {
        assert!(
            !needs_token(&doc, path, method)
                || doc["paths"][path][method]["responses"].get("401").is_some(),
            "{method} {path} does not document its 401"
        );
    }
    let open: Vec<_> = documented
        .iter()
        .filter(|(path, method)| !needs_token(&doc, path, method))
        .collect();
    assert!(
        open.iter().all(|(path, _)| path == "/v1/session"),
        "only the UI's login session may be open: {open:?}"
    );

    // Without the right token, every operation gets 401 and does nothing. Bodies are
    // valid (create this test's volume, switch auto_salvage off) so a missing check
    // would show.
    let settings_before = api.settings();
    let wrong = "Bearer 0123456789abcdef0123456789abcdef".to_owned();
    let basic = format!("Basic {}", api.token);
    let bare = api.token.clone();
    let bad_auth = [
        Auth::None,
        Auth::Header(&wrong),
        Auth::Header(&basic),
        Auth::Header(&bare),
        Auth::Header("Bearer "),
    ];
    let protected = documented
        .iter()
        .filter(|(p, m)| needs_token(&doc, p, m))
        .map(|(p, m)| (p.as_str(), m.as_str()))
        .chain([("/metrics", "get")]);
    for (template, method) in protected {
        let parameter = if template.starts_with("/v1/settings") {
            "auto_salvage"
        } else {
            VOLUME
        };
        let path = fill(template, parameter);
        let body = valid_body(template, method).map(|b| serde_json::to_vec(&b).unwrap());
        let content_type = body.as_ref().map(|_| "application/json");
        for auth in bad_auth {
            let response = api.send(
                &method.to_ascii_uppercase(),
                &path,
                auth,
                content_type,
                body.as_deref(),
            );
            assert_eq!(response.status, 401, "{auth:?} must be refused: {response}");
            response.message();
        }
    }
    assert_eq!(
        api.settings(),
        settings_before,
        "refused requests changed settings"
    );
    assert!(
        api.volumes().is_empty(),
        "refused requests created a volume"
    );
    let targets = api
        .call("GET", "/v1/backup-targets", None)
        .expect(200)
        .json();
    assert_eq!(targets, json!([]), "refused requests set a backup target");
    let backups = api.call("GET", "/v1/backups", None).expect(200).json();
    assert_eq!(backups, json!([]), "refused requests created a backup");

    let mut ops = Exercised {
        api: &api,
        operations: BTreeSet::new(),
    };

    // Settings: every one is there with its type; each can be set (to what it is).
    let settings = ops.call("GET", "/v1/settings", "", None).expect(200).json();
    let names: BTreeSet<&str> = settings
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        SETTINGS.iter().map(|(n, _)| *n).collect(),
        "settings: {settings}"
    );
    for (name, kind) in SETTINGS {
        let value = settings[name].clone();
        match kind {
            Kind::Bool => assert!(value.is_boolean(), "{name}: {value}"),
            Kind::Unsigned => assert!(value.is_u64(), "{name}: {value}"),
            Kind::Mode(modes) => assert!(
                value.as_str().is_some_and(|v| modes.contains(&v)),
                "{name}: {value}"
            ),
        }
        let after = ops
            .call(
                "PUT",
                "/v1/settings/{name}",
                name,
                Some(&json!({ "value": value })),
            )
            .expect(200)
            .json();
        assert_eq!(after, settings, "setting {name} to what it is");
    }
    assert_eq!(
        settings["minimal_available_percentage"], 0,
        "set by start_up"
    );
    assert_eq!(
        settings["replica_soft_anti_affinity"], true,
        "one node: replicas may share it"
    );
    // A change shows in the answer and in later reads, and nothing else changes.
    let changed = ops
        .call(
            "PUT",
            "/v1/settings/{name}",
            "stale_replica_timeout",
            Some(&json!({"value": 3600})),
        )
        .expect(200)
        .json();
    let mut expected = settings.clone();
    expected["stale_replica_timeout"] = json!(3600);
    assert_eq!(changed, expected);
    assert_eq!(api.settings(), expected);

    // Nodes: this one, ready, with its default disk under the data directory.
    let deadline = Instant::now() + STATE_TIMEOUT;
    let node = loop {
        let nodes = ops.call("GET", "/v1/nodes", "", None).expect(200).json();
        let nodes = nodes.as_array().unwrap().clone();
        assert_eq!(nodes.len(), 1, "one node: {nodes:?}");
        let node = nodes[0].clone();
        if node["status"]["ready"] == true {
            break node;
        }
        assert!(Instant::now() < deadline, "node never ready: {node:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(node["name"], NODE);
    assert_eq!(node["spec"]["address"], "127.0.0.1");
    let disk = &node["spec"]["disks"][0];
    assert_eq!(disk["name"], "default", "{node:#}");
    let disk_path = PathBuf::from(disk["path"].as_str().unwrap());
    assert!(
        disk_path.starts_with(up.data_dir().canonicalize().unwrap()) && disk_path.is_dir(),
        "the default disk is under the data directory: {node:#}"
    );
    // Zone and tags change; the disk list stays (it was not given).
    let updated = ops
        .call(
            "PUT",
            "/v1/nodes/{name}",
            NODE,
            Some(&json!({"zone": "zone-a", "tags": ["ssd"]})),
        )
        .expect(200)
        .json();
    assert_eq!(updated["spec"]["zone"], "zone-a", "{updated:#}");
    assert_eq!(updated["spec"]["tags"], json!(["ssd"]), "{updated:#}");
    assert_eq!(
        updated["spec"]["disks"], node["spec"]["disks"],
        "{updated:#}"
    );
    let relative = api.call(
        "PUT",
        &format!("/v1/nodes/{NODE}"),
        Some(&json!({"disks": [{"name": "d", "path": "rel", "allow_scheduling": true}]})),
    );
    assert_eq!(relative.status, 400, "{relative}");
    api.call("PUT", "/v1/nodes/no-such-node", Some(&json!({"zone": "z"})))
        .expect(404);
    let disk_status = &node["status"]["disks"][0];
    assert_eq!(disk_status["name"], "default", "{node:#}");
    assert!(
        disk_status["capacity"].as_u64().unwrap() > 0
            && disk_status["available"].as_u64().unwrap()
                <= disk_status["capacity"].as_u64().unwrap(),
        "disk space: {node:#}"
    );
    let one = ops
        .call("GET", "/v1/nodes/{name}", NODE, None)
        .expect(200)
        .json();
    assert_eq!(one["name"], NODE, "{one:#}");
    api.call("GET", "/v1/nodes/no-such-node", None).expect(404);
    // A node that is up is not forgotten; an unknown one is a 404.
    let up_node = ops
        .call("DELETE", "/v1/nodes/{name}", NODE, None)
        .expect(409)
        .message();
    assert!(up_node.contains("is up"), "{up_node}");
    api.call("DELETE", "/v1/nodes/no-such-node", None)
        .expect(404);

    // Create.
    let empty = ops.call("GET", "/v1/volumes", "", None).expect(200).json();
    assert_eq!(empty, json!([]));
    let created = ops
        .call(
            "POST",
            "/v1/volumes",
            "",
            Some(&json!({"name": VOLUME, "size": SIZE, "replicas": 1})),
        )
        .expect(201)
        .json();
    assert_eq!(created["name"], VOLUME, "{created:#}");
    let spec = &created["spec"];
    assert!(
        spec["size"] == SIZE
            && spec["replicas"] == 1
            && spec["node_selector"] == json!([])
            && spec["disk_selector"] == json!([])
            && spec["attached_node"].is_null(),
        "{created:#}"
    );

    // Get: its one replica runs on this node's disk; the volume is healthy.
    let detail = ops
        .call("GET", "/v1/volumes/{name}", VOLUME, None)
        .expect(200)
        .json();
    assert_eq!(detail["name"], VOLUME);
    assert!(detail["replicas"].is_array(), "{detail:#}");
    // (A replica that could not start, e.g. on a port another test took meanwhile, is
    // replaced; the failed one stays listed, no longer wanted.)
    let detail = up.wait_volume(VOLUME, "detached and healthy", |v| {
        v["status"]["state"] == "detached"
            && v["status"]["robustness"] == "healthy"
            && wanted_replicas(v).len() == 1
            && wanted_replicas(v)[0]["status"]["state"] == "running"
    });
    let replica = &wanted_replicas(&detail)[0];
    assert_eq!(replica["spec"]["volume"], VOLUME, "{detail:#}");
    assert_eq!(replica["spec"]["node"], NODE, "{detail:#}");
    assert_eq!(replica["spec"]["disk"], "default", "{detail:#}");
    let replica_dir = PathBuf::from(replica["spec"]["data_dir"].as_str().unwrap());
    assert!(
        replica_dir.starts_with(&disk_path) && replica_dir.is_dir(),
        "replica data under the disk: {detail:#}"
    );
    assert!(
        detail["status"]["endpoint"].is_null(),
        "no endpoint while detached: {detail:#}"
    );

    // List.
    let list = ops.call("GET", "/v1/volumes", "", None).expect(200).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], VOLUME);
    assert_eq!(list[0]["spec"]["size"], SIZE);

    // Metrics (not in the document; token required, checked above).
    let metrics = api.call("GET", "/metrics", None).expect(200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{metrics}"
    );
    let metrics = metrics.text();
    assert!(
        metrics.contains(&format!(
            "shorthorn_volume_size_bytes{{volume=\"{VOLUME}\"}} {SIZE}\n"
        )) && metrics.contains(&format!(
            "shorthorn_disk_capacity_bytes{{node=\"{NODE}\",disk=\"default\"}}"
        )),
        "metrics:\n{metrics}"
    );

    // Attach (default node, then again naming it: no change), serve over NBD.
    let attached = ops
        .call(
            "POST",
            "/v1/volumes/{name}/attach",
            VOLUME,
            Some(&json!({})),
        )
        .expect(200)
        .json();
    assert_eq!(attached["name"], VOLUME);
    assert_eq!(attached["spec"]["attached_node"], NODE, "{attached:#}");
    let again = ops
        .call(
            "POST",
            "/v1/volumes/{name}/attach",
            VOLUME,
            Some(&json!({ "node": NODE })),
        )
        .expect(200)
        .json();
    assert_eq!(again["spec"]["attached_node"], NODE, "{again:#}");
    let detail = up.wait_volume(VOLUME, "attached with an endpoint", |v| {
        v["status"]["state"] == "attached" && v["status"]["endpoint"].is_string()
    });
    let endpoint = detail["status"]["endpoint"].as_str().unwrap();
    assert!(
        endpoint.starts_with("nbd://127.0.0.1:"),
        "endpoint on the node's address: {detail:#}"
    );
    let nbd = nbd_address(endpoint, VOLUME);
    let mut stream = TcpStream::connect_timeout(&nbd, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {endpoint}: {e}"));
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).unwrap();
    assert_eq!(&magic, b"NBDMAGIC", "{endpoint} does not greet like NBD");
    drop(stream);

    // Grown while attached.
    let grown = ops
        .call(
            "POST",
            "/v1/volumes/{name}/expand",
            VOLUME,
            Some(&json!({ "size": SIZE * 2 })),
        )
        .expect(200)
        .json();
    assert_eq!(grown["spec"]["size"], SIZE * 2, "{grown:#}");
    let shrink = api.call(
        "POST",
        &format!("/v1/volumes/{VOLUME}/expand"),
        Some(&json!({ "size": SIZE })),
    );
    assert_eq!(shrink.status, 400, "{shrink}");

    // Recurring jobs: created, listed, selected by the volume, deleted.
    let job = ops
        .call(
            "POST",
            "/v1/recurring-jobs",
            "",
            Some(&json!({"name": "api-job", "spec": {
                "task": "snapshot", "cron": "0 3 * * *", "retain": 2, "groups": ["g1"]}})),
        )
        .expect(201)
        .json();
    assert_eq!(job["name"], "api-job", "{job:#}");
    let listed = ops
        .call("GET", "/v1/recurring-jobs", "", None)
        .expect(200)
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    let fetched = ops
        .call("GET", "/v1/recurring-jobs/{name}", "api-job", None)
        .expect(200)
        .json();
    assert!(fetched["status"]["next_run"].is_string() || fetched["status"]["next_run"].is_null());
    let selected = ops
        .call(
            "PUT",
            "/v1/volumes/{name}/recurring-jobs",
            VOLUME,
            Some(&json!({"jobs": ["api-job"], "groups": ["g1"]})),
        )
        .expect(200)
        .json();
    assert_eq!(
        selected["spec"]["recurring_jobs"],
        json!(["api-job"]),
        "{selected:#}"
    );
    let unknown_job = api.call(
        "PUT",
        &format!("/v1/volumes/{VOLUME}/recurring-jobs"),
        Some(&json!({"jobs": ["no-such-job"]})),
    );
    assert_eq!(unknown_job.status, 400, "{unknown_job}");
    ops.call("DELETE", "/v1/recurring-jobs/{name}", "api-job", None)
        .expect(204);
    api.call("GET", "/v1/recurring-jobs/api-job", None)
        .expect(404);

    // Engines: the attached volume's, `<volume>-e`, runs on this node with its one
    // replica in sync, serving the volume's endpoint; its control address answers.
    let detail = api
        .call("GET", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(200)
        .json();
    let endpoint = detail["status"]["endpoint"].as_str().unwrap().to_owned();
    let wanted = wanted_replicas(&detail);
    assert_eq!(wanted.len(), 1, "{detail:#}");
    let replica_name = wanted[0]["name"].as_str().unwrap().to_owned();
    let replica_address = format!("tcp://127.0.0.1:{}", wanted[0]["spec"]["port"]);
    let engine_name = format!("{VOLUME}-e");
    let engine = ops
        .call("GET", "/v1/engines/{name}", &engine_name, None)
        .expect(200)
        .json();
    assert_eq!(engine["name"], engine_name.as_str(), "{engine:#}");
    assert_eq!(engine["spec"]["volume"], VOLUME, "{engine:#}");
    assert_eq!(engine["spec"]["node"], NODE, "{engine:#}");
    let engine = up.wait_get(
        &format!("/v1/engines/{engine_name}"),
        "running with its replica in sync",
        |e| {
            e["status"]["state"] == "running"
                && e["status"]["address"].is_string()
                && e["status"]["replicas"][replica_address.as_str()]["mode"] == "RW"
        },
    );
    assert_eq!(
        engine["spec"]["replicas"],
        json!([replica_address]),
        "{engine:#}"
    );
    assert_eq!(engine["status"]["node"], NODE, "{engine:#}");
    assert_eq!(
        engine["status"]["endpoint"],
        endpoint.as_str(),
        "{engine:#}"
    );
    assert_eq!(engine["status"]["health"], "healthy", "{engine:#}");
    let control: SocketAddr = engine["status"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("engine address: {e}: {engine:#}"));
    assert_eq!(control.ip().to_string(), "127.0.0.1", "{engine:#}");
    TcpStream::connect_timeout(&control, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to the engine at {control}: {e}"));
    let engines = ops.call("GET", "/v1/engines", "", None).expect(200).json();
    let engines = engines.as_array().unwrap();
    assert_eq!(engines.len(), 1, "{engines:#?}");
    assert_eq!(engines[0]["name"], engine_name.as_str(), "{engines:#?}");
    assert_eq!(engines[0]["spec"], engine["spec"], "{engines:#?}");
    for unknown in ["no-such-vol-e", VOLUME] {
        let missing = api
            .call("GET", &format!("/v1/engines/{unknown}"), None)
            .expect(404);
        assert!(missing.message().contains(unknown), "{missing}");
    }

    // Replicas: the volume's wanted replica, running and RW in the engine.
    let replicas = ops.call("GET", "/v1/replicas", "", None).expect(200).json();
    let replicas = replicas.as_array().unwrap();
    assert!(
        replicas.iter().all(|r| r["spec"]["volume"] == VOLUME),
        "{replicas:#?}"
    );
    let listed: BTreeSet<&str> = replicas
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let of_volume: BTreeSet<&str> = detail["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, of_volume, "{replicas:#?}");
    let ours = replicas
        .iter()
        .find(|r| r["name"] == replica_name.as_str())
        .unwrap();
    assert_eq!(ours["spec"]["node"], NODE, "{ours:#}");
    assert_eq!(ours["spec"]["desire_running"], true, "{ours:#}");
    assert_eq!(ours["status"]["state"], "running", "{ours:#}");

    // Cluster: one manager on the embedded store, leading.
    let cluster = ops.call("GET", "/v1/cluster", "", None).expect(200).json();
    assert_eq!(
        cluster,
        json!({"node": NODE, "leader": NODE, "store": "embedded"}),
        "{cluster:#}"
    );

    // Events: the volume's creation is among them, and only its own with ?volume=.
    let events = ops.call("GET", "/v1/events", "", None).expect(200).json();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Created" && e["object"] == VOLUME),
        "{events:#}"
    );
    let api_events = api
        .send(
            "GET",
            &format!("/v1/events?volume={VOLUME}"),
            Auth::Token,
            None,
            None,
        )
        .expect(200)
        .json();
    assert!(
        api_events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["volume"] == VOLUME),
        "{api_events:#}"
    );

    // The watch, for a second: the objects of one kind, then `synced`, as events.
    ops.operations
        .insert(("/v1/watch".to_owned(), "get".to_owned()));
    let watched = api
        .send(
            "GET",
            "/v1/watch?kinds=volume&timeout_seconds=1",
            Auth::Token,
            None,
            None,
        )
        .expect(200);
    assert!(
        watched
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{watched}"
    );
    let text = watched.text();
    let put = text.find("event: put").unwrap_or_else(|| panic!("{text}"));
    let synced = text
        .find("event: synced")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        put < synced && text.contains(&format!("\"name\":\"{VOLUME}\"")),
        "{text}"
    );
    for bad in ["kinds=volumes", "timeout_seconds=0"] {
        let refused = api.send("GET", &format!("/v1/watch?{bad}"), Auth::Token, None, None);
        assert_eq!(refused.status, 400, "{refused}");
        refused.message();
    }

    // The volume's I/O rates, for two seconds: attached, samples of its engine.
    ops.operations
        .insert(("/v1/volumes/{name}/io".to_owned(), "get".to_owned()));
    let io = api
        .send(
            "GET",
            &format!("/v1/volumes/{VOLUME}/io?timeout_seconds=2"),
            Auth::Token,
            None,
            None,
        )
        .expect(200);
    let text = io.text();
    let sample = text
        .lines()
        .skip_while(|line| *line != "event: sample")
        .nth(1)
        .and_then(|line| line.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no sample in {text}"));
    let sample: Value = serde_json::from_str(sample).unwrap();
    assert!(
        sample["time"].is_string()
            && sample["read"]["iops"].is_number()
            && sample["write"]["latency_p99_seconds"].is_number(),
        "{sample:#}"
    );
    for (path, status) in [
        (format!("/v1/volumes/{VOLUME}/io?timeout_seconds=0"), 400),
        ("/v1/volumes/no-such-volume/io".to_owned(), 404),
    ] {
        let refused = api.send("GET", &path, Auth::Token, None, None);
        assert_eq!(refused.status, status, "{refused}");
        refused.message();
    }

    // The web UI's session: a wrong token refused; the right one gives an HttpOnly
    // SameSite=Strict cookie and a CSRF token; the cookie reads, but changes only with
    // the CSRF token; logout ends it.
    for method in ["get", "post", "delete"] {
        ops.operations
            .insert(("/v1/session".to_owned(), method.to_owned()));
    }
    let login = |token: &str| {
        let body = serde_json::to_vec(&json!({ "token": token })).unwrap();
        api.send(
            "POST",
            "/v1/session",
            Auth::None,
            Some("application/json"),
            Some(&body),
        )
    };
    let refused = login("0123456789abcdef0123456789abcdef");
    assert_eq!(refused.status, 401, "{refused}");
    assert!(refused.header("set-cookie").is_none(), "{refused}");
    let session = login(&api.token).expect(201);
    let cookie = session.header("set-cookie").unwrap_or_default().to_owned();
    assert!(
        cookie.starts_with("shorthorn_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let csrf = session.json()["csrf_token"].as_str().unwrap().to_owned();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |method: &str, path: &str, csrf: Option<&str>| {
        let mut headers = vec![("Cookie", cookie.as_str())];
        if let Some(csrf) = csrf {
            headers.push(("X-CSRF-Token", csrf));
        }
        crate::http::request(api.addr, method, path, &headers, None)
    };
    assert_eq!(
        with_cookie("GET", "/v1/session", None).expect(200).json()["csrf_token"],
        csrf.as_str()
    );
    with_cookie("GET", &format!("/v1/volumes/{VOLUME}"), None).expect(200);
    let no_csrf = with_cookie("POST", &format!("/v1/volumes/{VOLUME}/salvage"), None);
    assert_eq!(no_csrf.status, 403, "{no_csrf}");
    no_csrf.message();
    with_cookie("DELETE", "/v1/session", None).expect(204);
    let ended = with_cookie("GET", &format!("/v1/volumes/{VOLUME}"), None);
    assert_eq!(ended.status, 401, "{ended}");
    let ended = with_cookie("GET", "/v1/session", None);
    assert_eq!(ended.status, 401, "{ended}");

    // Backup targets: none; `default` set to a directory (the default poll interval,
    // then another), listed, and read by the leader (which creates the directory).
    let targets = ops
        .call("GET", "/v1/backup-targets", "", None)
        .expect(200)
        .json();
    assert_eq!(targets, json!([]));
    let backup_dir = up.dir.path().join("backups");
    let target_url = format!("file://{}", path_str(&backup_dir));
    let target = ops
        .call(
            "PUT",
            "/v1/backup-targets/{name}",
            "default",
            Some(&json!({ "url": target_url })),
        )
        .expect(200)
        .json();
    assert_eq!(target["name"], "default", "{target:#}");
    assert_eq!(
        target["spec"],
        json!({"url": target_url, "poll_interval": 300, "endpoint": null, "has_credentials": false}),
        "{target:#}"
    );
    let target = ops
        .call(
            "PUT",
            "/v1/backup-targets/{name}",
            "default",
            Some(&json!({"url": target_url, "poll_interval": 3600})),
        )
        .expect(200)
        .json();
    assert_eq!(
        target["spec"],
        json!({"url": target_url, "poll_interval": 3600, "endpoint": null, "has_credentials": false}),
        "{target:#}"
    );
    let targets = ops
        .call("GET", "/v1/backup-targets", "", None)
        .expect(200)
        .json();
    let targets = targets.as_array().unwrap();
    assert_eq!(targets.len(), 1, "{targets:#?}");
    assert_eq!(targets[0]["name"], "default", "{targets:#?}");
    assert_eq!(targets[0]["spec"], target["spec"], "{targets:#?}");
    let targets = up.wait_get("/v1/backup-targets", "read", |list| {
        list[0]["status"]["last_synced"].is_string()
    });
    let status = &targets[0]["status"];
    assert!(
        status["available"] == true && status["backups"] == 0 && status["message"] == "",
        "the target is read: {targets:#}"
    );
    assert!(backup_dir.is_dir(), "the target's directory is created");

    // Backups: none; one taken (pending at first; a new snapshot named after it), found
    // by name and by volume, completed into the target.
    let backups = ops.call("GET", "/v1/backups", "", None).expect(200).json();
    assert_eq!(backups, json!([]));
    let labels = json!({"purpose": "api-test"});
    let backup = ops
        .call(
            "POST",
            "/v1/backups",
            "",
            Some(&json!({"volume": VOLUME, "labels": labels})),
        )
        .expect(201)
        .json();
    let backup_name = backup["name"].as_str().unwrap().to_owned();
    assert!(
        backup_name.starts_with(&format!("{VOLUME}-b-")),
        "{backup:#}"
    );
    assert_eq!(
        backup["spec"],
        json!({"volume": VOLUME, "snapshot": null, "target": "default", "labels": labels,
               "delete_requested": false}),
        "{backup:#}"
    );
    assert_eq!(backup["status"]["state"], "pending", "{backup:#}");
    let fetched = ops
        .call("GET", "/v1/backups/{name}", &backup_name, None)
        .expect(200)
        .json();
    assert_eq!(fetched["name"], backup["name"], "{fetched:#}");
    assert_eq!(fetched["spec"], backup["spec"], "{fetched:#}");
    let listed = ops.call("GET", "/v1/backups", "", None).expect(200).json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [backup_name.as_str()], "{listed:#}");
    let by_volume = api
        .call("GET", &format!("/v1/backups?volume={VOLUME}"), None)
        .expect(200)
        .json();
    assert_eq!(by_volume.as_array().unwrap().len(), 1, "{by_volume:#}");
    assert_eq!(by_volume[0]["name"], backup["name"], "{by_volume:#}");
    let other = api
        .call("GET", "/v1/backups?volume=no-such-vol", None)
        .expect(200)
        .json();
    assert_eq!(other, json!([]), "filtered by another volume");
    let backup_path = format!("/v1/backups/{backup_name}");
    let done = up.wait_get(&backup_path, "completed (or failed)", |b| {
        matches!(b["status"]["state"].as_str(), Some("completed" | "error"))
    });
    let status = &done["status"];
    assert_eq!(status["state"], "completed", "the backup failed: {done:#}");
    let url = status["url"]
        .as_str()
        .unwrap_or_else(|| panic!("a completed backup without a URL: {done:#}"));
    assert!(
        url.starts_with(&target_url)
            && url.contains(&format!("backup={backup_name}"))
            && url.contains(&format!("volume={VOLUME}")),
        "backup URL {url:?}: {done:#}"
    );
    assert_eq!(status["snapshot"], backup_name.as_str(), "{done:#}");
    assert_eq!(status["volume_size"], SIZE * 2, "the grown size: {done:#}");
    assert!(status["completed"].is_string(), "{done:#}");
    assert_eq!(done["spec"], backup["spec"], "{done:#}");
    let record = backup_dir.join(format!("volumes/{VOLUME}/backups/{backup_name}.json"));
    assert!(record.is_file(), "no backup record at {}", record.display());

    // A backup that cannot complete (its snapshot does not exist) fails; while it is
    // there, the target cannot be deleted. Deleting it removes only its object.
    let failing = api
        .call(
            "POST",
            "/v1/backups",
            Some(&json!({"volume": VOLUME, "snapshot": "no-such-snap"})),
        )
        .expect(201)
        .json();
    let failing_name = failing["name"].as_str().unwrap().to_owned();
    let failed = up.wait_get(&format!("/v1/backups/{failing_name}"), "failed", |b| {
        b["status"]["state"] == "error"
    });
    assert!(
        failed["status"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a failed backup says why: {failed:#}"
    );
    let busy = api
        .call("DELETE", "/v1/backup-targets/default", None)
        .expect(409);
    assert!(busy.message().contains(&failing_name), "{busy}");
    let deleting = api
        .call("DELETE", &format!("/v1/backups/{failing_name}"), None)
        .expect(202)
        .json();
    assert_eq!(deleting["spec"]["delete_requested"], true, "{deleting:#}");
    up.wait_get("/v1/backups", "without the failed backup", |list| {
        list.as_array()
            .is_some_and(|l| l.iter().all(|b| b["name"] != failing_name.as_str()))
    });

    // The completed backup deleted: accepted, then gone from the target, then the object.
    let deleting = ops
        .call("DELETE", "/v1/backups/{name}", &backup_name, None)
        .expect(202)
        .json();
    assert_eq!(deleting["name"], backup_name.as_str(), "{deleting:#}");
    assert_eq!(deleting["spec"]["delete_requested"], true, "{deleting:#}");
    let left = up.wait_get("/v1/backups", "empty", |list| list == &json!([]));
    assert_eq!(left, json!([]));
    let gone = api.call("GET", &backup_path, None).expect(404);
    assert!(gone.message().contains(&backup_name), "{gone}");
    api.call("DELETE", &backup_path, None).expect(404);
    assert!(
        !record.exists(),
        "the backup record is left in the target: {}",
        record.display()
    );

    // The target, with no backups left, is deleted.
    let deleted = ops
        .call("DELETE", "/v1/backup-targets/{name}", "default", None)
        .expect(204);
    assert!(deleted.body.is_empty(), "204 with a body: {deleted}");
    let targets = api
        .call("GET", "/v1/backup-targets", None)
        .expect(200)
        .json();
    assert_eq!(targets, json!([]));
    let gone = api
        .call("DELETE", "/v1/backup-targets/default", None)
        .expect(404);
    assert!(gone.message().contains("default"), "{gone}");

    // Replica count kept at 1 (placeable, so 200); salvage of a healthy volume and
    // removal of a replica the volume does not have are refused.
    let kept = ops
        .call(
            "POST",
            "/v1/volumes/{name}/replica-count",
            VOLUME,
            Some(&json!({"replicas": 1})),
        )
        .expect(200)
        .json();
    assert_eq!(kept["spec"]["replicas"], 1, "{kept:#}");
    // Data locality on and off again (one node: its replica is already local), and a
    // mode it does not know refused.
    for mode in ["best-effort", "disabled"] {
        let set = ops
            .call(
                "POST",
                "/v1/volumes/{name}/data-locality",
                VOLUME,
                Some(&json!({"data_locality": mode})),
            )
            .expect(200)
            .json();
        assert_eq!(set["spec"]["data_locality"], mode, "{set:#}");
    }
    let unknown = ops
        .call(
            "POST",
            "/v1/volumes/{name}/data-locality",
            VOLUME,
            Some(&json!({"data_locality": "strict-local"})),
        )
        .expect(400);
    assert!(unknown.message().contains("strict-local"), "{unknown}");
    let healthy = ops
        .call("POST", "/v1/volumes/{name}/salvage", VOLUME, None)
        .expect(409);
    assert!(healthy.message().contains("not faulted"), "{healthy}");
    // Sync and activate are for standby volumes (docs/disaster-recovery.md; the
    // standby test drives them): an ordinary volume is refused, naming why.
    for operation in ["/v1/volumes/{name}/sync", "/v1/volumes/{name}/activate"] {
        let refused = ops
            .call("POST", operation, VOLUME, Some(&json!({})))
            .expect(409);
        assert!(
            refused.message().contains("not a standby volume"),
            "{operation}: {refused}"
        );
    }
    let stranger = ops
        .call(
            "DELETE",
            "/v1/volumes/{name}/replicas/{replica}",
            VOLUME,
            None,
        )
        .expect(404);
    assert!(stranger.message().contains("has no replica"), "{stranger}");

    // Detach: the engine stops, the endpoint goes.
    let detached = ops
        .call("POST", "/v1/volumes/{name}/detach", VOLUME, None)
        .expect(200)
        .json();
    assert!(detached["spec"]["attached_node"].is_null(), "{detached:#}");
    up.wait_volume(VOLUME, "detached without an endpoint", |v| {
        v["status"]["state"] == "detached" && v["status"]["endpoint"].is_null()
    });
    let engine = up.wait_get(&format!("/v1/engines/{engine_name}"), "stopped", |e| {
        e["status"]["state"] == "stopped"
    });
    assert!(
        engine["spec"]["node"].is_null() && engine["status"]["address"].is_null(),
        "a stopped engine has no node and no address: {engine:#}"
    );

    // Snapshots of the detached volume (on its replica): one taken, got, listed, reverted
    // to, removed and purged. The path fills every parameter alike, so the snapshot is
    // named like the volume.
    let snapshot = ops
        .call(
            "POST",
            "/v1/volumes/{name}/snapshots",
            VOLUME,
            Some(&json!({"name": VOLUME, "labels": {"k": "v"}})),
        )
        .expect(201)
        .json();
    assert_eq!(snapshot["id"], format!("{VOLUME}/{VOLUME}"), "{snapshot:#}");
    assert_eq!(snapshot["labels"], json!({"k": "v"}), "{snapshot:#}");
    let got = ops
        .call(
            "GET",
            "/v1/volumes/{name}/snapshots/{snapshot}",
            VOLUME,
            None,
        )
        .expect(200)
        .json();
    assert_eq!(got, snapshot);
    let listed = ops
        .call("GET", "/v1/volumes/{name}/snapshots", VOLUME, None)
        .expect(200)
        .json();
    assert!(listed.as_array().unwrap().contains(&snapshot), "{listed:#}");
    ops.call(
        "POST",
        "/v1/volumes/{name}/snapshots/{snapshot}/revert",
        VOLUME,
        None,
    )
    .expect(204);
    ops.call(
        "DELETE",
        "/v1/volumes/{name}/snapshots/{snapshot}",
        VOLUME,
        None,
    )
    .expect(204);
    ops.call("POST", "/v1/volumes/{name}/snapshot-purge", VOLUME, None)
        .expect(204);
    let listed = api
        .call("GET", &format!("/v1/volumes/{VOLUME}/snapshots"), None)
        .expect(200)
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != VOLUME),
        "removed and purged: {listed:#}"
    );

    // Delete: gone, with its replica's data and process.
    let deleted = ops
        .call("DELETE", "/v1/volumes/{name}", VOLUME, None)
        .expect(204);
    assert!(deleted.body.is_empty(), "204 with a body: {deleted}");
    let gone = api
        .call("GET", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(404);
    assert!(gone.message().contains(VOLUME), "{gone}");
    assert!(api.volumes().is_empty(), "deleted volume still listed");
    assert!(
        !replica_dir.exists(),
        "replica data left: {}",
        replica_dir.display()
    );
    assert!(
        processes_mentioning(path_str(&replica_dir)).is_empty(),
        "the replica process outlived its volume"
    );
    // Its engine and replicas went with it.
    api.call("GET", &format!("/v1/engines/{engine_name}"), None)
        .expect(404);
    let engines = api.call("GET", "/v1/engines", None).expect(200).json();
    assert_eq!(engines, json!([]), "engines left");
    let replicas = api.call("GET", "/v1/replicas", None).expect(200).json();
    assert_eq!(replicas, json!([]), "replicas left");

    // Every documented operation was exercised, and nothing else.
    let exercised = ops.operations;
    let untested: Vec<_> = documented.difference(&exercised).collect();
    let undocumented: Vec<_> = exercised.difference(&documented).collect();
    up.stop();
    assert!(
        untested.is_empty() && undocumented.is_empty(),
        "documented but not tested here (add them to this test): {untested:?}; \
         tested but not documented: {undocumented:?}"
    );
}
