//! Restoring a catalog backup from a `file://` store end to end (plan, parallel pipelines,
//! links, layout), and the refusals: a non-empty destination, a corrupted gzip object.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;

use pgsteward_archive::store::file::FileStore;
use pgsteward_archive::ObjectStore;
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::{BackupInfo, BackupStatus};
use pgsteward_backup::restore::{self, pipeline::PipelineError, RestoreError, RestoreOptions};

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o600);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append_data(&mut header, path, *data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

async fn catalog_with_backup(dir: &std::path::Path, data: Vec<u8>) -> (Catalog, BackupInfo) {
    let store: Arc<dyn ObjectStore> = Arc::new(FileStore::new(dir.join("store")).unwrap());
    let catalog = Catalog::new(store.clone(), "main");
    let mut info = BackupInfo::new("20261120T100001");
    info.set_status(BackupStatus::Done);
    info.set_backup_label("START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\n");
    catalog.write(&info).await.unwrap();
    store
        .put("main/base/20261120T100001/data.tar.gz", data.into())
        .await
        .unwrap();
    (catalog, info)
}

#[tokio::test]
async fn restores_parts_and_writes_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (catalog, info) = catalog_with_backup(
        dir.path(),
        tar_gz(&[("PG_VERSION", b"15\n"), ("base/1/1259", &big)]),
    )
    .await;
    // An additional part, as barman-cloud-backup --max-archive-size writes.
    catalog
        .store()
        .put(
            "main/base/20261120T100001/data_0001.tar.gz",
            tar_gz(&[("global/pg_control", b"ctl")]).into(),
        )
        .await
        .unwrap();
    let dest = dir.path().join("restored/pgdata");
    let report = restore::restore(&catalog, &info, &dest, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(report.tars, 2);
    assert_eq!(report.files, 3);
    assert_eq!(std::fs::read(dest.join("base/1/1259")).unwrap(), big);
    assert_eq!(
        std::fs::read(dest.join("global/pg_control")).unwrap(),
        b"ctl"
    );
    assert!(std::fs::read_to_string(dest.join("backup_label"))
        .unwrap()
        .starts_with("START WAL LOCATION"));
    assert!(dest.join("pg_wal/archive_status").is_dir());

    // A destination holding only a tolerated marker is accepted.
    let marked = dir.path().join("marked");
    std::fs::create_dir(&marked).unwrap();
    std::fs::write(marked.join("MARK"), "x").unwrap();
    let options = RestoreOptions {
        tolerated_in_destination: vec!["MARK".into()],
        ..RestoreOptions::default()
    };
    restore::restore(&catalog, &info, &marked, &options)
        .await
        .unwrap();
    assert!(marked.join("MARK").exists() && marked.join("PG_VERSION").exists());

    // The same destination again: refused, nothing touched.
    let err = restore::restore(&catalog, &info, &dest, &RestoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::DestinationNotEmpty(_)), "{err}");
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[tokio::test]
async fn a_corrupted_object_fails_the_restore() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(7919) % 253) as u8)
        .collect();
    let mut data = tar_gz(&[("base/1/1259", &big)]);
    let middle = data.len() / 2;
    data[middle] ^= 0x55;
    let (catalog, info) = catalog_with_backup(dir.path(), data).await;
    let err = restore::restore(
        &catalog,
        &info,
        &dir.path().join("dest"),
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(
            err,
            RestoreError::Pipeline(PipelineError::Gzip { .. } | PipelineError::Extract { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_data_tar_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, info) = catalog_with_backup(dir.path(), Vec::new()).await;
    catalog
        .store()
        .delete("main/base/20261120T100001/data.tar.gz")
        .await
        .unwrap();
    let err = restore::restore(
        &catalog,
        &info,
        &dir.path().join("d"),
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RestoreError::MissingFile { .. }), "{err}");
    assert!(!dir.path().join("d").exists());
}
