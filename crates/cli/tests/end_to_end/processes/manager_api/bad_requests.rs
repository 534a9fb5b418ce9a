//! Bad requests get a 4xx with a JSON `message` and change nothing: malformed JSON,
//! wrong content types, wrong types, unknown, duplicate and missing fields, bad volume
//! names, sizes and replica counts, unknown nodes; unknown volumes and settings get
//! 404, an existing volume 409, deleting an attached volume 409; setting values of the
//! wrong type 400. Backup target bodies: wrong types, unknown fields, bad URLs and
//! poll intervals, bad target names get 400. Backup bodies: wrong types, unknown
//! fields, bad volume, snapshot and target names get 400; an unknown volume 404, a
//! detached one 409, an unknown target (of an attached volume) 404. Unknown engines,
//! backup targets and backups get 404.
//!
//! Every other field of every body has a rule, and breaking it is a 400 naming the
//! field: selectors, job and group lists, labels (keys, values, count), cron length,
//! retain range, disk count, tags, reserved bytes, URLs with whitespace, settings'
//! ranges.

use super::*;

#[test]
fn bad_requests_get_4xx_with_a_message_and_change_nothing() {
    let mut up = start_up();
    let api = up.api.clone();
    api.create(VOLUME, 1);
    let settings = api.settings();
    let volumes = "/v1/volumes";
    let attach = format!("/v1/volumes/{VOLUME}/attach");
    let size = SIZE.to_string();
    let create = |rest: &str| format!(r#"{{"name":"bad-vol","size":{size}{rest}}}"#);
    let named = |name: &str| json!({"name": name, "size": SIZE}).to_string();
    let sized = |size: &str| format!(r#"{{"name":"bad-vol","size":{size}}}"#);

    // POST /v1/volumes: (body, what the message mentions); all 400.
    let bad_creates: Vec<(String, &str)> = vec![
        // Not JSON, or not an object.
        (r#"{"name":"bad-vol","size":4096"#.into(), "json"),
        ("hello".into(), "json"),
        (String::new(), ""),
        (format!("{} x", create("")), "trailing"),
        (format!("\u{feff}{}", create("")), ""),
        ("null".into(), ""),
        (r#""bad-vol""#.into(), ""),
        ("4096".into(), ""),
        ("true".into(), ""),
        // Wrong types.
        (r#"{"name":5,"size":4096}"#.into(), "name"),
        (r#"{"name":null,"size":4096}"#.into(), "name"),
        (sized(r#""4096""#), "size"),
        (sized("-4096"), "size"),
        (sized("4096.5"), "size"),
        (sized("null"), "size"),
        (sized("18446744073709551616"), "size"),
        (create(r#","replicas":"1""#), "replicas"),
        (create(r#","replicas":-1"#), "replicas"),
        (create(r#","replicas":true"#), "replicas"),
        (create(r#","node_selector":"a""#), "node_selector"),
        (create(r#","disk_selector":[1]"#), "disk_selector"),
        (create(r#","from_backup":5"#), "from_backup"),
        // Backups to restore from that are not backups, or cannot be read.
        (create(r#","from_backup":"not a url""#), "from_backup"),
        (
            create(r#","from_backup":"file:///nonexistent/target""#),
            "backup=NAME",
        ),
        (
            create(r#","from_backup":"file:///nonexistent/t?backup=b&volume=v""#),
            "from_backup",
        ),
        (
            create(r#","from_backup":"file:///t?backup=../x&volume=v""#),
            "backup",
        ),
        (
            create(r#","from_backup":"file:///etc/t?backup=b&volume=v""#),
            "--file-target-root",
        ),
        // Unknown, duplicate and missing fields.
        (create(r#","bogus":1"#), "bogus"),
        (create(r#","Name":"x""#), "Name"),
        (create(r#","spec":{}"#), "spec"),
        (create(r#","name":"other-vol""#), "duplicate"),
        ("{}".into(), "missing"),
        (r#"{"name":"bad-vol"}"#.into(), "size"),
        (format!(r#"{{"size":{size}}}"#), "name"),
        // Bad names.
        (named(""), "name"),
        (named("a/b"), "name"),
        (named("a\\b"), "name"),
        (named(".."), "name"),
        (named("a..b"), "name"),
        (named(".hidden"), "name"),
        (named("-dash"), "name"),
        (named("with space"), "name"),
        (named("tab\there"), "name"),
        (named("nul\u{0}here"), "name"),
        (named("ünïcödé"), "name"),
        (named(&"n".repeat(64)), "name"),
        // Bad sizes and replica counts.
        (sized("0"), "size"),
        (sized("4095"), "4096"),
        (sized("4097"), "4096"),
        (sized("1000000"), "4096"),
        (sized("18446744073709551615"), "4096"),
        (create(r#","replicas":0"#), "replicas"),
        (create(r#","replicas":17"#), "replicas"),
        (create(r#","replicas":1000000"#), "replicas"),
    ];
    // POST /v1/volumes/VOLUME/attach; all 400.
    let bad_attaches: Vec<(&str, &str)> = vec![
        (r#"{"node":"#, "json"),
        (r#"{"node":5}"#, "node"),
        (r#"{"node":["test-node"]}"#, "node"),
        (r#"{"bogus":1}"#, "bogus"),
        (r#"{"node":"no-such-node"}"#, "no-such-node"),
        (r#"{"node":""}"#, "node"),
        ("", ""),
        ("null", ""),
    ];
    // PUT /v1/settings/auto_salvage; all 400.
    let bad_sets: Vec<(&str, &str)> = vec![
        ("{}", "value"),
        (r#"{"value":true,"x":1}"#, "x"),
        (r#"{"value":"#, "json"),
        ("true", ""),
    ];

    // PUT /v1/backup-targets/bad-target: (body, what the message mentions); all 400.
    let backups = up.dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    std::os::unix::fs::symlink("/etc", backups.join("to-etc")).unwrap();
    let url = |rest: &str| format!(r#"{{"url":"file:///tmp/shorthorn-bad-target"{rest}}}"#);
    let bad_targets: Vec<(String, &str)> = vec![
        // Not JSON, or not an object.
        (r#"{"url":"#.into(), "json"),
        (
            r#"["file:///tmp/shorthorn-bad-target",60]"#.into(),
            "object",
        ),
        ("[]".into(), "object"),
        (r#""file:///tmp/shorthorn-bad-target""#.into(), "object"),
        ("null".into(), "object"),
        // Wrong types.
        (r#"{"url":5}"#.into(), "url"),
        (r#"{"url":null}"#.into(), "url"),
        (r#"{"url":["file:///tmp/x"]}"#.into(), "url"),
        (r#"{"url":{"path":"/tmp/x"}}"#.into(), "url"),
        (url(r#","poll_interval":"60""#), "poll_interval"),
        (url(r#","poll_interval":-1"#), "poll_interval"),
        (url(r#","poll_interval":1.5"#), "poll_interval"),
        (url(r#","poll_interval":true"#), "poll_interval"),
        (url(r#","poll_interval":[60]"#), "poll_interval"),
        (
            url(r#","poll_interval":18446744073709551616"#),
            "poll_interval",
        ),
        // Unknown, duplicate and missing fields.
        (url(r#","bogus":1"#), "bogus"),
        (url(r#","URL":"file:///tmp/y""#), "URL"),
        (url(r#","name":"other""#), "unknown field `name`"),
        (url(r#","url":"file:///tmp/y""#), "duplicate"),
        ("{}".into(), "url"),
        (r#"{"poll_interval":60}"#.into(), "url"),
        // Bad URLs.
        (r#"{"url":"not a url"}"#.into(), "not a url"),
        (r#"{"url":""}"#.into(), "not a url"),
        (r#"{"url":"/tmp/backups"}"#.into(), "not a url"),
        (r#"{"url":"ftp://x"}"#.into(), "ftp"),
        (r#"{"url":"http://example.com/backups"}"#.into(), "http"),
        (r#"{"url":"file://relative/path"}"#.into(), "file:///"),
        (r#"{"url":"s3://"}"#.into(), "bucket"),
        (r#"{"url":"nfs:///export"}"#.into(), "host"),
        // Targets this node's policy does not allow: outside its file target roots
        // (DATA_DIR/backups by default), through a symlink out of one, or an NFS host
        // not listed.
        (
            r#"{"url":"file:///etc/shorthorn-target"}"#.into(),
            "--file-target-root",
        ),
        (
            json!({ "url": format!("file://{}/../escape", path_str(&backups)) }).to_string(),
            "--file-target-root",
        ),
        (
            json!({ "url": format!("file://{}/to-etc/x", path_str(&backups)) }).to_string(),
            "--file-target-root",
        ),
        (
            r#"{"url":"nfs://nfs.example/export"}"#.into(),
            "--nfs-target-host",
        ),
        (
            json!({ "url": format!("file:///tmp/{}", "a".repeat(2000)) }).to_string(),
            "longer than 1024",
        ),
        // Bad poll intervals.
        (url(r#","poll_interval":0"#), "poll_interval"),
        (url(r#","poll_interval":86401"#), "poll_interval"),
        (url(r#","poll_interval":100000"#), "poll_interval"),
        (
            url(r#","poll_interval":18446744073709551615"#),
            "poll_interval",
        ),
    ];
    // PUT /v1/backup-targets/NAME with a valid body: bad names; all 400.
    let bad_target_names: Vec<(String, &str)> = vec![
        (".hidden".into(), ".hidden"),
        ("-dash".into(), "-dash"),
        ("a..b".into(), "a..b"),
        ("with%20space".into(), "with space"),
        ("bad%2Fname".into(), "separator"),
        ("%C3%BCn%C3%AF".into(), "name"),
        ("n".repeat(64), "63"),
    ];
    // POST /v1/backups: (body, what the message mentions); all 400.
    let backup = |rest: &str| format!(r#"{{"volume":"{VOLUME}"{rest}}}"#);
    let for_volume = |name: &str| json!({ "volume": name }).to_string();
    let bad_backups: Vec<(String, &str)> = vec![
        // Not JSON, or not an object.
        (r#"{"volume":"#.into(), "json"),
        (format!(r#"["{VOLUME}"]"#), "object"),
        (format!(r#"["{VOLUME}",null,"default",{{}}]"#), "object"),
        (format!(r#""{VOLUME}""#), "object"),
        // Wrong types.
        (r#"{"volume":5}"#.into(), "volume"),
        (r#"{"volume":null}"#.into(), "volume"),
        (format!(r#"{{"volume":["{VOLUME}"]}}"#), "volume"),
        (backup(r#","snapshot":5"#), "snapshot"),
        (backup(r#","snapshot":["s"]"#), "snapshot"),
        (backup(r#","target":true"#), "target"),
        (backup(r#","target":{"name":"default"}"#), "target"),
        (backup(r#","labels":["a"]"#), "labels"),
        (backup(r#","labels":"a=b""#), "labels"),
        (backup(r#","labels":{"a":1}"#), "labels"),
        (backup(r#","labels":{"a":null}"#), "labels"),
        // Unknown, duplicate and missing fields.
        (backup(r#","bogus":1"#), "bogus"),
        (backup(r#","Volume":"x""#), "Volume"),
        (backup(r#","name":"my-backup""#), "unknown field `name`"),
        (backup(r#","url":"file:///tmp/x""#), "unknown field `url`"),
        (backup(r#","volume":"other-vol""#), "duplicate"),
        ("{}".into(), "volume"),
        (r#"{"snapshot":"s","target":"default"}"#.into(), "volume"),
        // Bad volume names.
        (for_volume(""), "name"),
        (for_volume("a/b"), "name"),
        (for_volume(".."), "name"),
        (for_volume(".hidden"), "name"),
        (for_volume("-dash"), "name"),
        (for_volume("with space"), "name"),
        (for_volume("nul\u{0}here"), "name"),
        (for_volume("ünïcödé"), "name"),
        (for_volume(&"n".repeat(64)), "name"),
        // Bad snapshot and target names.
        (backup(r#","snapshot":"""#), "snapshot"),
        (backup(r#","snapshot":"a/b""#), "snapshot"),
        (backup(r#","snapshot":"..""#), "snapshot"),
        (backup(r#","target":"""#), "target"),
        (backup(r#","target":"a/b""#), "target"),
        (backup(r#","target":"file:///tmp/x""#), "target"),
        (backup(r#","target":".hidden""#), "target"),
    ];

    let mut cases = Vec::new();
    for (body, mentions) in &bad_creates {
        cases.push(case("POST", volumes, body, 400, mentions));
    }
    for (body, mentions) in bad_attaches {
        cases.push(case("POST", &attach, body, 400, mentions));
    }
    for (body, mentions) in bad_sets {
        cases.push(case(
            "PUT",
            "/v1/settings/auto_salvage",
            body,
            400,
            mentions,
        ));
    }
    let target_path = "/v1/backup-targets/bad-target";
    for (body, mentions) in &bad_targets {
        cases.push(case("PUT", target_path, body, 400, mentions));
    }
    let valid_target = url("");
    for (name, mentions) in &bad_target_names {
        cases.push(case(
            "PUT",
            &format!("/v1/backup-targets/{name}"),
            &valid_target,
            400,
            mentions,
        ));
    }
    for (body, mentions) in &bad_backups {
        cases.push(case("POST", "/v1/backups", body, 400, mentions));
    }
    // A backup of an unknown volume, or of one that is not attached (whatever the
    // target; an unknown target of an attached volume is checked below).
    cases.push(case(
        "POST",
        "/v1/backups",
        &for_volume("no-such-vol"),
        404,
        "no-such-vol",
    ));
    for body in [
        for_volume(VOLUME),
        backup(r#","snapshot":"snap-1","target":"default","labels":{"a":"b"}"#),
    ] {
        cases.push(case("POST", "/v1/backups", &body, 409, "not attached"));
    }
    // Not valid UTF-8; no or another content type.
    cases.push(Case {
        body: b"{\"name\":\"bad\xff\",\"size\":4096}".to_vec(),
        ..case("POST", volumes, "", 400, "")
    });
    cases.push(Case {
        body: b"{\"volume\":\"bad\xff\"}".to_vec(),
        ..case("POST", "/v1/backups", "", 400, "")
    });
    cases.push(Case {
        body: b"{\"url\":\"file:///tmp/bad\xff\"}".to_vec(),
        ..case("PUT", target_path, "", 400, "")
    });
    let no_type = [
        ("POST", volumes, create("")),
        ("POST", attach.as_str(), "{}".into()),
        (
            "PUT",
            "/v1/settings/auto_salvage",
            r#"{"value":true}"#.into(),
        ),
        ("PUT", target_path, valid_target.clone()),
        ("POST", "/v1/backups", for_volume(VOLUME)),
    ];
    for (method, path, body) in &no_type {
        for content_type in [None, Some("text/plain")] {
            cases.push(Case {
                content_type,
                ..case(method, path, body, 400, "content-type")
            });
        }
    }
    // An existing volume.
    let again = json!({"name": VOLUME, "size": SIZE}).to_string();
    let other = json!({"name": VOLUME, "size": 2 * SIZE, "replicas": 2}).to_string();
    cases.push(case("POST", volumes, &again, 409, VOLUME));
    cases.push(case("POST", volumes, &other, 409, VOLUME));
    // Node fields: names' rule for the zone and tags, plain absolute disk paths.
    let node_path = format!("/v1/nodes/{NODE}");
    let long_zone = json!({"zone": "z".repeat(100_000)}).to_string();
    let many_tags =
        json!({"tags": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()}).to_string();
    let bad_disk = |path: &str| {
        json!({"disks": [{"name": "d", "path": path, "allow_scheduling": true}]}).to_string()
    };
    let long_path = format!("/{}", "p".repeat(5000));
    let bad_nodes: Vec<(String, &str)> = vec![
        (long_zone, "zone"),
        (json!({"zone": "a/b"}).to_string(), "zone"),
        (json!({"tags": ["a/b"]}).to_string(), "tags"),
        (json!({"tags": ["\u{0}"]}).to_string(), "tags"),
        (json!({"tags": ["x", "x"]}).to_string(), "twice"),
        (many_tags, "tags"),
        (bad_disk("/"), "root"),
        (bad_disk("/srv/../etc"), ".."),
        (bad_disk("/srv/\u{0}x"), "control"),
        (bad_disk(&long_path), "4096"),
    ];
    for (body, mentions) in &bad_nodes {
        cases.push(case("PUT", &node_path, body, 400, mentions));
    }
    // Every other field of every body: a length limit, a character rule, a range; the
    // message names the field.
    let names_33: Vec<String> = (0..33).map(|i| format!("n{i}")).collect();
    let labels_33: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let job = |spec: Value| json!({"name": "bad-job", "spec": spec}).to_string();
    let spec = |field: &str, value: Value| {
        let mut spec = json!({"task": "snapshot", "cron": "0 * * * *", "retain": 1});
        spec[field] = value;
        spec
    };
    let disk = |fields: Value| {
        let mut disk = json!({"name": "d", "path": "/srv/d", "allow_scheduling": true});
        for (key, value) in fields.as_object().unwrap() {
            disk[key] = value.clone();
        }
        json!({ "disks": [disk] }).to_string()
    };
    let many_disks: Vec<Value> = (0..65)
        .map(|i| json!({"name": format!("d{i}"), "path": format!("/srv/d{i}"), "allow_scheduling": true}))
        .collect();
    let jobs_path = format!("/v1/volumes/{VOLUME}/recurring-jobs");
    let expand_path = format!("/v1/volumes/{VOLUME}/expand");
    let every_field: Vec<(&str, &str, String, &str)> = vec![
        (
            "POST",
            volumes,
            create(r#","node_selector":["a/b"]"#),
            "node_selector[0]",
        ),
        (
            "POST",
            volumes,
            create(r#","disk_selector":["ssd","ssd"]"#),
            "twice",
        ),
        (
            "POST",
            volumes,
            json!({"name": "bad-vol", "size": SIZE, "node_selector": names_33}).to_string(),
            "node_selector",
        ),
        (
            "POST",
            volumes,
            create(r#","recurring_jobs":[""]"#),
            "recurring_jobs[0]",
        ),
        (
            "POST",
            volumes,
            create(r#","recurring_job_groups":["-g"]"#),
            "recurring_job_groups[0]",
        ),
        (
            "POST",
            volumes,
            create(r#","from_backup":"file:///t?backup=a b""#),
            "from_backup",
        ),
        (
            "POST",
            volumes,
            create(r#","from_backup":"""#),
            "from_backup",
        ),
        (
            "PUT",
            &jobs_path,
            r#"{"jobs":["a\u0000"]}"#.into(),
            "jobs[0]",
        ),
        (
            "PUT",
            &jobs_path,
            json!({"groups": names_33}).to_string(),
            "groups",
        ),
        ("POST", &expand_path, r#"{"size":4097}"#.into(), "size"),
        ("POST", &expand_path, r#"{"size":0}"#.into(), "size"),
        ("POST", &attach, r#"{"node":"a/b"}"#.into(), "node"),
        (
            "POST",
            "/v1/backups",
            backup(r#","labels":{"a/b":"v"}"#),
            "labels",
        ),
        (
            "POST",
            "/v1/backups",
            backup(r#","labels":{"k":"line\nbreak"}"#),
            "labels.k",
        ),
        (
            "POST",
            "/v1/backups",
            backup(&format!(r#","labels":{{"k":"{}"}}"#, "v".repeat(257))),
            "labels.k",
        ),
        (
            "POST",
            "/v1/backups",
            json!({"volume": VOLUME, "labels": labels_33}).to_string(),
            "labels",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("retain", json!(0))),
            "spec.retain",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("retain", json!(1001))),
            "spec.retain",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("cron", json!("* ".repeat(100)))),
            "spec.cron",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("cron", json!("0 * * *\n *"))),
            "spec.cron",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("groups", json!(["a/b"]))),
            "spec.groups[0]",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("target", json!("a b"))),
            "spec.target",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            job(spec("labels", json!({"k": "\u{7}"}))),
            "spec.labels.k",
        ),
        (
            "POST",
            "/v1/recurring-jobs",
            json!({"name": "a/b", "spec": spec("retain", json!(1))}).to_string(),
            "name",
        ),
        (
            "PUT",
            &node_path,
            json!({ "disks": many_disks }).to_string(),
            "disks",
        ),
        (
            "PUT",
            &node_path,
            disk(json!({"tags": ["a b"]})),
            "disks[0].tags[0]",
        ),
        (
            "PUT",
            &node_path,
            disk(json!({"reserved": 1u64 << 61})),
            "disks[0].reserved",
        ),
        (
            "PUT",
            &node_path,
            disk(json!({"name": ""})),
            "disks[0].name",
        ),
        (
            "PUT",
            "/v1/settings/over_provisioning_percentage",
            r#"{"value":10001}"#.into(),
            "over_provisioning_percentage",
        ),
        (
            "PUT",
            "/v1/settings/engine_replica_timeout",
            r#"{"value":0}"#.into(),
            "engine_replica_timeout",
        ),
        (
            "PUT",
            "/v1/settings/engine_replica_timeout",
            r#"{"value":301}"#.into(),
            "engine_replica_timeout",
        ),
        (
            "PUT",
            "/v1/settings/slow_replica_ratio",
            r#"{"value":1001}"#.into(),
            "slow_replica_ratio",
        ),
        (
            "PUT",
            "/v1/settings/slow_replica_window",
            r#"{"value":0}"#.into(),
            "slow_replica_window",
        ),
    ];
    for (method, path, body, mentions) in &every_field {
        cases.push(case(method, path, body, 400, mentions));
    }
    // Unknown volumes, endpoints and settings.
    let unknown = [
        ("GET", "/v1/volumes/no-such-vol", "", "no-such-vol"),
        ("DELETE", "/v1/volumes/no-such-vol", "", "no-such-vol"),
        (
            "POST",
            "/v1/volumes/no-such-vol/attach",
            "{}",
            "no-such-vol",
        ),
        ("POST", "/v1/volumes/no-such-vol/detach", "", "no-such-vol"),
        ("GET", "/v1/volumes/bad%2Fname", "", ""),
        ("GET", "/v1/no-such-endpoint", "", ""),
        (
            "PUT",
            "/v1/settings/no_such_setting",
            r#"{"value":1}"#,
            "no_such_setting",
        ),
        (
            "PUT",
            "/v1/settings/Auto_Salvage",
            r#"{"value":true}"#,
            "Auto_Salvage",
        ),
        ("GET", "/v1/engines/no-such-vol-e", "", "no-such-vol-e"),
        (
            "DELETE",
            "/v1/backup-targets/no-such-target",
            "",
            "no-such-target",
        ),
        ("GET", "/v1/backups/no-such-backup", "", "no-such-backup"),
        ("DELETE", "/v1/backups/no-such-backup", "", "no-such-backup"),
    ];
    for (method, path, body, mentions) in unknown {
        cases.push(case(method, path, body, 404, mentions));
    }
    // Setting values of the wrong type.
    for (name, kind) in SETTINGS {
        let wrong: &[&str] = match kind {
            Kind::Bool => &["1", "0", r#""true""#, "null", "[]", "{}"],
            Kind::Unsigned => &[
                "true",
                r#""1""#,
                "-1",
                "1.5",
                "null",
                "[1]",
                "18446744073709551616",
            ],
            Kind::Mode(_) => &[r#""no-such-mode""#, r#""""#, "1", "true", "null", "[]"],
        };
        for value in wrong {
            cases.push(case(
                "PUT",
                &format!("/v1/settings/{name}"),
                &format!(r#"{{"value":{value}}}"#),
                400,
                name,
            ));
        }
    }

    let mut problems: Vec<String> = cases.iter().filter_map(|c| c.check(&api)).collect();

    // None of that changed anything.
    if api.settings() != settings {
        problems.push(format!(
            "bad requests changed settings: {} -> {}",
            settings,
            api.settings()
        ));
    }
    let names = api.volume_names();
    if names != BTreeSet::from([VOLUME.to_owned()]) {
        problems.push(format!("bad requests created volumes: {names:?}"));
    }
    let volume = api
        .call("GET", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(200)
        .json();
    if !volume["spec"]["attached_node"].is_null() {
        problems.push(format!("bad attach requests attached it: {volume:#}"));
    }

    // Attached, a backup still needs a target that exists (`default` unless named).
    api.call("POST", &attach, Some(&json!({}))).expect(200);
    let unknown_targets = [
        (for_volume(VOLUME), "default"),
        (backup(r#","target":"no-such-target""#), "no-such-target"),
        (
            backup(r#","target":"Default","snapshot":"snap-1""#),
            "Default",
        ),
    ];
    for (body, mentions) in &unknown_targets {
        problems.extend(case("POST", "/v1/backups", body, 404, mentions).check(&api));
    }
    let targets = api
        .call("GET", "/v1/backup-targets", None)
        .expect(200)
        .json();
    if targets != json!([]) {
        problems.push(format!("bad requests set backup targets: {targets:#}"));
    }
    let backups = api.call("GET", "/v1/backups", None).expect(200).json();
    if backups != json!([]) {
        problems.push(format!("bad requests created backups: {backups:#}"));
    }

    // An attached volume cannot be deleted; detached, it can.
    let refused = api
        .call("DELETE", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(409);
    assert!(
        refused.message().contains("detach"),
        "the message says what to do: {refused}"
    );
    assert_eq!(api.volume_names(), BTreeSet::from([VOLUME.to_owned()]));
    api.call("POST", &format!("/v1/volumes/{VOLUME}/detach"), None)
        .expect(200);
    api.call("DELETE", &format!("/v1/volumes/{VOLUME}"), None)
        .expect(204);
    assert!(api.volumes().is_empty());

    up.stop();
    assert!(
        problems.is_empty(),
        "{} bad request(s) handled wrongly:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
