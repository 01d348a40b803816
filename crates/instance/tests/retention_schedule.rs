//! The primary's manager applies `archive.retention_policy` every `retention_interval` to its
//! archive on a real S3 server: obsolete backups and the WAL below the oldest kept backup go,
//! runs repeat, and the retention metrics count them.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::*;
use nix::sys::signal::Signal;
use pgsteward_archive::store::{open, StoreOptions};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::{backup_id_for, BackupInfo, BackupStatus};

const SERVER: &str = "sched";

async fn retention_runs_on_the_primary(version: PgVersion) {
    let s3 = pgsteward_testkit::s3::S3Server::new().await;
    let creds = pgsteward_testkit::fsutil::ScratchDir::new();
    let mut opts = options(version);
    opts.args = s3_archive_args(&s3, creds.path(), "retention", SERVER);
    opts.args.extend([
        "--set=archive.retention_policy=REDUNDANCY 1".to_owned(),
        "--set=archive.retention_interval=1s".to_owned(),
    ]);
    opts.parameters = vec![("wal_keep_size".into(), "1GB".into())];
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let metrics = instance.metrics();

    // Runs happen (an empty catalog: nothing to delete).
    let first_run = wait_for("a first retention run", Duration::from_secs(60), || async {
        metric(&metrics, "pgsteward_retention_last_run_timestamp")
            .await
            .filter(|t| *t > 0.0)
    })
    .await;

    // Archive segments 1..=3 of timeline 1.
    for i in 0..3 {
        query(
            &instance,
            &format!("CREATE TABLE t{i} (i int); SELECT pg_switch_wal()::text"),
        )
        .await;
    }
    let wal_key =
        |n: u32| format!("retention/{SERVER}/wals/0000000100000000/00000001000000000000000{n}.gz");
    wait_for(
        "segments 1-3 archived",
        Duration::from_secs(120),
        || async {
            (1..=3)
                .all(|n| s3.object_path(&wal_key(n)).is_file())
                .then_some(())
        },
    )
    .await;

    // Three DONE backups beginning at segments 1, 2 and 3 appear in the catalog.
    let (key_file, secret_file) = pgsteward_testkit::s3::write_credential_files(creds.path());
    let store = open(
        &format!("s3://{}/retention", s3.bucket()),
        &StoreOptions {
            endpoint_url: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
            force_path_style: true,
            access_key_id_file: Some(key_file),
            secret_access_key_file: Some(secret_file),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let catalog = Catalog::new(store.clone(), SERVER);
    let mut ids = Vec::new();
    for (n, days) in [(1u32, 3i64), (2, 2), (3, 1)] {
        let end = Utc::now() - TimeDelta::days(days);
        let id = backup_id_for(&(end - TimeDelta::minutes(1)));
        let mut info = BackupInfo::new(&id);
        info.set_status(BackupStatus::Done);
        for (key, value) in [
            ("timeline", "1".to_owned()),
            ("begin_wal", format!("00000001000000000000000{n}")),
            ("end_wal", format!("00000001000000000000000{n}")),
        ] {
            info.set(key, value).unwrap_or_else(|e| panic!("{e}"));
        }
        info.set_time("end_time", &end.fixed_offset())
            .unwrap_or_else(|e| panic!("{e}"));
        catalog.write(&info).await.unwrap_or_else(|e| panic!("{e}"));
        store
            .put(
                &format!("{SERVER}/base/{id}/data.tar.gz"),
                b"tar".to_vec().into(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        ids.push(id);
    }

    // REDUNDANCY 1: the two older backups go, with segments 1 and 2.
    wait_for("two backups deleted", Duration::from_secs(60), || async {
        (metric(&metrics, "pgsteward_retention_deleted_backups_total").await? == 2.0).then_some(())
    })
    .await;
    let left = catalog.backup_ids().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left, [ids[2].clone()]);
    assert!(!s3.object_path(&wal_key(1)).exists());
    assert!(!s3.object_path(&wal_key(2)).exists());
    assert!(s3.object_path(&wal_key(3)).is_file());
    assert_eq!(
        metric(&metrics, "pgsteward_retention_deleted_wal_total").await,
        Some(2.0)
    );
    // Runs keep coming, without errors.
    wait_for("another retention run", Duration::from_secs(60), || async {
        metric(&metrics, "pgsteward_retention_last_run_timestamp")
            .await
            .filter(|t| *t > first_run)
    })
    .await;
    assert_eq!(
        metric(&metrics, "pgsteward_retention_errors_total").await,
        Some(0.0)
    );
    assert_eq!(catalog.backup_ids().await.unwrap_or_default().len(), 1);

    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

for_each_version!(retention_runs_on_the_primary);
