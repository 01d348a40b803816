//! The coordinator's TLS files rotated while it runs (PG15; TLS does not depend on the
//! postgres version). A manager accepts only client certificates for the name `rotated` (no
//! token); the coordinator starts with a certificate for another name, so the manager refuses
//! its `POST /pg/synchronous` (403). Once the coordinator's client certificate and key files
//! are replaced (renamed into place, as Kubernetes updates a Secret volume) by ones for
//! `rotated`, the coordinator rebuilds its client and the names reach the manager. The
//! coordinator's own API certificate is replaced by one of another CA: `switchover` verified
//! against that CA gets the coordinator's answer. Both certificates' expiry is a metric. Its
//! API token file replaced the same way: the new token passes at once, the old one is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use pgsteward_testkit::certs::{generate_certificates, issue_client_certificate};
use pgsteward_testkit::coordinator::{switchover_command, Coordinator};
use pgsteward_testkit::curl::curl;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::manager::Instance;
use pgsteward_testkit::{wait_for, ManagerOptions, PgVersion};
use serde_json::Value;

const READY: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_used_without_a_restart() {
    let instance = Instance::new(ManagerOptions::new(
        &pgsteward_testkit::pgsteward_bin().display().to_string(),
        PgVersion::V15,
    ));
    let tls_dir = instance.dir.mkdir("tls", 0o755);
    let certs = generate_certificates(&tls_dir).unwrap();
    let old_client = issue_client_certificate(&certs, &tls_dir, "pgsteward-coordinator").unwrap();
    let new_client = issue_client_certificate(&certs, &tls_dir, "rotated").unwrap();
    let other = generate_certificates(&instance.dir.mkdir("other", 0o755)).unwrap();
    instance.use_client_certificates(&certs, &["rotated"]);
    let manager = instance.spawn();
    let base = format!("https://127.0.0.1:{}", instance.api_port);
    let ca = certs.ca_cert.clone();
    wait_for("the manager's HTTPS /readyz", READY, || {
        let (url, ca) = (format!("{base}/readyz"), ca.clone());
        async move { (curl("GET", &url, &ca, None).0 == "200").then_some(()) }
    })
    .await;

    let dir = ScratchDir::new();
    let live = dir.mkdir("live", 0o755);
    let (client_cert, client_key) = (live.join("client.crt"), live.join("client.key"));
    let (api_cert, api_key) = (live.join("api.crt"), live.join("api.key"));
    dir.replace_file(&old_client.cert, &client_cert);
    dir.replace_file(&old_client.key, &client_key);
    dir.replace_file(&certs.server_cert, &api_cert);
    dir.replace_file(&certs.server_key, &api_key);
    let api_token = dir.write("coordinator.token", "rotation-token\n");
    let yaml = format!(
        "state_file: {state}\npoll_interval: 250ms\nrequest_timeout: 1s\n\
         api_token_file: {token}\n\
         tls:\n  ca_file: {ca}\n  client_cert_file: {client_cert}\n  client_key_file: {client_key}\n\
         api_tls:\n  cert_file: {api_cert}\n  key_file: {api_key}\n\
         synchronous:\n  method: any\n  number: 1\n  data_durability: required\n\
         members:\n- name: a\n  url: {base}\n",
        state = dir.join("rotation.state.json").display(),
        token = api_token.display(),
        ca = ca.display(),
        client_cert = client_cert.display(),
        client_key = client_key.display(),
        api_cert = api_cert.display(),
        api_key = api_key.display(),
    );
    let coordinator = Coordinator::start(
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        dir.path(),
        "rotation",
        &yaml,
    );
    // Both certificates' expiry is exported (the test CA's certificates last two days).
    let metrics_url = format!("https://{}:{}/metrics", coordinator.host, coordinator.port);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for label in ["api", "client"] {
        let series = format!(
            "pgsteward_coordinator_certificate_expiry_timestamp_seconds{{certificate=\"{label}\"}}"
        );
        let expiry = wait_for(&format!("the {label} certificate's expiry"), READY, || {
            let (url, ca, series) = (metrics_url.clone(), ca.clone(), series.clone());
            async move {
                let (_, body) = curl("GET", &url, &ca, None);
                pgsteward_testkit::http::sample(&body, &series)
            }
        })
        .await;
        assert!(
            expiry > now + 86_400.0 && expiry < now + 3.0 * 86_400.0,
            "{label}: {expiry} (now {now})"
        );
    }

    // The first certificate is for a name the manager does not accept.
    wait_for(
        "the manager to refuse the first certificate",
        READY,
        || async {
            let log = coordinator.log();
            (log.contains("setting the synchronous standby names failed")
                && log.contains("HTTP 403"))
            .then_some(())
        },
    )
    .await;

    dir.replace_file(&new_client.cert, &client_cert);
    dir.replace_file(&new_client.key, &client_key);
    let status_url = format!("{base}/pg/status");
    wait_for(
        "the names set with the rotated client certificate",
        READY,
        || {
            let (url, ca) = (status_url.clone(), ca.clone());
            async move {
                let (_, body) = curl("GET", &url, &ca, None);
                let status: Value = serde_json::from_str(&body).ok()?;
                status["replication"]["synchronous_standby_names"]
                    .as_str()
                    .is_some_and(|n| n.contains("pgsteward_no_standby"))
                    .then_some(())
            }
        },
    )
    .await;
    assert!(
        coordinator
            .log()
            .contains("managers' API client rebuilt from the TLS files"),
        "{}\nmanager log:\n{}",
        coordinator.log(),
        manager.log()
    );

    // The coordinator's own certificate, now from another CA.
    dir.replace_file(&other.server_cert, &api_cert);
    dir.replace_file(&other.server_key, &api_key);
    let served_url = format!("https://{}:{}", coordinator.host, coordinator.port);
    let switchover_with = |ca: &Path, token: &Path| {
        let args = [
            "--token-file".as_ref(),
            token.as_os_str(),
            "--ca-file".as_ref(),
            ca.as_os_str(),
        ];
        switchover_command(
            Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
            &served_url,
            "a",
            &args,
        )
    };
    let switchover = |ca: &Path| switchover_with(ca, &api_token);
    let answer = wait_for("the rotated API certificate", READY, || async {
        let (code, text) = tokio::task::block_in_place(|| switchover(&other.ca_cert));
        (code == Some(1) && text.contains("already is the primary")).then_some(text)
    })
    .await;
    assert!(answer.contains("switchover refused (HTTP 409)"), "{answer}");
    let (code, text) = switchover(&certs.ca_cert);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.to_lowercase().contains("certificate"),
        "the old CA no longer verifies it: {text}"
    );

    // The API token rotated (the Secret updated): the new token is accepted at once, the old
    // one refused, with no restart.
    let old_token = dir.write("old.token", "rotation-token\n");
    let new_token = dir.write("new.token", "rotated-token-2\n");
    dir.replace_file(&new_token, &api_token);
    let (code, text) = switchover_with(&other.ca_cert, &api_token);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("switchover refused (HTTP 409)"),
        "the new token passes: {text}"
    );
    let (code, text) = switchover_with(&other.ca_cert, &old_token);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("403"), "the old token is refused: {text}");
}
