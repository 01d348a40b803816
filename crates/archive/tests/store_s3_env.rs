//! S3 credentials and region from the default AWS chain (environment variables), not from
//! files: its own test binary, because it changes the process environment.

use bytes::Bytes;
use pgsteward_archive::{open, StoreOptions};
use pgsteward_testkit::s3::S3Server;

#[tokio::test]
async fn default_chain_reads_credentials_from_the_environment() {
    let server = S3Server::new().await;
    // Only this test runs in this process, so changing the environment races with nothing.
    for name in [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", server.secret_key());
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/aws-config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    );
    // No region anywhere: the store falls back to us-east-1.
    let options = StoreOptions {
        endpoint_url: Some(server.endpoint()),
        force_path_style: true,
        ..StoreOptions::default()
    };
    let store = open(&format!("s3://{}/env", server.bucket()), &options)
        .await
        .unwrap();
    store
        .put("k", Bytes::from_static(b"from env"))
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap(), &b"from env"[..]);
    assert_eq!(
        std::fs::read(server.object_path("env/k")).unwrap(),
        b"from env"
    );

    std::env::set_var("AWS_SECRET_ACCESS_KEY", "wrong-env-secret-1234");
    let wrong = open(&format!("s3://{}/env", server.bucket()), &options)
        .await
        .unwrap();
    let err = wrong.get("k").await.unwrap_err();
    assert!(
        matches!(err, pgsteward_archive::StoreError::Permanent(_)),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong-env-secret-1234"), "{err}");
}
