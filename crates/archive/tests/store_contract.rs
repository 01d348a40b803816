//! The object store contract: the same assertions run against `file://` (FileStore) and
//! `s3://` (S3Store on a real `s3s-fs` server from the testkit), with every store opened
//! through `pgsteward_archive::open(url, &options)` so the destination parsing is covered too.
//! The WAL archive's part of the contract is in `store_contract/wal.rs`, writes that never
//! replace an object in `store_contract/conditional.rs`.
//! S3-only behaviour (server down → Transient, then recovery; wrong credentials → Permanent
//! without secrets; `checksums: when_required`; SSE headers) is in `store_contract/s3_only.rs`.
//! A missing `s3s-fs` panics with the install hint (`cargo xtask prereqs`); nothing is skipped.

// The shared contract functions are test code too (clippy only exempts `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgsteward_archive::layout::Compression;
use pgsteward_archive::store::MultipartOptions;
use pgsteward_archive::wal::deadline_in;
use pgsteward_archive::{
    open, ArchiveOutcome, Layout, ObjectStore, StoreError, StoreOptions, WalArchive, WalError,
    WalFile,
};
use pgsteward_testkit::fsutil::pseudo_random;
use pgsteward_testkit::s3::{write_credential_files, S3Server};

/// One store backend: a directory or an s3s-fs server, with the files behind it.
#[allow(clippy::large_enum_variant)] // one per test
enum Backend {
    File {
        dir: tempfile::TempDir,
    },
    S3 {
        server: S3Server,
        options: StoreOptions,
    },
}

impl Backend {
    fn file() -> Backend {
        Backend::File {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn s3() -> Backend {
        Backend::s3_with(|_| {}).await
    }

    async fn s3_with(adjust: impl FnOnce(&mut StoreOptions)) -> Backend {
        let server = S3Server::new().await;
        let (id_file, secret_file) = write_credential_files(server.scratch());
        let mut options = StoreOptions {
            endpoint_url: Some(server.endpoint()),
            region: Some("us-east-1".into()),
            force_path_style: true,
            access_key_id_file: Some(id_file),
            secret_access_key_file: Some(secret_file),
            ..StoreOptions::default()
        };
        adjust(&mut options);
        Backend::S3 { server, options }
    }

    /// The destination URL of `prefix` ("" for the root of the destination).
    fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        match self {
            Backend::File { dir } => {
                let root = dir.path().join("store");
                if prefix.is_empty() {
                    format!("file://{}", root.display())
                } else {
                    format!("file://{}/{prefix}", root.display())
                }
            }
            Backend::S3 { server, .. } if prefix.is_empty() => format!("s3://{}", server.bucket()),
            Backend::S3 { server, .. } => format!("s3://{}/{prefix}", server.bucket()),
        }
    }

    fn options(&self) -> StoreOptions {
        match self {
            Backend::File { .. } => StoreOptions::default(),
            Backend::S3 { options, .. } => options.clone(),
        }
    }

    async fn open(&self, prefix: &str) -> Arc<dyn ObjectStore> {
        let url = self.url(prefix);
        open(&url, &self.options())
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"))
    }

    /// The file holding the object with the full key `key` (relative to the destination root).
    fn object_file(&self, key: &str) -> PathBuf {
        match self {
            Backend::File { dir } => dir.path().join("store").join(key),
            Backend::S3 { server, .. } => server.object_path(key),
        }
    }

    fn server(&mut self) -> &mut S3Server {
        match self {
            Backend::S3 { server, .. } => server,
            Backend::File { .. } => panic!("not an S3 backend"),
        }
    }
}

fn keys(objects: &[pgsteward_archive::ObjectMeta]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

// --- the shared contract -------------------------------------------------------------------------

async fn put_get_head_round_trip(backend: Backend) {
    let store = backend.open("").await;
    let data = Bytes::from(pseudo_random(300_000, 1));
    store
        .put("srv/wals/0000000100000000/seg.gz", data.clone())
        .await
        .unwrap();
    assert_eq!(
        store.get("srv/wals/0000000100000000/seg.gz").await.unwrap(),
        Some(data.clone())
    );
    let meta = store
        .head("srv/wals/0000000100000000/seg.gz")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.key, "srv/wals/0000000100000000/seg.gz");
    assert_eq!(meta.size, 300_000);
    assert_eq!(
        std::fs::read(backend.object_file("srv/wals/0000000100000000/seg.gz")).unwrap(),
        data
    );
    // Overwrite (callers that must not overwrite use put_new).
    store
        .put(
            "srv/wals/0000000100000000/seg.gz",
            Bytes::from_static(b"short"),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get("srv/wals/0000000100000000/seg.gz")
            .await
            .unwrap()
            .unwrap(),
        &b"short"[..]
    );
    assert_eq!(
        store
            .head("srv/wals/0000000100000000/seg.gz")
            .await
            .unwrap()
            .unwrap()
            .size,
        5
    );
    // Empty objects are objects.
    store.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(store.get("empty").await.unwrap(), Some(Bytes::new()));
    assert_eq!(store.head("empty").await.unwrap().unwrap().size, 0);
}

async fn missing_objects_are_none(backend: Backend) {
    let store = backend.open("").await;
    assert_eq!(store.get("srv/nothing/here").await.unwrap(), None);
    assert_eq!(store.head("srv/nothing/here").await.unwrap(), None);
    assert_eq!(store.list("srv/nothing/").await.unwrap(), vec![]);
    store.delete("srv/nothing/here").await.unwrap();
}

async fn list_filters_by_prefix_and_sorts(backend: Backend) {
    let store = backend.open("").await;
    for (key, len) in [
        ("srv/wals/0000000100000002/b", 2),
        ("srv/wals/0000000100000001/a", 1),
        ("srv/wals/0000000100000001/a.partial", 3),
        ("srv/base/20240101T000000/backup.info", 4),
        ("srva/other", 5),
        ("top", 6),
    ] {
        store.put(key, Bytes::from(vec![b'x'; len])).await.unwrap();
    }
    let wals = store.list("srv/wals/").await.unwrap();
    assert_eq!(
        keys(&wals),
        [
            "srv/wals/0000000100000001/a",
            "srv/wals/0000000100000001/a.partial",
            "srv/wals/0000000100000002/b"
        ]
    );
    assert_eq!(wals.iter().map(|o| o.size).collect::<Vec<_>>(), [1, 3, 2]);
    assert_eq!(
        keys(&store.list("srv/").await.unwrap()),
        [
            "srv/base/20240101T000000/backup.info",
            "srv/wals/0000000100000001/a",
            "srv/wals/0000000100000001/a.partial",
            "srv/wals/0000000100000002/b"
        ]
    );
    // A prefix is a string prefix, not a directory.
    assert_eq!(keys(&store.list("srv").await.unwrap()).len(), 5);
    assert_eq!(
        keys(&store.list("srv/wals/0000000100000001/a").await.unwrap()),
        [
            "srv/wals/0000000100000001/a",
            "srv/wals/0000000100000001/a.partial"
        ]
    );
    assert_eq!(
        keys(&store.list("srv/wals/00000001000000").await.unwrap()).len(),
        3
    );
    assert_eq!(keys(&store.list("").await.unwrap()).len(), 6);
    assert_eq!(
        store.list("srv/wals/0000000100000003/").await.unwrap(),
        vec![]
    );
}

async fn delete_is_idempotent(backend: Backend) {
    let store = backend.open("").await;
    store
        .put("srv/x/1", Bytes::from_static(b"1"))
        .await
        .unwrap();
    store
        .put("srv/x/2", Bytes::from_static(b"2"))
        .await
        .unwrap();
    store.delete("srv/x/1").await.unwrap();
    assert_eq!(store.head("srv/x/1").await.unwrap(), None);
    assert_eq!(store.get("srv/x/1").await.unwrap(), None);
    store.delete("srv/x/1").await.unwrap();
    assert_eq!(keys(&store.list("srv/x/").await.unwrap()), ["srv/x/2"]);
    assert!(!backend.object_file("srv/x/1").exists());
}

async fn invalid_keys_are_rejected(backend: Backend) {
    let store = backend.open("").await;
    for key in ["../x", "/abs", "a/../../x", "", "a/./b", "..", "a\0b"] {
        let data = Bytes::from_static(b"nope");
        assert!(
            matches!(store.put(key, data).await, Err(StoreError::Config(_))),
            "put {key:?}"
        );
        assert!(
            matches!(store.get(key).await, Err(StoreError::Config(_))),
            "get {key:?}"
        );
        assert!(
            matches!(store.head(key).await, Err(StoreError::Config(_))),
            "head {key:?}"
        );
        assert!(
            matches!(store.delete(key).await, Err(StoreError::Config(_))),
            "delete {key:?}"
        );
    }
    assert!(matches!(
        store.list("../").await,
        Err(StoreError::Config(_))
    ));
    assert_eq!(store.list("").await.unwrap(), vec![]);
}

async fn objects_land_below_the_destination_prefix(backend: Backend) {
    let store = backend.open("some/prefix").await;
    let root = backend.open("").await;
    store
        .put("srv/wals/k", Bytes::from_static(b"inside"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(backend.object_file("some/prefix/srv/wals/k")).unwrap(),
        b"inside"
    );
    assert!(!backend.object_file("srv/wals/k").exists());
    assert_eq!(
        root.get("some/prefix/srv/wals/k").await.unwrap().unwrap(),
        &b"inside"[..]
    );
    // Neighbours outside the prefix, including one that shares its leading characters.
    root.put("some/prefixless/srv/wals/k", Bytes::from_static(b"outside"))
        .await
        .unwrap();
    root.put("other/k", Bytes::from_static(b"outside"))
        .await
        .unwrap();
    assert_eq!(keys(&store.list("").await.unwrap()), ["srv/wals/k"]);
    assert_eq!(keys(&store.list("srv/").await.unwrap()), ["srv/wals/k"]);
    assert_eq!(
        store.head("srv/wals/k").await.unwrap().unwrap().key,
        "srv/wals/k"
    );
    assert_eq!(
        keys(&root.list("some/").await.unwrap()),
        ["some/prefix/srv/wals/k", "some/prefixless/srv/wals/k"]
    );
    let description = store.describe();
    assert!(description.ends_with("/some/prefix"), "{description}");
    assert!(
        description.starts_with(if matches!(backend, Backend::S3 { .. }) {
            "s3://"
        } else {
            "file:///"
        }),
        "{description}"
    );
    // A trailing slash in the URL names the same destination.
    let slash = open(
        &format!("{}/", backend.url("some/prefix")),
        &backend.options(),
    )
    .await
    .unwrap();
    assert_eq!(keys(&slash.list("").await.unwrap()), ["srv/wals/k"]);
    store.delete("srv/wals/k").await.unwrap();
    assert!(root.head("some/prefix/srv/wals/k").await.unwrap().is_none());
    assert!(root
        .head("some/prefixless/srv/wals/k")
        .await
        .unwrap()
        .is_some());
}

/// More than one ListObjectsV2 page (1000 keys) on S3.
async fn listing_more_than_a_thousand_objects(backend: Backend) {
    const COUNT: usize = 1100;
    let store = backend.open("pfx").await;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..COUNT {
        let store = store.clone();
        let semaphore = semaphore.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire().await.unwrap();
            store
                .put(&format!("many/{i:05}"), Bytes::from(i.to_string()))
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    store
        .put("manyother", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let listed = store.list("many/").await.unwrap();
    assert_eq!(listed.len(), COUNT);
    let expected: Vec<String> = (0..COUNT).map(|i| format!("many/{i:05}")).collect();
    assert_eq!(
        keys(&listed),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(listed
        .iter()
        .enumerate()
        .all(|(i, o)| o.size == i.to_string().len() as u64));
    assert_eq!(store.list("many").await.unwrap().len(), COUNT + 1);
    assert_eq!(store.list("").await.unwrap().len(), COUNT + 1);
}

async fn multipart_uploads_stream_and_abort(backend: Backend) {
    let store = backend.open("p").await;
    let options = MultipartOptions {
        part_size: 5 * 1024 * 1024,
        parts_in_flight: 2,
    };
    // Three parts, the last one short, written in chunks that do not align with parts.
    let data = pseudo_random(12 * 1024 * 1024 + 12_345, 7);
    // (No overwrite here: s3s-fs keeps the old object's recorded checksum when a multipart
    // upload replaces it, so the download would fail validation; backups never overwrite.)
    let mut upload = store
        .put_multipart("srv/base/b1/data.tar.gz", options)
        .await
        .unwrap();
    for chunk in data.chunks(777_777) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(upload.written(), data.len() as u64);
    // Not visible before completion.
    assert_eq!(store.head("srv/base/b1/data.tar.gz").await.unwrap(), None);
    let meta = upload.complete().await.unwrap();
    assert_eq!(meta.key, "srv/base/b1/data.tar.gz");
    assert_eq!(meta.size, data.len() as u64);
    let stored = store.get("srv/base/b1/data.tar.gz").await.unwrap().unwrap();
    assert!(stored == data, "multipart content differs");
    assert_eq!(
        store
            .head("srv/base/b1/data.tar.gz")
            .await
            .unwrap()
            .unwrap()
            .size,
        data.len() as u64
    );

    // Smaller than a part, and empty.
    let mut small = store.put_multipart("srv/small", options).await.unwrap();
    small.write(Bytes::from_static(b"tiny ")).await.unwrap();
    small.write(Bytes::from_static(b"object")).await.unwrap();
    assert_eq!(small.complete().await.unwrap().size, 11);
    assert_eq!(
        store.get("srv/small").await.unwrap().unwrap(),
        &b"tiny object"[..]
    );
    let empty = store.put_multipart("srv/empty", options).await.unwrap();
    assert_eq!(empty.complete().await.unwrap().size, 0);
    assert_eq!(store.get("srv/empty").await.unwrap(), Some(Bytes::new()));

    // Aborted after two parts went out: no object, nothing listed.
    let mut aborted = store.put_multipart("srv/aborted", options).await.unwrap();
    aborted
        .write(Bytes::from(pseudo_random(11 * 1024 * 1024, 8)))
        .await
        .unwrap();
    aborted.abort().await.unwrap();
    assert_eq!(store.head("srv/aborted").await.unwrap(), None);
    // Dropped without completing: the same.
    let mut dropped = store.put_multipart("srv/dropped", options).await.unwrap();
    dropped
        .write(Bytes::from(pseudo_random(6 * 1024 * 1024, 9)))
        .await
        .unwrap();
    drop(dropped);
    assert_eq!(store.head("srv/dropped").await.unwrap(), None);
    assert_eq!(
        keys(&store.list("srv/").await.unwrap()),
        ["srv/base/b1/data.tar.gz", "srv/empty", "srv/small"]
    );
    assert!(matches!(
        store.put_multipart("../x", options).await,
        Err(StoreError::Config(_))
    ));
    if let Backend::File { dir } = &backend {
        // No temporary files are left behind either.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("store/p/srv"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// Read a whole object through `get_stream`, returning it and the number of chunks.
async fn read_stream(store: &Arc<dyn ObjectStore>, key: &str) -> Option<(Vec<u8>, usize)> {
    let mut reader = store.get_stream(key).await.unwrap()?;
    let mut out = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        assert!(!chunk.is_empty());
        out.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert_eq!(reader.size(), Some(out.len() as u64));
    // Reading past the end stays at the end.
    assert!(reader.next_chunk().await.unwrap().is_none());
    Some((out, chunks))
}

async fn streaming_download(backend: Backend) {
    let store = backend.open("p").await;
    // Several chunks' worth (the file reader returns 1 MiB chunks).
    let big = pseudo_random(5 * 1024 * 1024 + 12_345, 9);
    store
        .put(
            "srv/base/20261120T100001/data.tar.gz",
            Bytes::from(big.clone()),
        )
        .await
        .unwrap();
    let (read, chunks) = read_stream(&store, "srv/base/20261120T100001/data.tar.gz")
        .await
        .unwrap();
    assert!(read == big, "streamed content differs");
    assert!(chunks >= 2, "one chunk for 5 MiB: {chunks}");
    store.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(read_stream(&store, "empty").await.unwrap(), (vec![], 0));
    assert!(store.get_stream("srv/none").await.unwrap().is_none());
    assert!(store.get_stream("../escape").await.is_err());
}

/// One test per backend for each shared contract function.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::file()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::s3().await).await;
                }
            )*
        }
    };
}

contract!(
    put_get_head_round_trip,
    missing_objects_are_none,
    list_filters_by_prefix_and_sorts,
    delete_is_idempotent,
    invalid_keys_are_rejected,
    objects_land_below_the_destination_prefix,
    listing_more_than_a_thousand_objects,
    wal_archive_and_restore,
    multipart_uploads_stream_and_abort,
    streaming_download,
    put_new_never_replaces,
    archive_compares_an_object_stored_after_its_lookup,
);

#[path = "store_contract/wal.rs"]
mod wal;
use wal::wal_archive_and_restore;

#[path = "store_contract/conditional.rs"]
mod conditional;
use conditional::{archive_compares_an_object_stored_after_its_lookup, put_new_never_replaces};

#[path = "store_contract/s3_only.rs"]
mod s3_only;
