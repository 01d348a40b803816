//! An interrupted retention run (the store refuses one delete, as an S3 outage would) leaves
//! the backup it was deleting marked FAILED, never a DONE backup with data missing; the next
//! run finishes that deletion before the policy's own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use pgsteward_archive::store::file::FileStore;
use pgsteward_archive::store::{
    MultipartOptions, MultipartWriter, ObjectMeta, ObjectStore, PutNew, StoreError,
};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::{backup_id_for, BackupInfo, BackupStatus};
use pgsteward_backup::retention::report::DELETION_MARKER;
use pgsteward_backup::retention::{run_retention, ApplyOptions, RetentionError, RetentionPolicy};

/// A real directory store whose `delete` of one key fails.
#[derive(Debug)]
struct FailingDelete {
    inner: FileStore,
    key: String,
}

#[async_trait]
impl ObjectStore for FailingDelete {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, data).await
    }
    async fn put_new(&self, key: &str, data: Bytes) -> Result<PutNew, StoreError> {
        self.inner.put_new(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.inner.get(key).await
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
        if key == self.key {
            return Err(StoreError::Transient("connection reset".into()));
        }
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn an_interrupted_run_leaves_failed_not_done_and_the_next_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::new(dir.path().to_path_buf()).unwrap());
    let catalog = Catalog::new(store.clone(), "pg");
    let mut ids = Vec::new();
    for (n, days) in [(2u32, 30i64), (5, 20), (8, 10)] {
        let end = Utc::now() - TimeDelta::days(days);
        let id = backup_id_for(&end);
        let mut info = BackupInfo::new(&id);
        info.set_status(BackupStatus::Done);
        info.set("timeline", "1").unwrap();
        info.set("begin_wal", format!("0000000100000000000000{n:02X}"))
            .unwrap();
        info.set("end_wal", format!("0000000100000000000000{n:02X}"))
            .unwrap();
        info.set_time("end_time", &end.fixed_offset()).unwrap();
        catalog.write(&info).await.unwrap();
        store
            .put(
                &format!("pg/base/{id}/data.tar.gz"),
                Bytes::from_static(b"t"),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    for n in 1..10u32 {
        store
            .put(
                &format!("pg/wals/0000000100000000/0000000100000000000000{n:02X}.gz"),
                Bytes::from_static(b"w"),
            )
            .await
            .unwrap();
    }
    let failing: Arc<dyn ObjectStore> = Arc::new(FailingDelete {
        inner: FileStore::new(dir.path().to_path_buf()).unwrap(),
        key: format!("pg/base/{}/data.tar.gz", ids[0]),
    });
    let policy = RetentionPolicy::Redundancy(1);
    let err = run_retention(
        &Catalog::new(failing, "pg"),
        &policy,
        Utc::now(),
        0,
        ApplyOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RetentionError::Store(_)), "{err}");
    // The backup being deleted is FAILED with the marker, its data still there; the next
    // obsolete one was not touched.
    let first = catalog.read(&ids[0]).await.unwrap().unwrap();
    assert_eq!(first.status().unwrap(), BackupStatus::Failed);
    assert_eq!(first.error(), Some(DELETION_MARKER));
    assert!(dir
        .path()
        .join(format!("pg/base/{}/data.tar.gz", ids[0]))
        .exists());
    let second = catalog.read(&ids[1]).await.unwrap().unwrap();
    assert_eq!(second.status().unwrap(), BackupStatus::Done);

    // The next run finishes the first deletion, then applies the policy.
    let (plan, summary) = run_retention(&catalog, &policy, Utc::now(), 0, ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.deleted_backups, [ids[0].clone(), ids[1].clone()]);
    assert_eq!(plan.deletions.len(), 2);
    assert_eq!(catalog.backup_ids().await.unwrap(), [ids[2].clone()]);
    assert!(!dir
        .path()
        .join(format!("pg/base/{}", ids[0]))
        .join("data.tar.gz")
        .exists());
    // WAL below the kept backup's begin (segment 8) is gone, the rest stays.
    let wal: Vec<String> = store
        .list("pg/wals/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        wal,
        ["000000010000000000000008.gz", "000000010000000000000009.gz"]
    );
}
