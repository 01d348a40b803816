//! `verify_backup` streams archives: over a store whose whole-object `get` refuses archive
//! keys (only `get_stream` works for them), a backup with a 24 MiB incompressible file
//! verifies intact, and a flipped byte in the stored archive is reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pgsteward_archive::store::file::FileStore;
use pgsteward_archive::store::{
    stream::ObjectReader, MultipartOptions, MultipartWriter, ObjectMeta, ObjectStore, PutNew,
    StoreError,
};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::{BackupInfo, BackupStatus};
use pgsteward_backup::manifest::{Manifest, ManifestArchive, ManifestFile, MANIFEST_FORMAT};
use pgsteward_backup::verify::verify_backup;
use sha2::{Digest, Sha256};

/// A file store whose `get` refuses `.tar.gz` keys: archives must stream.
#[derive(Debug)]
struct StreamOnly(FileStore);

#[async_trait]
impl ObjectStore for StreamOnly {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.0.put(key, data).await
    }
    async fn put_new(&self, key: &str, data: Bytes) -> Result<PutNew, StoreError> {
        self.0.put_new(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if key.ends_with(".tar.gz") {
            return Err(StoreError::Permanent(format!(
                "{key}: whole-object download of an archive"
            )));
        }
        self.0.get(key).await
    }
    async fn get_stream(&self, key: &str) -> Result<Option<Box<dyn ObjectReader>>, StoreError> {
        self.0.get_stream(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.0.head(key).await
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

/// Deterministic incompressible bytes (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_stream_and_corruption_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let file_store = FileStore::new(dir.path().join("store")).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(StreamOnly(file_store));
    let catalog = Catalog::new(store.clone(), "main");
    let id = "20261122T100001";

    let files: Vec<(&str, Vec<u8>)> = vec![
        ("PG_VERSION", b"15\n".to_vec()),
        ("base/1/big", noise(24 << 20)),
        ("global/small", b"hello".to_vec()),
    ];
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o600);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder
            .append_data(&mut header, path, data.as_slice())
            .unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let archive = gz.finish().unwrap();

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        backup_id: id.to_owned(),
        archives: vec![ManifestArchive {
            name: "data.tar.gz".into(),
            tablespace_oid: None,
            compressed_size: archive.len() as u64,
            compressed_sha256: sha(&archive),
            uncompressed_size: tar.len() as u64,
            files: files
                .iter()
                .map(|(path, data)| ManifestFile {
                    path: (*path).to_owned(),
                    size: data.len() as u64,
                    sha256: sha(data),
                })
                .collect(),
        }],
    };
    let mut info = BackupInfo::new(id);
    info.set_status(BackupStatus::Done);
    catalog.write(&info).await.unwrap();
    let key = format!("{}data.tar.gz", catalog.backup_prefix(id));
    store.put(&key, Bytes::from(archive.clone())).await.unwrap();
    store
        .put(
            &Manifest::key(&catalog, id),
            Bytes::from(serde_json::to_vec(&manifest).unwrap()),
        )
        .await
        .unwrap();

    let report = verify_backup(&catalog, id).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.files_checked, 3);
    assert_eq!(report.bytes_checked, (24 << 20) + 3 + 5);

    // A flipped byte in the middle of the stored archive.
    let mut corrupt = archive;
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x55;
    store.put(&key, Bytes::from(corrupt)).await.unwrap();
    let report = verify_backup(&catalog, id).await.unwrap();
    assert!(!report.ok(), "a corrupted archive passed verification");
    assert!(
        report.problems.iter().any(|p| p.contains("SHA-256")),
        "{:?}",
        report.problems
    );
}
