//! Mutual TLS instead of bearer tokens (PG15; TLS does not depend on the postgres version).
//! A manager with `http.tls.client_ca_file`, `client_names: [pgsteward-coordinator]` and no
//! token file: curl's `POST /pg/reload` passes with the coordinator's client certificate and
//! is refused without one (403, naming the client CA), with a certificate of the same CA for
//! another name (403) and with one of another CA (the handshake fails); probes still answer
//! clients without a certificate. `pgsteward backup --client-cert` passes authentication (the
//! manager then answers 412: no archive configured). A coordinator with
//! `tls.client_cert_file` and members without `token_file` sets synchronous_standby_names on
//! that manager; a coordinator serving `api_tls.client_ca_file` without `api_token_file`
//! answers `switchover --client-cert` and refuses the command without a certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
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
async fn client_certificates_authorize_instead_of_tokens() {
    let instance = Instance::new(ManagerOptions::new(
        &pgsteward_testkit::pgsteward_bin().display().to_string(),
        PgVersion::V15,
    ));
    let tls_dir = instance.dir.mkdir("tls", 0o755);
    let certs = generate_certificates(&tls_dir).unwrap();
    let coordinator_cert = issue_client_certificate(&certs, &tls_dir, "pgsteward-coordinator")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let intruder = issue_client_certificate(&certs, &tls_dir, "intruder").unwrap();
    let other_dir = instance.dir.mkdir("other", 0o755);
    let other = generate_certificates(&other_dir).unwrap();
    let stranger = issue_client_certificate(&other, &other_dir, "pgsteward-coordinator").unwrap();
    // No bearer token: only client certificates may use the mutating routes.
    instance.use_client_certificates(&certs, &["pgsteward-coordinator"]);
    let manager = instance.spawn();
    let base = format!("https://127.0.0.1:{}", instance.api_port);
    let ca = certs.ca_cert.clone();
    wait_for(
        "the HTTPS /readyz without a client certificate",
        READY,
        || {
            let url = format!("{base}/readyz");
            let ca = ca.clone();
            async move { (curl("GET", &url, &ca, None).0 == "200").then_some(()) }
        },
    )
    .await;

    let reload = format!("{base}/pg/reload");
    let pair = |c: &pgsteward_testkit::certs::ClientCertificate| (c.cert.clone(), c.key.clone());
    let (cert, key) = pair(&coordinator_cert);
    let (code, body) = curl("POST", &reload, &ca, Some((&cert, &key)));
    assert_eq!(code, "200", "{body}\n{}", manager.log());
    let (code, body) = curl("POST", &reload, &ca, None);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("client_ca_file"), "{body}");
    let (cert, key) = pair(&intruder);
    let (code, body) = curl("POST", &reload, &ca, Some((&cert, &key)));
    assert_eq!(code, "403", "a name outside client_names: {body}");
    let (cert, key) = pair(&stranger);
    let (code, body) = curl("POST", &reload, &ca, Some((&cert, &key)));
    assert_eq!(code, "000", "another CA's certificate: {body}");
    assert!(
        manager
            .log()
            .contains("valid for none of the allowed client names"),
        "{}",
        manager.log()
    );

    // pgsteward backup authenticates with the certificate: the manager's answer is about the
    // archive, not about credentials.
    let backup = Command::new(pgsteward_testkit::pgsteward_bin())
        .args(["backup", "--url", &base, "--ca-file"])
        .arg(&ca)
        .arg("--client-cert")
        .arg(&coordinator_cert.cert)
        .arg("--client-key")
        .arg(&coordinator_cert.key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&backup.stderr).into_owned();
    assert_eq!(backup.status.code(), Some(1), "{text}");
    assert!(text.contains("412"), "{text}");
    let without = Command::new(pgsteward_testkit::pgsteward_bin())
        .args(["backup", "--url", &base, "--ca-file"])
        .arg(&ca)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&without.stderr).into_owned();
    assert_eq!(without.status.code(), Some(1), "{text}");
    assert!(text.contains("--client-cert"), "{text}");

    // The coordinator presents its certificate: its POST /pg/synchronous goes through.
    let dir = ScratchDir::new();
    let yaml = format!(
        "state_file: {}\npoll_interval: 250ms\nrequest_timeout: 1s\n\
         tls:\n  ca_file: {ca}\n  client_cert_file: {cert}\n  client_key_file: {key}\n\
         api_tls:\n  cert_file: {server_cert}\n  key_file: {server_key}\n  client_ca_file: {ca}\n\
         synchronous:\n  method: any\n  number: 1\n  data_durability: required\n\
         members:\n- name: a\n  url: {base}\n",
        dir.join("mtls.state.json").display(),
        ca = ca.display(),
        cert = coordinator_cert.cert.display(),
        key = coordinator_cert.key.display(),
        server_cert = certs.server_cert.display(),
        server_key = certs.server_key.display(),
    );
    let coordinator = Coordinator::start(
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        dir.path(),
        "mtls",
        &yaml,
    );
    let status_url = format!("{base}/pg/status");
    wait_for(
        "the coordinator to set synchronous_standby_names with its certificate",
        READY,
        || {
            let url = status_url.clone();
            let ca = ca.clone();
            async move {
                let (code, body) = curl("GET", &url, &ca, None);
                let status: Value = serde_json::from_str(&body).ok()?;
                (code == "200"
                    && status["replication"]["synchronous_standby_names"]
                        .as_str()
                        .is_some_and(|n| n.contains("pgsteward_no_standby")))
                .then_some(())
            }
        },
    )
    .await;

    // The coordinator's own API takes the same kind of certificate instead of a token.
    let served_url = format!("https://{}:{}", coordinator.host, coordinator.port);
    let switchover = |client: Option<&pgsteward_testkit::certs::ClientCertificate>| {
        let mut args = vec!["--ca-file".as_ref(), ca.as_os_str()];
        if let Some(client) = client {
            args.extend([
                "--client-cert".as_ref(),
                client.cert.as_os_str(),
                "--client-key".as_ref(),
                client.key.as_os_str(),
            ]);
        }
        switchover_command(
            Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
            &served_url,
            "a",
            &args,
        )
    };
    let answer = wait_for(
        "the coordinator's answer to a certificate",
        READY,
        || async {
            let (code, text) = tokio::task::block_in_place(|| switchover(Some(&coordinator_cert)));
            (code == Some(1) && text.contains("already is the primary")).then_some(text)
        },
    )
    .await;
    assert!(answer.contains("switchover refused (HTTP 409)"), "{answer}");
    let (code, text) = switchover(None);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("--client-cert"), "{text}");
    assert!(
        !coordinator.log().contains("clear text"),
        "{}",
        coordinator.log()
    );
}
