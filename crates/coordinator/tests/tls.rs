//! The coordinator reaching a manager whose API is served over HTTPS (PG15; TLS does not
//! depend on the postgres version): with `tls.ca_file` naming the CA that signed the
//! manager's certificate, it polls the member (healthy primary) and its token-bearing
//! `POST /pg/synchronous` goes through (with `data_durability: required` and no standby the
//! names become a placeholder the manager reports back). A coordinator serving its own API
//! over HTTPS (`api_tls`) answers `pgsteward-coordinator switchover --ca-file`, and the
//! command without the CA refuses its certificate. Another manager's HA checks reach that
//! coordinator and the HTTPS manager as a peer with `ha.ca_file`, and neither once a reload
//! names another CA. Without the CA (system roots only), the coordinator finds the member unreachable and
//! the error names the certificate problem. A member URL of
//! another scheme is refused at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use pgsteward_testkit::certs::generate_certificates;
use pgsteward_testkit::coordinator::{switchover_command, Coordinator};
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::manager::Instance;
use pgsteward_testkit::{wait_for, ManagerOptions, PgVersion};
use serde_json::Value;

const READY: Duration = Duration::from_secs(90);

fn coordinator(dir: &ScratchDir, name: &str, tls: &str, url: &str, token: &Path) -> Coordinator {
    let yaml = format!(
        "state_file: {}\npoll_interval: 250ms\nrequest_timeout: 1s\n{tls}\
         synchronous:\n  method: any\n  number: 1\n  data_durability: required\n\
         members:\n- name: a\n  url: {url}\n  token_file: {}\n",
        dir.join(&format!("{name}.state.json")).display(),
        token.display()
    );
    Coordinator::start(
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        dir.path(),
        name,
        &yaml,
    )
}

/// Member `a` as the coordinator last saw it.
async fn member(coordinator: &Coordinator) -> Option<Value> {
    let status = coordinator.status().await?;
    status["members"].as_array()?.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_polls_and_acts_over_https() {
    let instance = Instance::new(ManagerOptions::new(
        &pgsteward_testkit::pgsteward_bin().display().to_string(),
        PgVersion::V15,
    ));
    let tls_dir = instance.dir.mkdir("tls", 0o755);
    let certs = generate_certificates(&tls_dir).unwrap();
    let manager = instance.spawn_with(&instance.https_args(&certs));
    // Listening before the coordinator picks a free port of its own.
    let api = format!("127.0.0.1:{}", instance.api_port);
    wait_for("the manager's HTTPS listener", READY, || async {
        tokio::net::TcpStream::connect(&api).await.ok().map(|_| ())
    })
    .await;
    let url = format!("https://{api}");
    let token = instance.dir.join("api.token");
    let dir = ScratchDir::new();

    let trusted = coordinator(
        &dir,
        "trusted",
        &format!("tls:\n  ca_file: {}\n", certs.ca_cert.display()),
        &url,
        &token,
    );
    let deadline = std::time::Instant::now() + READY;
    let seen = loop {
        let a = member(&trusted).await.unwrap_or(Value::Null);
        let names = a["observed"]["synchronous_standby_names"]
            .as_str()
            .unwrap_or_default();
        if a["healthy"] == true && names.contains("pgsteward_no_standby") {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the coordinator does not see a over https with the names it set: {a}\ncoordinator log:\n{}\nmanager log:\n{}",
            trusted.log(),
            manager.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(seen["observed"]["role"], "primary", "{seen}");
    let status = trusted.status().await.unwrap();
    assert_eq!(status["primary"], "a", "{status}");
    assert!(
        !trusted.log().contains("clear text"),
        "no clear-text warning for an https member:\n{}",
        trusted.log()
    );

    // The coordinator's own API over HTTPS: the switchover command with --ca-file and the
    // token gets the coordinator's answer (a is already the primary); without the CA it
    // cannot verify the certificate.
    let api_token = dir.write("coordinator.token", "served-token\n");
    let served = coordinator(
        &dir,
        "served",
        &format!(
            "tls:\n  ca_file: {ca}\napi_tls:\n  cert_file: {cert}\n  key_file: {key}\n\
             api_token_file: {token}\n",
            ca = certs.ca_cert.display(),
            cert = certs.server_cert.display(),
            key = certs.server_key.display(),
            token = api_token.display()
        ),
        &url,
        &token,
    );
    let served_url = format!("https://{}:{}", served.host, served.port);
    let switchover = |ca: Option<&Path>| {
        let mut args = vec!["--token-file".as_ref(), api_token.as_os_str()];
        if let Some(ca) = ca {
            args.extend(["--ca-file".as_ref(), ca.as_os_str()]);
        }
        switchover_command(
            Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
            &served_url,
            "a",
            &args,
        )
    };
    let answer = wait_for("the HTTPS coordinator's answer", READY, || async {
        let (code, text) = tokio::task::block_in_place(|| switchover(Some(&certs.ca_cert)));
        (code == Some(1) && text.contains("already is the primary")).then_some(text)
    })
    .await;
    assert!(answer.contains("switchover refused (HTTP 409)"), "{answer}");
    let (code, text) = switchover(None);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );

    // A manager's HA checks reach the HTTPS coordinator and the HTTPS peer with ha.ca_file,
    // and stop reaching them once a reload names another CA.
    let mut b = Instance::new(ManagerOptions::new(
        &pgsteward_testkit::pgsteward_bin().display().to_string(),
        PgVersion::V15,
    ));
    let other_ca = generate_certificates(&b.dir.mkdir("other", 0o755))
        .unwrap()
        .ca_cert;
    let ha_yaml = |ca: &Path| {
        format!(
            "ha:\n  coordinator_url: {served_url}\n  peers:\n    - {url}\n  ca_file: {}\n  \
             isolation_timeout: 0s\n  check_interval: 200ms\n  request_timeout: 1s\n",
            ca.display()
        )
    };
    b.options.extra_yaml = ha_yaml(&certs.ca_cert);
    b.write_config("");
    let b_manager = b.spawn();
    b_manager.wait_ready(READY).await;
    wait_for("b's HA checks to reach the HTTPS peer", READY, || async {
        let ha = b_manager.status().await["ha"].clone();
        (ha["coordinator_reachable"] == true && ha["reachable_peers"] == 1).then_some(())
    })
    .await;
    b.options.extra_yaml = ha_yaml(&other_ca);
    b.write_config("");
    b_manager.signal(nix::sys::signal::Signal::SIGHUP).await;
    wait_for(
        "b's HA checks to refuse the peer's certificate after the reload",
        READY,
        || async {
            let ha = b_manager.status().await["ha"].clone();
            let refused = |key: &str| {
                ha[key]
                    .as_str()
                    .is_some_and(|e| e.contains("certificate") || e.contains("UnknownIssuer"))
            };
            (ha["coordinator_reachable"] == false
                && refused("coordinator_error")
                && ha["reachable_peers"] == 0
                && refused("peer_error"))
            .then_some(())
        },
    )
    .await;
    // pgsteward status says so too.
    let text = std::process::Command::new(pgsteward_testkit::pgsteward_bin())
        .args(["status", "--url", &b.api()])
        .output()
        .unwrap()
        .stdout;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("ha            coordinator UNREACHABLE (")
            && text.contains("peers 0/1 reachable ("),
        "{text}"
    );

    // Without the CA the manager's certificate is not trusted.
    let untrusted = coordinator(&dir, "untrusted", "", &url, &token);
    let refused = wait_for("the certificate to be refused", READY, || async {
        let a = member(&untrusted).await?;
        let error = a["last_error"].as_str()?.to_owned();
        (a["reachable"] == false).then_some(error)
    })
    .await;
    assert!(
        refused.contains("certificate") || refused.contains("UnknownIssuer"),
        "{refused}"
    );
}

#[test]
fn a_member_url_of_another_scheme_is_refused() {
    let dir = ScratchDir::new();
    let config = dir.write(
        "bad.yaml",
        "state_file: /nonexistent/s.json\nmembers:\n- name: a\n  url: ftp://127.0.0.1:1\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pgsteward-coordinator"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("member a: url must start with https:// or http://"),
        "{text}"
    );
}
