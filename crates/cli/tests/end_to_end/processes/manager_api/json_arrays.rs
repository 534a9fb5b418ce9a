//! A JSON array is not an object: create, attach, setting, backup target and backup
//! bodies given as arrays get 400 (serde would otherwise read them as the struct's
//! fields in order).

use super::*;

#[test]
fn json_arrays_are_not_accepted_as_objects() {
    let mut up = start_up();
    let api = up.api.clone();
    api.create(VOLUME, 1);
    let settings = api.settings();
    assert_eq!(settings["auto_salvage"], true);

    // Each is the positional form of a valid object body.
    let cases = [
        case(
            "POST",
            "/v1/volumes",
            &format!(r#"["array-vol",{SIZE},1]"#),
            400,
            "",
        ),
        case(
            "POST",
            &format!("/v1/volumes/{VOLUME}/attach"),
            "[]",
            400,
            "",
        ),
        case(
            "POST",
            &format!("/v1/volumes/{VOLUME}/attach"),
            &format!(r#"["{NODE}"]"#),
            400,
            "",
        ),
        case("PUT", "/v1/settings/auto_salvage", "[false]", 400, ""),
        case(
            "PUT",
            "/v1/backup-targets/default",
            r#"["file:///tmp/shorthorn-array-target",60]"#,
            400,
            "",
        ),
        case(
            "PUT",
            "/v1/backup-targets/default",
            r#"["file:///tmp/shorthorn-array-target"]"#,
            400,
            "",
        ),
        case("POST", "/v1/backups", &format!(r#"["{VOLUME}"]"#), 400, ""),
        case(
            "POST",
            "/v1/backups",
            &format!(r#"["{VOLUME}",null,"default",{{}}]"#),
            400,
            "",
        ),
    ];
    let mut problems: Vec<String> = cases.iter().filter_map(|c| c.check(&api)).collect();
    let names = api.volume_names();
    if names != BTreeSet::from([VOLUME.to_owned()]) {
        problems.push(format!("array bodies created volumes: {names:?}"));
    }
    let targets = api
        .call("GET", "/v1/backup-targets", None)
        .expect(200)
        .json();
    if targets != json!([]) {
        problems.push(format!("array bodies set backup targets: {targets:#}"));
    }
    let backups = api.call("GET", "/v1/backups", None).expect(200).json();
    if backups != json!([]) {
        problems.push(format!("array bodies created backups: {backups:#}"));
    }
    if api.settings() != settings {
        problems.push(format!(
            "array bodies changed settings: {} -> {}",
            settings,
            api.settings()
        ));
    }

    // Clean up whatever they did.
    for name in api.volume_names() {
        api.call("POST", &format!("/v1/volumes/{name}/detach"), None)
            .expect(200);
        api.call("DELETE", &format!("/v1/volumes/{name}"), None)
            .expect(204);
    }
    up.stop();
    assert!(
        problems.is_empty(),
        "{} array body(ies) accepted:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
