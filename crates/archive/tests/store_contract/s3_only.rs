//! The S3-only part of the store contract: the server down (Transient within the deadline,
//! then recovery), wrong credentials (Permanent, no secret echoed), `checksums:
//! when_required` (Content-MD5), SSE and virtual-host options, destination URL checks,
//! corrupted objects failing checksum validation (whole and streamed), and multipart uploads
//! with each checksum setting.

use std::time::Instant;

use pgsteward_archive::store::{ChecksumAlgorithm, ChecksumMode, ServerSideEncryption};
use pgsteward_testkit::s3::write_credentials;

use super::*;

/// Run `op` and return its error, failing when it succeeded or took longer than `limit`.
async fn fails_within<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> StoreError {
    let started = Instant::now();
    let result = op.await;
    let elapsed = started.elapsed();
    eprintln!("{what}: {elapsed:?}: {result:?}");
    assert!(elapsed < limit, "{what} took {elapsed:?}");
    match result {
        Ok(value) => panic!("{what} succeeded with the server down: {value:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn s3_server_down_is_transient_and_recovers() {
    let mut backend = Backend::s3().await;
    let store = backend.open("p").await;
    store
        .put("srv/before", Bytes::from_static(b"kept"))
        .await
        .unwrap();
    backend.server().stop();
    backend.server().wait_stopped().await;

    let limit = Duration::from_secs(10);
    let errors = [
        fails_within(
            "put",
            limit,
            store.put("srv/during", Bytes::from_static(b"x")),
        )
        .await,
        fails_within("get", limit, store.get("srv/before")).await,
        fails_within("head", limit, store.head("srv/before")).await,
        fails_within("list", limit, store.list("srv/")).await,
        fails_within("delete", limit, store.delete("srv/before")).await,
    ];
    for error in &errors {
        assert!(matches!(error, StoreError::Transient(_)), "{error}");
        assert!(
            !error
                .to_string()
                .contains(pgsteward_testkit::s3::SECRET_KEY),
            "{error}"
        );
    }
    // Through the WAL archive's retry loop the error stays transient and respects the deadline.
    let wal = WalArchive::new(store.clone(), Layout::new("srv"), Compression::Gzip, 1);
    let segment = WalFile::parse("000000010000000000000001").unwrap();
    let started = Instant::now();
    let err = wal
        .archive(
            &segment,
            Bytes::from_static(b"wal"),
            deadline_in(Duration::from_secs(2)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalError::Store(StoreError::Transient(_))),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    backend.server().start().await;
    assert_eq!(
        store.get("srv/before").await.unwrap().unwrap(),
        &b"kept"[..]
    );
    store
        .put("srv/after", Bytes::from_static(b"y"))
        .await
        .unwrap();
    assert_eq!(
        keys(&store.list("srv/").await.unwrap()),
        ["srv/after", "srv/before"]
    );
    let outcome = wal
        .archive(
            &segment,
            Bytes::from_static(b"wal"),
            deadline_in(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, ArchiveOutcome::Stored { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn s3_wrong_credentials_are_permanent_and_not_echoed() {
    let backend = Backend::s3().await;
    let good = backend.open("").await;
    good.put("srv/x", Bytes::from_static(b"x")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrong_secret = "wrong-secret-do-not-leak-4711";
    for (access_key, secret_key) in [
        (pgsteward_testkit::s3::ACCESS_KEY, wrong_secret),
        ("wrong-access-key-0815", wrong_secret),
    ] {
        let (id_file, secret_file) = write_credentials(dir.path(), access_key, secret_key);
        let options = StoreOptions {
            access_key_id_file: Some(id_file),
            secret_access_key_file: Some(secret_file),
            ..backend.options()
        };
        let store = open(&backend.url(""), &options).await.unwrap();
        let limit = Duration::from_secs(10);
        let errors = [
            fails_within("put", limit, store.put("srv/y", Bytes::from_static(b"y"))).await,
            fails_within("get", limit, store.get("srv/x")).await,
            fails_within("list", limit, store.list("srv/")).await,
            fails_within("delete", limit, store.delete("srv/x")).await,
        ];
        for error in &errors {
            assert!(
                matches!(error, StoreError::Permanent(_)),
                "{access_key}: {error}"
            );
            let text = format!("{error} {error:?}");
            assert!(!text.contains(wrong_secret), "{text}");
            assert!(!text.contains(pgsteward_testkit::s3::SECRET_KEY), "{text}");
            assert!(!text.contains(access_key), "{text}");
        }
        // HEAD has no error body, but a 403 is still not "absent".
        let head = fails_within("head", limit, store.head("srv/x")).await;
        assert!(matches!(head, StoreError::Permanent(_)), "{head}");
        assert!(format!("{store:?}").find(wrong_secret).is_none());
    }
    assert!(good.head("srv/x").await.unwrap().is_some());
    assert!(good.head("srv/y").await.unwrap().is_none());
}

#[tokio::test]
async fn s3_when_required_checksums_use_content_md5() {
    let backend = Backend::s3_with(|o| o.checksums = ChecksumMode::WhenRequired).await;
    put_get_head_round_trip_on(&backend).await;
    let store = backend.open("").await;
    let wal = WalArchive::new(store, Layout::new("srv"), Compression::Gzip, 6);
    let segment = WalFile::parse("000000010000000000000002").unwrap();
    let deadline = deadline_in(Duration::from_secs(30));
    let content = Bytes::from(pseudo_random(1 << 20, 3));
    assert!(matches!(
        wal.archive(&segment, content.clone(), deadline)
            .await
            .unwrap(),
        ArchiveOutcome::Stored { .. }
    ));
    let dest = tempfile::tempdir().unwrap();
    wal.restore_to(&segment, &dest.path().join("seg"), deadline)
        .await
        .unwrap();
    assert!(std::fs::read(dest.path().join("seg")).unwrap() == content);
}

async fn put_get_head_round_trip_on(backend: &Backend) {
    let store = backend.open("md5").await;
    let data = Bytes::from(pseudo_random(70_000, 9));
    store.put("a/b", data.clone()).await.unwrap();
    assert_eq!(store.get("a/b").await.unwrap(), Some(data));
    assert_eq!(store.head("a/b").await.unwrap().unwrap().size, 70_000);
    assert_eq!(keys(&store.list("a/").await.unwrap()), ["a/b"]);
}

#[tokio::test]
async fn s3_sse_and_virtual_host_options_are_accepted() {
    // s3s-fs ignores SSE, but the request must still be well-formed and succeed.
    let backend = Backend::s3_with(|o| o.sse = ServerSideEncryption::Aes256).await;
    put_get_head_round_trip_on(&backend).await;
    let kms = StoreOptions {
        sse: ServerSideEncryption::AwsKms,
        kms_key_id: Some("alias/test".into()),
        ..backend.options()
    };
    let store = open(&backend.url("kms"), &kms).await.unwrap();
    store.put("k", Bytes::from_static(b"k")).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap(), &b"k"[..]);
    // Without force_path_style the SDK still addresses an IP endpoint path-style.
    let virtual_host = StoreOptions {
        force_path_style: false,
        ..backend.options()
    };
    let store = open(&backend.url("vh"), &virtual_host).await.unwrap();
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap(), &b"v"[..]);
}

#[tokio::test]
async fn s3_destination_urls_are_checked() {
    let backend = Backend::s3().await;
    let options = backend.options();
    assert!(matches!(
        open("s3:///prefix", &options).await,
        Err(StoreError::Config(_))
    ));
    let only_id = StoreOptions {
        secret_access_key_file: None,
        ..options.clone()
    };
    assert!(matches!(
        open("s3://bucket", &only_id).await,
        Err(StoreError::Config(_))
    ));
    let store = open("s3://bucket/x/", &options).await.unwrap();
    assert_eq!(store.describe(), "s3://bucket/x");
    // A bucket that does not exist is a permanent error. (s3s-fs creates a missing bucket's
    // directory on PutObject instead of answering NoSuchBucket, so only listing is checked.)
    let missing = open("s3://no-such-bucket/p", &options).await.unwrap();
    let list = missing.list("").await.unwrap_err();
    assert!(
        matches!(list, StoreError::Permanent(ref m) if m.contains("NoSuchBucket")),
        "{list}"
    );
}

#[tokio::test]
async fn s3_corrupted_object_fails_checksum_validation() {
    let backend = Backend::s3().await;
    let store = backend.open("c").await;
    let data = Bytes::from(pseudo_random(100_000, 5));
    store.put("obj", data.clone()).await.unwrap();
    // Flip a byte behind the server's back: the SHA-256 recorded at upload no longer matches.
    let path = backend.object_file("c/obj");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[50_000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = store.get("obj").await.unwrap_err();
    eprintln!("corrupted object: {err}");
    assert!(matches!(err, StoreError::Integrity(_)), "{err}");
    // Not retried as transient by the WAL layer either, and nothing is written.
    let wal = WalArchive::new(store.clone(), Layout::new("srv"), Compression::None, 0);
    let segment = WalFile::parse("000000010000000000000005").unwrap();
    wal.archive(&segment, data.clone(), deadline_in(Duration::from_secs(10)))
        .await
        .unwrap();
    let path = backend.object_file("c/srv/wals/0000000100000000/000000010000000000000005");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = wal
        .restore_to(
            &segment,
            &dest.path().join("seg"),
            deadline_in(Duration::from_secs(10)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalError::Store(StoreError::Integrity(_))),
        "{err}"
    );
    assert!(!dest.path().join("seg").exists());
}

#[tokio::test]
async fn s3_multipart_with_when_required_checksums() {
    let backend = Backend::s3_with(|o| o.checksums = ChecksumMode::WhenRequired).await;
    multipart_uploads_stream_and_abort(backend).await;
}

#[tokio::test]
async fn s3_multipart_with_sha256_checksums() {
    let backend = Backend::s3_with(|o| o.checksum_algorithm = ChecksumAlgorithm::Sha256).await;
    multipart_uploads_stream_and_abort(backend).await;
}

#[tokio::test]
async fn s3_corrupted_object_fails_streaming_download() {
    let backend = Backend::s3().await;
    let store = backend.open("c").await;
    let data = Bytes::from(pseudo_random(3 * 1024 * 1024, 6));
    store.put("obj", data.clone()).await.unwrap();
    let path = backend.object_file("c/obj");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2_000_000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let mut reader = store.get_stream("obj").await.unwrap().unwrap();
    let err = loop {
        match reader.next_chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a corrupted object streamed to its end without an error"),
            Err(e) => break e,
        }
    };
    eprintln!("corrupted stream: {err}");
    assert!(matches!(err, StoreError::Integrity(_)), "{err}");
}
