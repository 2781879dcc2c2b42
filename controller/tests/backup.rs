//! `punnet-controller backup` and `restore` with the real binary: a backup taken while
//! the controller runs (through its API) and one of a stopped database, restored into a
//! new data directory with the same key file, bring back the objects, the revision and
//! readable Secrets; the revision goes on upwards; a non-empty target needs --force.

mod binary_support;

use base64::Engine;
use binary_support::{run, Controller};
use serde_json::json;

#[test]
fn backup_of_a_running_controller_restores_objects_revision_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("source"), dir.path().join("target"));
    let file = dir.path().join("punnet.backup");
    let mut controller = Controller::start(&source, &[]);
    let api = controller.api.clone();
    let (code, body) = api
        .apply(
            "/api/v1/namespaces/team",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, body) = api
        .apply(
            "/api/v1/namespaces/team/secrets/db",
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": "hunter2"}}),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, body) = api
        .apply(
            "/api/v1/namespaces/default/configmaps/cfg",
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let revision: u64 = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let out = run(&[
        "backup",
        file.to_str().unwrap(),
        "--data-dir",
        source.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("backup of revision {revision} written"))
            && stdout.contains("running controller"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("aHVudGVyMg"),
        "the Secret stays encrypted in the backup"
    );
    controller.kill9();

    // A stopped controller's database is backed up directly.
    let offline = dir.path().join("offline.backup");
    let out = run(&[
        "backup",
        offline.to_str().unwrap(),
        "--data-dir",
        source.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped database"));

    // The key file travels separately.
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(source.join("secrets.key"), target.join("secrets.key")).unwrap();
    let out = run(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("at revision {revision}")),
        "{stdout}"
    );
    // The signing key travels separately too, and restore says so.
    assert!(stdout.contains("signing.key"), "{stdout}");
    std::fs::copy(source.join("signing.key"), target.join("signing.key")).unwrap();

    let out = run(&[
        "restore",
        offline.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--force"), "{stderr}");

    let controller = Controller::start(&target, &[]);
    let api = &controller.api;
    let (code, secret) = api.get("/api/v1/namespaces/team/secrets/db");
    assert_eq!(code, 200, "{secret}");
    let password = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["password"].as_str().unwrap())
        .unwrap();
    assert_eq!(password, b"hunter2");
    let (code, cfg) = api.get("/api/v1/namespaces/default/configmaps/cfg");
    assert_eq!((code, cfg["data"]["a"].as_str()), (200, Some("1")));
    let (code, body) = api
        .apply(
            "/api/v1/namespaces/team/configmaps/new",
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}}),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let next: u64 = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next > revision,
        "revision continues upwards: {next} after {revision}"
    );
}

#[test]
fn a_wrong_key_file_stops_the_controller_with_a_clear_error_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let controller = Controller::start(&data, &[]);
    let (code, body) = controller
        .api
        .apply(
            "/api/v1/namespaces/default/secrets/s",
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    drop(controller);
    let moved = dir.path().join("elsewhere.key");
    std::fs::rename(data.join("secrets.key"), &moved).unwrap();
    let out = std::process::Command::new(binary_support::BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&data.join("secrets.key").display().to_string())
            && stderr.contains("is missing"),
        "{stderr}"
    );
    assert!(!data.join("secrets.key").exists(), "no new key was made");
    let controller = Controller::start(&data, &["--encryption-key-file", moved.to_str().unwrap()]);
    let (code, _) = controller.api.get("/api/v1/namespaces/default/secrets/s");
    assert_eq!(code, 200);
}
