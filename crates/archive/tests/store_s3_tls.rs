//! S3 over HTTPS with a private CA: `StoreOptions::ca_file` (YAML `archive.s3.ca_file`) makes
//! the store trust the CA that signed an nginx TLS proxy in front of s3s-fs; without it the
//! same upload fails on the certificate (the CA is made fresh for the test, so no system or
//! `SSL_CERT_FILE` bundle trusts it); an unusable CA file is refused when the store opens.
//! Over HTTPS bodies are sent unsigned (their checksum still goes with them), PUT and multipart.

use std::net::SocketAddr;

use bytes::Bytes;
use pgsteward_archive::store::MultipartOptions;
use pgsteward_archive::{open, StoreError, StoreOptions};
use pgsteward_testkit::s3::{write_credential_files, S3Server};
use pgsteward_testkit::tls_proxy::TlsProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_only_when_configured() {
    let server = S3Server::new().await;
    let upstream: SocketAddr = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let proxy = TlsProxy::start(&server.scratch().join("tls"), upstream).unwrap();
    let (id_file, secret_file) = write_credential_files(server.scratch());
    let url = format!("s3://{}/tls", server.bucket());
    let options = |ca_file| StoreOptions {
        endpoint_url: Some(proxy.endpoint()),
        region: Some("us-east-1".into()),
        force_path_style: true,
        access_key_id_file: Some(id_file.clone()),
        secret_access_key_file: Some(secret_file.clone()),
        ca_file,
        ..StoreOptions::default()
    };

    let trusting = open(&url, &options(Some(proxy.ca_file().to_path_buf())))
        .await
        .unwrap();
    trusting
        .put("a/object", Bytes::from_static(b"over https"))
        .await
        .unwrap();
    assert_eq!(
        trusting.get("a/object").await.unwrap().as_deref(),
        Some(&b"over https"[..])
    );
    // Over HTTPS bodies go unsigned (UNSIGNED-PAYLOAD) with their checksum: single PUTs above
    // and multipart parts here are accepted and read back whole.
    let big: Vec<u8> = (0..6 * 1024 * 1024 + 123u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut upload = trusting
        .put_multipart("a/multipart", MultipartOptions::default().normalized())
        .await
        .unwrap();
    upload.write(Bytes::from(big.clone())).await.unwrap();
    assert_eq!(upload.complete().await.unwrap().size, big.len() as u64);
    assert!(
        trusting.get("a/multipart").await.unwrap().as_deref() == Some(&big[..]),
        "the multipart object read back differs"
    );

    let untrusting = open(&url, &options(None)).await.unwrap();
    let refused = untrusting
        .put("a/other", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}")
            .to_lowercase()
            .contains("certificate"),
        "expected a certificate error, got {refused:?}"
    );
    assert!(!server.object_path("tls/a/other").exists());

    let not_pem = server.scratch().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for (ca_file, expected) in [
        (not_pem, "holds no PEM certificate"),
        (server.scratch().join("missing.pem"), "No such file"),
    ] {
        match open(&url, &options(Some(ca_file))).await {
            Err(StoreError::Config(message)) => {
                assert!(message.contains(expected), "{message}")
            }
            other => panic!("expected a config error with {expected:?}, got {other:?}"),
        }
    }
}
