//! Ranged reads (`ObjectStore::get_range`) on `file://` and on a real S3 server (`s3s-fs` from
//! the testkit), and the WAL restore that reads a large stored segment as parts in parallel:
//! the same assertions on both stores, and an object replaced between its parts never restored.
//! A missing `s3s-fs` panics with the install hint; nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgsteward_archive::layout::Compression;
use pgsteward_archive::store::{MultipartOptions, MultipartWriter, PutNew, RangeRead};
use pgsteward_archive::wal::{deadline_in, DOWNLOAD_PART_BYTES};
use pgsteward_archive::{
    open, ArchiveOutcome, Layout, ObjectMeta, ObjectStore, RestoreOutcome, StoreError,
    StoreOptions, WalArchive, WalError, WalFile,
};
use pgsteward_testkit::fsutil::pseudo_random;
use pgsteward_testkit::s3::{write_credential_files, S3Server};

async fn s3_store(server: &S3Server) -> Arc<dyn ObjectStore> {
    let (id_file, secret_file) = write_credential_files(server.scratch());
    let options = StoreOptions {
        endpoint_url: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        force_path_style: true,
        access_key_id_file: Some(id_file),
        secret_access_key_file: Some(secret_file),
        ..StoreOptions::default()
    };
    open(&format!("s3://{}/ranges", server.bucket()), &options)
        .await
        .unwrap()
}

async fn file_store(dir: &tempfile::TempDir) -> Arc<dyn ObjectStore> {
    let url = format!("file://{}/store", dir.path().display());
    open(&url, &StoreOptions::default()).await.unwrap()
}

async fn ranges_read_what_was_stored(store: Arc<dyn ObjectStore>) {
    let big = pseudo_random(5 * 1024 * 1024 + 12_345, 3);
    store.put("a/big", Bytes::from(big.clone())).await.unwrap();
    let total = big.len() as u64;

    let first = store
        .get_range("a/big", 0, 1 << 20, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.total, total);
    assert!(first.data == big[..1 << 20], "first part differs");
    let middle = store
        .get_range("a/big", 3 << 20, 1 << 20, first.etag.as_deref())
        .await
        .unwrap()
        .unwrap();
    assert!(middle.data == big[3 << 20..4 << 20], "middle part differs");
    // The last part is shorter than asked.
    let last = store
        .get_range("a/big", 5 << 20, 1 << 20, first.etag.as_deref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.data.len(), 12_345);
    assert!(last.data == big[5 << 20..], "last part differs");

    // A small object comes whole from a larger range; an empty one is empty.
    store
        .put("a/small", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    let small = store
        .get_range("a/small", 0, 1 << 20, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((small.data.as_ref(), small.total), (&b"0123456789"[..], 10));
    store.put("a/empty", Bytes::new()).await.unwrap();
    let empty = store
        .get_range("a/empty", 0, 1 << 20, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((empty.data.len(), empty.total), (0, 0));

    assert!(store
        .get_range("a/none", 0, 10, None)
        .await
        .unwrap()
        .is_none());
    assert!(store.get_range("../escape", 0, 10, None).await.is_err());
}

async fn large_segments_restore_in_parts(store: Arc<dyn ObjectStore>) {
    let wal = WalArchive::new(store.clone(), Layout::new("srv"), Compression::Gzip, 6);
    let deadline = deadline_in(Duration::from_secs(60));
    let segment = WalFile::parse("000000010000000000000007").unwrap();
    // Incompressible: the stored object is about 16 MiB, eight parts.
    let content = Bytes::from(pseudo_random(16 << 20, 11));
    let ArchiveOutcome::Stored { stored_bytes, .. } = wal
        .archive(&segment, content.clone(), deadline)
        .await
        .unwrap()
    else {
        panic!("not stored")
    };
    assert!(stored_bytes > 4 * DOWNLOAD_PART_BYTES, "{stored_bytes}");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let restored = wal.restore_to(&segment, &dest, deadline).await.unwrap();
    assert!(matches!(restored, RestoreOutcome::Restored { bytes, .. } if bytes == 16 << 20));
    assert!(
        std::fs::read(&dest).unwrap() == content,
        "restored segment differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_ranges() {
    let dir = tempfile::tempdir().unwrap();
    ranges_read_what_was_stored(file_store(&dir).await).await;
    large_segments_restore_in_parts(file_store(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_ranges() {
    let server = S3Server::new().await;
    ranges_read_what_was_stored(s3_store(&server).await).await;
    large_segments_restore_in_parts(s3_store(&server).await).await;
}

/// A store that replaces `key` with `replacement` right after the first part of it was read:
/// a writer racing a restore (s3s-fs ignores `If-Match` on GET, so S3's own refusal cannot be
/// shown here; what the WAL side checks itself can).
#[derive(Debug)]
struct ReplacedAfterFirstPart {
    inner: Arc<dyn ObjectStore>,
    key: String,
    replacement: Bytes,
    replaced: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ObjectStore for ReplacedAfterFirstPart {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, data).await
    }
    async fn put_new(&self, key: &str, data: Bytes) -> Result<PutNew, StoreError> {
        self.inner.put_new(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
        if_match: Option<&str>,
    ) -> Result<Option<RangeRead>, StoreError> {
        let read = self.inner.get_range(key, start, len, if_match).await;
        if key == self.key
            && !self
                .replaced
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.inner.put(key, self.replacement.clone()).await?;
        }
        read
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn put_multipart(
        &self,
        key: &str,
        options: MultipartOptions,
    ) -> Result<Box<dyn MultipartWriter>, StoreError> {
        self.inner.put_multipart(key, options).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Restores `segment` through a store that replaces its object with `replace(stored)` after
/// the first part; returns the error and whether anything was left at the destination.
async fn restore_while_replaced(replace: impl FnOnce(&[u8]) -> Vec<u8>) -> (WalError, bool) {
    let dir = tempfile::tempdir().unwrap();
    let inner = file_store(&dir).await;
    let archive = WalArchive::new(inner.clone(), Layout::new("srv"), Compression::Gzip, 6);
    let segment = WalFile::parse("000000010000000000000009").unwrap();
    let deadline = deadline_in(Duration::from_secs(30));
    let ArchiveOutcome::Stored { key, .. } = archive
        .archive(&segment, Bytes::from(pseudo_random(16 << 20, 21)), deadline)
        .await
        .unwrap()
    else {
        panic!("not stored")
    };
    let stored = inner.get(&key).await.unwrap().unwrap();
    let racing = Arc::new(ReplacedAfterFirstPart {
        inner,
        key,
        replacement: Bytes::from(replace(&stored)),
        replaced: std::sync::atomic::AtomicBool::new(false),
    });
    let wal = WalArchive::new(racing, Layout::new("srv"), Compression::Gzip, 6);
    let dest = dir.path().join("RECOVERYXLOG");
    let err = wal.restore_to(&segment, &dest, deadline).await.unwrap_err();
    (err, dest.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_between_parts_is_never_restored() {
    // Another size: the parts disagree with the first about the whole.
    let (err, left) = restore_while_replaced(|stored| stored[..stored.len() - 100].to_vec()).await;
    assert!(
        err.to_string()
            .contains("changed while it was read in parts"),
        "{err}"
    );
    assert!(!left, "a restore that failed left a file behind");
    // Same size, other bytes after the first part: the gzip CRC-32 of the whole refuses it.
    let (err, left) = restore_while_replaced(|stored| {
        let mut other = stored.to_vec();
        let at = other.len() - 1000;
        other[at] ^= 0x55;
        other
    })
    .await;
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert!(!left, "a restore that failed left a file behind");
}
