//! HTTPS on the API (certificate and key from PEM files, checked with curl and with
//! `pgsteward status --ca-file` against the CA; refused without it) and the `pgsteward status`
//! command's summary and JSON output.

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_serves_https_with_the_configured_certificate() {
    let instance = Instance::new(options(PgVersion::V15));
    let certs = pgsteward_testkit::certs::generate_certificates(&instance.dir.mkdir("tls", 0o755))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let args = instance.https_args(&certs);
    let ca = certs.ca_cert.clone();
    let mut manager = instance.spawn_with(&args);
    let url = format!("https://127.0.0.1:{}/pg/status", instance.api_port);
    let ready = format!("https://127.0.0.1:{}/readyz", instance.api_port);
    let body = wait_for("the HTTPS API", READY, || {
        let url = url.clone();
        let ca = ca.clone();
        async move {
            let output = Command::new("curl")
                .args(["-sf", "--max-time", "5", "--cacert"])
                .arg(&ca)
                .arg(&url)
                .output()
                .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        }
    })
    .await;
    let status: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        status["instance_name"],
        format!("test-{}", instance.pg_port)
    );
    // Plain HTTP on the TLS port is not served; an untrusted client is refused by curl.
    assert!(
        http::get(&format!("http://127.0.0.1:{}/healthz", instance.api_port))
            .await
            .map(|r| r.status)
            != Some(200)
    );
    let untrusted = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .arg(&url)
        .status()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(!untrusted.success());
    wait_for("HTTPS /readyz", READY, || {
        let ready = ready.clone();
        let ca = ca.clone();
        async move {
            let ok = Command::new("curl")
                .args(["-sf", "--max-time", "5", "--cacert"])
                .arg(&ca)
                .arg(&ready)
                .status()
                .ok()?
                .success();
            ok.then_some(())
        }
    })
    .await;
    // pgsteward status speaks https with the CA, and refuses the certificate without it.
    let base = format!("https://127.0.0.1:{}", instance.api_port);
    let status_cmd = |ca: Option<&std::path::Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgsteward"));
        command.args(["status", "--url", &base]);
        if let Some(ca) = ca {
            command.arg("--ca-file").arg(ca);
        }
        let output = command.output().unwrap_or_else(|e| panic!("{e}"));
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (code, text) = status_cmd(Some(&ca));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("(primary, running)"), "{text}");
    let (code, text) = status_cmd(None);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    manager.signal(nix::sys::signal::Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_prints_a_summary_and_json() {
    let instance = Instance::new(options(PgVersion::V15));
    let manager = instance.spawn();
    let binary = env!("CARGO_BIN_EXE_pgsteward");
    // Before the manager answers: a clear error and exit 1.
    let early = Command::new(binary)
        .args(["status", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(early.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&early.stderr).contains("is pgsteward running?"));
    manager.wait_ready(READY).await;
    let output = Command::new(binary)
        .args(["status", "--url", &instance.api()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("(primary, running)") && text.contains("pending restart: none"),
        "{text}"
    );
    let output = Command::new(binary)
        .args(["status", "--json", "--url", &instance.api()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["state"], "running");
    let version = Command::new(binary)
        .arg("version")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("pgsteward "));
}
