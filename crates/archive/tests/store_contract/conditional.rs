//! The shared contract of writes that never replace an object (`ObjectStore::put_new`), and of
//! an archive whose lookup missed an object another writer stored before the upload: it is
//! compared, never overwritten. Run against both backends by `store_contract.rs`'s macro.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pgsteward_archive::layout::Compression;
use pgsteward_archive::store::{MultipartOptions, MultipartWriter};
use pgsteward_archive::wal::deadline_in;
use pgsteward_archive::{
    ArchiveOutcome, Layout, ObjectMeta, ObjectStore, PutNew, StoreError, WalArchive, WalError,
    WalFile,
};
use pgsteward_testkit::fsutil::pseudo_random;

use super::Backend;

pub(super) async fn put_new_never_replaces(backend: Backend) {
    let store = backend.open("").await;
    let key = "srv/wals/0000000100000000/000000010000000000000001.gz";
    let first = Bytes::from(pseudo_random(300_000, 3));
    assert_eq!(
        store.put_new(key, first.clone()).await.unwrap(),
        PutNew::Stored
    );
    assert_eq!(store.get(key).await.unwrap(), Some(first.clone()));
    assert_eq!(
        store
            .put_new(key, Bytes::from_static(b"other"))
            .await
            .unwrap(),
        PutNew::Existed
    );
    assert_eq!(store.get(key).await.unwrap(), Some(first.clone()));
    assert_eq!(std::fs::read(backend.object_file(key)).unwrap(), first);
    // An object stored by `put` counts too, and so does an empty one.
    store.put("srv/plain", Bytes::new()).await.unwrap();
    assert_eq!(
        store
            .put_new("srv/plain", Bytes::from_static(b"x"))
            .await
            .unwrap(),
        PutNew::Existed
    );
    assert_eq!(store.get("srv/plain").await.unwrap(), Some(Bytes::new()));
    assert!(store.put_new("../escape", Bytes::new()).await.is_err());
}

/// A store whose lookups never see an object: every object an archive finds is one stored
/// between its lookup and its upload (by the manager and a stand-alone `wal-archive` at once,
/// or a standby and the primary).
#[derive(Debug)]
struct LookupMisses(Arc<dyn ObjectStore>);

#[async_trait]
impl ObjectStore for LookupMisses {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.0.put(key, data).await
    }
    async fn put_new(&self, key: &str, data: Bytes) -> Result<PutNew, StoreError> {
        self.0.put_new(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.0.get(key).await
    }
    async fn head(&self, _key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(None)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.0.list(prefix).await
    }
    async fn put_multipart(
        &self,
        key: &str,
        options: MultipartOptions,
    ) -> Result<Box<dyn MultipartWriter>, StoreError> {
        self.0.put_multipart(key, options).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key).await
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

pub(super) async fn archive_compares_an_object_stored_after_its_lookup(backend: Backend) {
    let store = backend.open("backups").await;
    let deadline = deadline_in(Duration::from_secs(30));
    let segment = WalFile::parse("000000010000000A000000FE").unwrap();
    let content = Bytes::from([pseudo_random(1 << 20, 9), vec![0u8; 15 << 20]].concat());
    // The other writer compressed at another level: other bytes, the same segment.
    let other = WalArchive::new(store.clone(), Layout::new("pg-main"), Compression::Gzip, 1);
    let ArchiveOutcome::Stored { key, .. } = other
        .archive(&segment, content.clone(), deadline)
        .await
        .unwrap()
    else {
        panic!("the first writer did not store the segment")
    };
    let stored = store.get(&key).await.unwrap().unwrap();

    let racing: Arc<dyn ObjectStore> = Arc::new(LookupMisses(store.clone()));
    let wal = WalArchive::new(racing, Layout::new("pg-main"), Compression::Gzip, 6);
    assert_eq!(
        wal.archive(&segment, content.clone(), deadline)
            .await
            .unwrap(),
        ArchiveOutcome::AlreadyArchived { key: key.clone() }
    );
    let mut different = content.to_vec();
    different[4242] ^= 1;
    let conflict = wal
        .archive(&segment, Bytes::from(different), deadline)
        .await
        .unwrap_err();
    assert!(matches!(conflict, WalError::Conflict { .. }), "{conflict}");
    // Neither upload replaced the first writer's object.
    assert_eq!(store.get(&key).await.unwrap(), Some(stored));
}
