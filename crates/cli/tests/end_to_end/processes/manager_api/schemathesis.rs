//! `schemathesis` (PyPI; `scripts/setup.sh` installs it), run against the document
//! with the token, and against the node agent's document with the node credential, finds no server error (5xx), no response off the document (status,
//! content type, headers, schema), no accepted invalid data and no ignored auth. The
//! `positive_data_acceptance` check is left out: the document does not state the name,
//! size, replica and node rules the API enforces, so schemathesis builds "valid"
//! requests the API rightly rejects. Afterwards the manager still runs, nothing
//! panicked, and every volume it created can be detached and deleted. (While JSON
//! arrays are accepted as objects, some runs find that too: `negative_data_rejection`,
//! "was object, became array".)

use super::*;

/// The schemathesis command, or a failure with an install hint.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for program in ["schemathesis", "st"] {
            let candidate = dir.join(program);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "`schemathesis` is not installed; this test runs it against the API. Install it \
         with `python3 -m pip install schemathesis` (scripts/setup.sh does)."
    );
}

/// The streams, which schemathesis leaves out: the watch and a volume's I/O rates.
const WATCH: &str = "/v1/watch";
const IO: &str = "/v1/volumes/{name}/io";

/// What one schemathesis run over one document found.
struct SchemathesisRun {
    /// The document's path on the API.
    document: &'static str,
    /// Its output and exit code.
    outcome: crate::common::Outcome,
}

/// Runs schemathesis over the document at `document`, calling with `token`, and
/// checks it tested every operation the document has.
fn run_schemathesis(up: &Node, document: &'static str, token: &str) -> SchemathesisRun {
    let url = up.url();
    let report_dir = up
        .dir
        .path()
        .join(format!("schemathesis{}", document.replace('/', "-")));
    let mut command = Command::new(schemathesis());
    command
        .current_dir(up.dir.path())
        .args([
            "run",
            &format!("{url}{document}"),
            "--url",
            &url,
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            // Streams that last until the client leaves: every_endpoint and
            // manager_watch test them.
            "--exclude-path",
            WATCH,
            "--exclude-path",
            IO,
            "--max-examples",
            SCHEMATHESIS_EXAMPLES,
            "--request-timeout",
            "60",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            path_str(&report_dir),
        ])
        .env("NO_COLOR", "1");
    let outcome = run_command(command, SCHEMATHESIS_TIMEOUT);
    eprintln!(
        "schemathesis over {document} ran for {:.1?}:\n{}",
        outcome.elapsed,
        outcome.all()
    );
    let finished = outcome.code.is_some_and(|c| c == 0 || c == 1);
    assert!(
        finished,
        "schemathesis did not run over {document} ({:?}):\n{}",
        outcome.code,
        outcome.all()
    );
    // It tested every documented operation.
    let doc = up
        .api
        .send("GET", document, Auth::None, None, None)
        .expect(200)
        .json();
    let junit: String = std::fs::read_dir(&report_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".xml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for (path, method) in documented_operations(&doc) {
        if path == WATCH || path == IO {
            continue;
        }
        let testcase = format!("<testcase name=\"{} {path}\"", method.to_ascii_uppercase());
        assert!(
            junit.contains(&testcase),
            "schemathesis did not test {method} {path}:\n{junit}"
        );
    }
    SchemathesisRun { document, outcome }
}

#[test]
fn schemathesis_finds_no_server_errors() {
    let mut up = start_up();
    let api = up.api.clone();
    // Volumes it creates get one replica each.
    api.set("default_replica_count", json!(1));
    let node_token = std::fs::read_to_string(up.data_dir().join("node-token")).unwrap();
    let runs = [
        run_schemathesis(&up, OPENAPI, &api.token),
        run_schemathesis(&up, AGENT_OPENAPI, node_token.trim()),
    ];

    // The manager survived it.
    assert!(
        up.running(),
        "shorthorn up died under schemathesis:\n{}",
        up.log_tail(60)
    );
    let log = up.log();
    assert!(
        !log.contains("panicked"),
        "a panic under schemathesis:\n{log}"
    );

    // Whatever it created can be detached and deleted.
    let created = api.volume_names();
    for name in &created {
        let path = format!("/v1/volumes/{}", urlencode(name));
        api.call("POST", &format!("{path}/detach"), None)
            .expect(200);
        api.call("DELETE", &path, None).expect(204);
    }
    assert!(api.volumes().is_empty(), "volumes left after deleting all");
    eprintln!(
        "deleted the {} volume(s) schemathesis created",
        created.len()
    );
    up.stop();

    for run in &runs {
        assert_eq!(
            run.outcome.code,
            Some(0),
            "schemathesis found failures over {} (see above for each request and response):\n{}",
            run.document,
            run.outcome.all()
        );
    }
}

/// Percent-encodes everything but unreserved characters, for a path segment.
fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
