//! The API's certificate rotated without a restart (PG15; TLS does not depend on the postgres
//! version): the certificate and key files are replaced the way Kubernetes updates a Secret
//! volume (new files renamed into place) by ones of another CA; the manager notices the change,
//! reloads, and new connections get the new certificate while the old CA no longer verifies,
//! with nothing pending a manager restart. The certificate's expiry is a metric. A client CA
//! added to the configuration file then lets a client certificate of that CA use a mutating
//! route; once that client CA file is replaced by another CA's, the certificate no longer
//! authorizes, not even on a connection opened before the change. A certificate file that
//! stops parsing refuses the reload (`last_error` names `http.tls`) and the running
//! certificate stays.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use pgsteward_testkit::certs::{generate_certificates, issue_client_certificate};
use pgsteward_testkit::curl::curl;
use serde_json::Value;

async fn wait_code(what: &str, url: &str, ca: &Path, client: Option<(&Path, &Path)>, code: &str) {
    let ca: PathBuf = ca.to_owned();
    let client: Option<(PathBuf, PathBuf)> = client.map(|(c, k)| (c.to_owned(), k.to_owned()));
    wait_for(what, READY, || {
        let (ca, client, url) = (ca.clone(), client.clone(), url.to_owned());
        async move {
            let pair = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            (curl("GET", &url, &ca, pair).0 == code).then_some(())
        }
    })
    .await;
}

/// An HTTPS client that keeps its connection open between requests (hyper's pool), as the
/// coordinator's client does, presenting a client certificate.
struct KeptAlive {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Empty<hyper::body::Bytes>,
    >,
}

impl KeptAlive {
    fn new(ca: &Path, certificate: &pgsteward_testkit::certs::ClientCertificate) -> Self {
        let identity = pgsteward_tls::client::ClientIdentity {
            cert_file: certificate.cert.clone(),
            key_file: certificate.key.clone(),
        };
        let connector = pgsteward_tls::client::connector(
            Some(ca),
            Some(&identity),
            std::time::Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector);
        KeptAlive { client }
    }

    /// POST without a body; the status code (a transport error panics: the connection must
    /// have stayed open).
    async fn post(&self, url: &str) -> u16 {
        let request = hyper::Request::post(url)
            .body(http_body_util::Empty::new())
            .unwrap_or_else(|e| panic!("{e}"));
        self.client
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("POST {url} on the kept-alive client: {e:?}"))
            .status()
            .as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() {
    let instance = Instance::new(options(PgVersion::V15));
    let first = generate_certificates(&instance.dir.mkdir("first", 0o755))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let second_dir = instance.dir.mkdir("second", 0o755);
    let second = generate_certificates(&second_dir).unwrap_or_else(|e| panic!("{e:#}"));
    let client = issue_client_certificate(&second, &second_dir, "operator")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let live = instance.dir.mkdir("live", 0o755);
    let (cert, key) = (live.join("tls.crt"), live.join("tls.key"));
    instance.dir.replace_file(&first.server_cert, &cert);
    instance.dir.replace_file(&first.server_key, &key);
    let manager = instance.spawn_with(&[
        format!("--set=http.tls.cert_file={}", cert.display()),
        format!("--set=http.tls.key_file={}", key.display()),
    ]);
    let base = format!("https://127.0.0.1:{}", instance.api_port);
    let ready = format!("{base}/readyz");
    let status_url = format!("{base}/pg/status");
    wait_code(
        "/readyz with the first CA",
        &ready,
        &first.ca_cert,
        None,
        "200",
    )
    .await;

    // The certificate's expiry is a metric (the test CA's certificates last two days).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let expiry = metric(
        &instance.metrics(),
        "pgsteward_api_certificate_expiry_timestamp_seconds",
    )
    .await
    .unwrap_or_default();
    assert!(
        expiry > now + 86_400.0 && expiry < now + 3.0 * 86_400.0,
        "{expiry} (now {now})"
    );

    // Rotation: the second CA's certificate is served from the next connection on.
    instance.dir.replace_file(&second.server_cert, &cert);
    instance.dir.replace_file(&second.server_key, &key);
    wait_code(
        "the rotated certificate",
        &ready,
        &second.ca_cert,
        None,
        "200",
    )
    .await;
    assert_eq!(curl("GET", &ready, &first.ca_cert, None).0, "000");
    let (code, body) = curl("GET", &status_url, &second.ca_cert, None);
    assert_eq!(code, "200", "{body}");
    let status: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        status["pending_manager_restart"],
        serde_json::json!([]),
        "{status}"
    );
    assert!(
        manager
            .log()
            .contains("API TLS certificate, key and client CA re-read"),
        "{}",
        manager.log()
    );

    // A client CA added to the file: its client certificate may reload without the token.
    let reload = format!("{base}/pg/reload");
    let pair = (client.cert.as_path(), client.key.as_path());
    let (code, body) = curl("POST", &reload, &second.ca_cert, Some(pair));
    assert_eq!(code, "401", "no client CA yet: {body}");
    let config = std::fs::read_to_string(&instance.config_path)
        .unwrap_or_else(|e| panic!("reading the configuration: {e}"));
    let client_ca = live.join("client-ca.crt");
    instance.dir.replace_file(&second.ca_cert, &client_ca);
    let config = config.replace(
        "http:\n",
        &format!(
            "http:\n  tls:\n    client_ca_file: {}\n",
            client_ca.display()
        ),
    );
    std::fs::write(&instance.config_path, config)
        .unwrap_or_else(|e| panic!("writing the configuration: {e}"));
    wait_for("the client CA to apply", READY, || async {
        (curl("POST", &reload, &second.ca_cert, Some(pair)).0 == "200").then_some(())
    })
    .await;

    // A connection kept open across a change of client CA: its certificate no longer
    // authorizes once the CA that signed it is gone (checked again at each request).
    let kept = KeptAlive::new(&second.ca_cert, &client);
    assert_eq!(
        kept.post(&reload).await,
        200,
        "the kept-alive client, before"
    );
    instance.dir.replace_file(&first.ca_cert, &client_ca);
    wait_code(
        "the old client CA to be refused at the handshake",
        &ready,
        &second.ca_cert,
        Some(pair),
        "000",
    )
    .await;
    assert_eq!(
        kept.post(&reload).await,
        401,
        "the kept-alive connection's certificate after its CA was replaced (401: no token sent)"
    );
    assert!(
        manager
            .log()
            .contains("does not verify against the current client CA"),
        "{}",
        manager.log()
    );
    instance.dir.replace_file(&second.ca_cert, &client_ca);
    wait_for("the client CA back", READY, || async {
        (curl("POST", &reload, &second.ca_cert, Some(pair)).0 == "200").then_some(())
    })
    .await;

    // A broken certificate file refuses the reload; the running certificate stays.
    std::fs::write(&cert, "not a certificate\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", cert.display()));
    let refused = wait_for("the reload to refuse the broken certificate", READY, || {
        let url = status_url.clone();
        let ca = second.ca_cert.clone();
        async move {
            let (code, body) = curl("GET", &url, &ca, None);
            let status: Value = serde_json::from_str(&body).ok()?;
            let error = status["last_error"].as_str()?.to_owned();
            (code == "200" && error.contains("http.tls")).then_some(error)
        }
    })
    .await;
    assert!(refused.contains("reload refused"), "{refused}");
    assert_eq!(curl("GET", &ready, &second.ca_cert, None).0, "200");
}
