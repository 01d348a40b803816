//! SIGHUP re-reads the coordinator's configuration without stopping it (no postgres needed:
//! its one member never answers). `api_tls.client_names` changes who may ask for a
//! switchover at once; an added member is listed in `pending_restart` (status and metric) and
//! not polled; a file that does not load changes nothing and is counted; restoring the file
//! clears `pending_restart`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgsteward_testkit::certs::{generate_certificates, issue_client_certificate, Certificates};
use pgsteward_testkit::coordinator::{switchover_command, Coordinator};
use pgsteward_testkit::curl::curl;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::http::sample;
use pgsteward_testkit::wait_for;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn yaml(dir: &ScratchDir, certs: &Certificates, client_names: &str, extra_member: bool) -> String {
    let mut yaml = format!(
        "state_file: {state}\npoll_interval: 250ms\nrequest_timeout: 500ms\n\
         api_tls:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {ca}\n  client_names: [{client_names}]\n\
         members:\n- name: a\n  url: http://127.0.0.1:1\n",
        state = dir.join("reload.state.json").display(),
        cert = certs.server_cert.display(),
        key = certs.server_key.display(),
        ca = certs.ca_cert.display(),
    );
    if extra_member {
        yaml.push_str("- name: b\n  url: http://127.0.0.1:2\n");
    }
    yaml
}

/// GET `path` over HTTPS: the JSON body (status) or the text (metrics).
fn get(coordinator: &Coordinator, ca: &Path, path: &str) -> String {
    let url = format!("https://{}:{}{path}", coordinator.host, coordinator.port);
    let (code, body) = curl("GET", &url, ca, None);
    assert_eq!(code, "200", "GET {path}: {body}");
    body
}

/// The switchover command with `cert`: its exit code and stderr.
fn switchover_as(
    coordinator: &Coordinator,
    certs: &Certificates,
    cert: &pgsteward_testkit::certs::ClientCertificate,
) -> String {
    let url = format!("https://{}:{}", coordinator.host, coordinator.port);
    let args: Vec<&OsStr> = vec![
        OsStr::new("--ca-file"),
        certs.ca_cert.as_os_str(),
        OsStr::new("--client-cert"),
        cert.cert.as_os_str(),
        OsStr::new("--client-key"),
        cert.key.as_os_str(),
    ];
    let (code, stderr) = switchover_command(
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        &url,
        "a",
        &args,
    );
    assert_eq!(code, Some(1), "member a never answers: {stderr}");
    stderr
}

fn authorized(stderr: &str) -> bool {
    !stderr.contains("HTTP 401") && !stderr.contains("HTTP 403")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_without_stopping() {
    let dir = ScratchDir::new();
    let certs = generate_certificates(&dir.mkdir("tls", 0o755)).unwrap();
    let operator = issue_client_certificate(&certs, dir.path(), "operator").unwrap();
    let mut coordinator = Coordinator::start(
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        dir.path(),
        "reload",
        &yaml(&dir, &certs, "operator", false),
    );
    let ca = certs.ca_cert.clone();
    let status_url = format!("https://{}:{}/status", coordinator.host, coordinator.port);
    wait_for("the coordinator's HTTPS /status", WAIT, || {
        let (url, ca) = (status_url.clone(), ca.clone());
        async move { (curl("GET", &url, &ca, None).0 == "200").then_some(()) }
    })
    .await;
    let stderr = switchover_as(&coordinator, &certs, &operator);
    assert!(
        authorized(&stderr),
        "operator's certificate refused: {stderr}"
    );

    // client_names no longer has `operator`, and a member is added.
    coordinator.rewrite_config(&yaml(&dir, &certs, "someone-else", true));
    coordinator.signal(Signal::SIGHUP);
    wait_for("the reload's pending_restart", WAIT, || {
        let body = get(&coordinator, &ca, "/status");
        async move {
            let status: Value = serde_json::from_str(&body).ok()?;
            (status["pending_restart"] == serde_json::json!(["members"])).then_some(())
        }
    })
    .await;
    assert!(coordinator.is_running(), "{}", coordinator.log());
    let metrics = get(&coordinator, &ca, "/metrics");
    assert_eq!(
        sample(&metrics, "pgsteward_coordinator_config_pending_restart"),
        Some(1.0),
        "{metrics}"
    );
    let status: Value = serde_json::from_str(&get(&coordinator, &ca, "/status")).unwrap();
    let members: Vec<&str> = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(members, vec!["a"], "the added member is polled: {status}");
    let stderr = switchover_as(&coordinator, &certs, &operator);
    assert!(
        !authorized(&stderr),
        "operator still accepted after client_names changed: {stderr}"
    );
    assert!(
        coordinator.log().contains("SIGHUP: configuration reloaded"),
        "{}",
        coordinator.log()
    );

    // A file that does not load: nothing changes, the failure is counted.
    coordinator.rewrite_config("members: [\n");
    coordinator.signal(Signal::SIGHUP);
    wait_for("the failed reload to be counted", WAIT, || {
        let metrics = get(&coordinator, &ca, "/metrics");
        async move {
            (sample(
                &metrics,
                "pgsteward_coordinator_config_reload_failures_total",
            ) == Some(1.0))
            .then_some(())
        }
    })
    .await;
    assert!(coordinator.is_running(), "{}", coordinator.log());
    let stderr = switchover_as(&coordinator, &certs, &operator);
    assert!(!authorized(&stderr), "{stderr}");

    // The original file again: nothing pending, operator accepted.
    coordinator.rewrite_config(&yaml(&dir, &certs, "operator", false));
    coordinator.signal(Signal::SIGHUP);
    wait_for("pending_restart to clear", WAIT, || {
        let metrics = get(&coordinator, &ca, "/metrics");
        async move {
            (sample(&metrics, "pgsteward_coordinator_config_pending_restart") == Some(0.0))
                .then_some(())
        }
    })
    .await;
    let status: Value = serde_json::from_str(&get(&coordinator, &ca, "/status")).unwrap();
    assert_eq!(status["pending_restart"], serde_json::json!([]), "{status}");
    let stderr = switchover_as(&coordinator, &certs, &operator);
    assert!(authorized(&stderr), "{stderr}");
    coordinator.stop();
}
