//! Taking base backups (pgsteward-backup's engine) of a real manager-run postgres (15 and 18)
//! into a real S3 server, checked with real barman-cloud: a backup taken under pgbench load is
//! listed by `barman-cloud-backup-list`, restored by `barman-cloud-restore`, and postgres
//! recovering it with `barman-cloud-wal-restore` has exactly the data of the source; `verify`
//! passes, then reports a byte flipped on the S3 server's disk; `barman-cloud-backup-delete`
//! tolerates the manifest. S3 stopped mid-backup leaves the backup FAILED, never DONE. A backup of
//! a standby restores too, and tablespaces are relocated by barman-cloud-restore. (The manager's API and CLI: backup_api.rs; the benchmark:
//! `cargo xtask bench backup`.)

// The per-version test bodies are test code too (clippy only exempts `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup_support;
mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use backup_support::*;
use common::*;
use nix::sys::signal::Signal;
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::BackupStatus;
use pgsteward_backup::take::{take_backup, Phase, Progress};
use pgsteward_backup::verify::verify_backup;

async fn backup_under_load_restores_with_barman(version: PgVersion) {
    let mut setup = setup(version).await;
    let instance = &setup.instance;
    pgbench_init(instance, 3);
    // Unlogged and temporary relations are left out; the unlogged table comes back empty.
    query(
        instance,
        "CREATE UNLOGGED TABLE scratch AS SELECT generate_series(1, 10000) AS n; SELECT 1",
    )
    .await;
    let mut load = pgbench_load(instance);
    let progress = Arc::new(Progress::default());
    let outcome = take_backup(
        Arc::clone(&setup.store),
        &pg_config(instance),
        &take_options(instance),
        Arc::clone(&progress),
    )
    .await
    .unwrap_or_else(|e| panic!("backup failed: {e}"));
    let _ = load.kill();
    let _ = load.wait();
    let snapshot = progress.snapshot();
    eprintln!(
        "backup {} took {:?}: {snapshot:?}",
        outcome.backup_id, outcome.duration
    );
    assert_eq!(snapshot.phase, Phase::Done);
    assert_eq!(snapshot.bytes_done, snapshot.bytes_total);
    let id = outcome.backup_id.clone();

    // The catalog entry is barman's.
    let catalog = Catalog::new(Arc::clone(&setup.store), SERVER);
    let info = catalog.read(&id).await.unwrap().unwrap();
    assert_eq!(info.status().unwrap(), BackupStatus::Done);
    assert!(info
        .backup_label()
        .unwrap()
        .unwrap()
        .contains("START WAL LOCATION"));
    assert_eq!(
        info.version().unwrap().map(|v| v / 10000),
        Some(version.major())
    );
    let listed = barman_run(
        "barman-cloud-backup-list",
        &setup.s3,
        &[&format!("s3://{}/{PREFIX}", setup.s3.bucket()), SERVER],
    );
    assert!(listed.contains(&id), "{listed}");
    let data_object = setup
        .s3
        .object_path(&format!("{PREFIX}/{SERVER}/base/{id}/data.tar.gz"));
    let gzip_test = Command::new("gzip").arg("-t").arg(&data_object).status();
    assert!(gzip_test.is_ok_and(|s| s.success()));

    // Changes after the backup reach the restore through the WAL archive.
    query(
        instance,
        "CREATE TABLE after_backup AS SELECT md5(i::text) AS v FROM generate_series(1, 500) i; SELECT 1",
    )
    .await;
    let expected = query(instance, CHECKSUM).await;
    let last = query(instance, "SELECT pg_walfile_name(pg_switch_wal())").await;
    wait_archived(&setup.store, &last).await;

    // barman-cloud-restore + barman-cloud-wal-restore bring it back.
    let restored = setup.creds.mkdir("restored", 0o700);
    barman_run(
        "barman-cloud-restore",
        &setup.s3,
        &[
            &format!("s3://{}/{PREFIX}", setup.s3.bucket()),
            SERVER,
            &id,
            restored.to_str().unwrap(),
        ],
    );
    assert!(restored.join("backup_label").is_file());
    assert!(!restored.join("postmaster.pid").exists());
    assert!(restored.join("pg_wal").is_dir());
    let port = start_restored(&setup.s3, version, &setup.creds, &restored, false);
    wait_for(
        "the restored server to promote",
        Duration::from_secs(180),
        || async {
            let value = pgsteward_testkit::sql_value(port, "", "SELECT pg_is_in_recovery()::text")
                .await
                .ok()?;
            (value == "false").then_some(())
        },
    )
    .await;
    let got = pgsteward_testkit::sql_value(port, "", CHECKSUM)
        .await
        .unwrap();
    let unlogged = pgsteward_testkit::sql_value(port, "", "SELECT count(*)::text FROM scratch")
        .await
        .unwrap();
    stop_restored(version, &restored);
    assert_eq!(got, expected, "restored data differs");
    assert_eq!(unlogged, "0");

    // verify passes, then finds a flipped byte.
    let report = verify_backup(&catalog, &id).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert!(report.files_checked > 500, "{report:?}");
    let mut bytes = std::fs::read(&data_object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&data_object, &bytes).unwrap();
    let report = verify_backup(&catalog, &id).await.unwrap();
    assert!(!report.ok(), "a corrupted archive passed verification");
    eprintln!("verify after corruption: {:?}", report.problems);

    // barman-cloud-backup-delete deletes the backup despite the manifest beside it.
    barman_run(
        "barman-cloud-backup-delete",
        &setup.s3,
        &[
            &format!("s3://{}/{PREFIX}", setup.s3.bucket()),
            SERVER,
            "-b",
            &id,
        ],
    );
    assert!(catalog.read(&id).await.unwrap().is_none());
    assert!(!data_object.exists());
    // barman deletes only the objects it knows: the manifest stays behind (tiny; pgsteward's
    // own delete and retention must remove it, and may sweep orphaned ones).
    let manifest = format!("{SERVER}/base/{id}/pgsteward-manifest.json");
    assert!(setup.store.head(&manifest).await.unwrap().is_some());
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(backup_under_load_restores_with_barman);

async fn s3_down_mid_backup_is_failed(version: PgVersion) {
    let mut setup = setup(version).await;
    pgbench_init(&setup.instance, 8);
    let progress = Arc::new(Progress::default());
    let store = Arc::clone(&setup.store);
    let config = pg_config(&setup.instance);
    let options = take_options(&setup.instance);
    let task_progress = Arc::clone(&progress);
    let backup =
        tokio::spawn(async move { take_backup(store, &config, &options, task_progress).await });
    wait_for("the backup to copy", Duration::from_secs(60), || async {
        (progress.snapshot().phase == Phase::Copying).then_some(())
    })
    .await;
    setup.s3.stop();
    wait_for("the backup to fail", Duration::from_secs(120), || async {
        (progress.snapshot().phase == Phase::Failed).then_some(())
    })
    .await;
    setup.s3.start().await;
    let result = backup.await.unwrap();
    let error = result.expect_err("the backup succeeded with S3 down");
    eprintln!("backup error: {error}");
    let id = progress.snapshot().backup_id.unwrap();
    let catalog = Catalog::new(Arc::clone(&setup.store), SERVER);
    let info = catalog.read(&id).await.unwrap().unwrap();
    assert_eq!(info.status().unwrap(), BackupStatus::Failed);
    assert!(info.error().is_some_and(|e| !e.is_empty()));
    assert!(setup
        .store
        .head(&format!("{SERVER}/base/{id}/pgsteward-manifest.json"))
        .await
        .unwrap()
        .is_none());
    // barman sees it as FAILED too, and the server left backup mode (a new backup works).
    let listed = barman_run(
        "barman-cloud-backup-list",
        &setup.s3,
        &[&format!("s3://{}/{PREFIX}", setup.s3.bucket()), SERVER],
    );
    assert!(
        !listed.contains(&format!("{id} ")) || listed.contains("FAILED"),
        "{listed}"
    );
    wait_for("a second id", Duration::from_secs(5), || async {
        (pgsteward_backup::info::backup_id_for(&chrono::Utc::now()) != id).then_some(())
    })
    .await;
    let second = take_backup(
        Arc::clone(&setup.store),
        &pg_config(&setup.instance),
        &take_options(&setup.instance),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("the next backup failed: {e}"));
    assert_eq!(second.info.status().unwrap(), BackupStatus::Done);
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(s3_down_mid_backup_is_failed);

/// A backup taken from a standby (here a server in archive recovery, restored from a primary
/// backup) restores like one from the primary.
async fn backup_of_a_standby_restores(version: PgVersion) {
    let mut setup = setup(version).await;
    let instance = &setup.instance;
    pgbench_init(instance, 2);
    let primary_backup = take_backup(
        Arc::clone(&setup.store),
        &pg_config(instance),
        &take_options(instance),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("primary backup failed: {e}"));
    let bucket = format!("s3://{}/{PREFIX}", setup.s3.bucket());
    let standby = setup.creds.mkdir("standby", 0o700);
    barman_run(
        "barman-cloud-restore",
        &setup.s3,
        &[
            &bucket,
            SERVER,
            &primary_backup.backup_id,
            standby.to_str().unwrap(),
        ],
    );
    query(
        instance,
        "CREATE TABLE after_backup AS SELECT md5(i::text) AS v FROM generate_series(1, 100) i; SELECT 1",
    )
    .await;
    let last = query(instance, "SELECT pg_walfile_name(pg_switch_wal())").await;
    wait_archived(&setup.store, &last).await;
    let standby_port = start_restored(&setup.s3, version, &setup.creds, &standby, true);
    wait_for(
        "the standby to replay after_backup",
        Duration::from_secs(180),
        || async {
            pgsteward_testkit::sql_value(
                standby_port,
                "",
                "SELECT count(*)::text FROM after_backup",
            )
            .await
            .ok()
            .filter(|n| n == "100")
        },
    )
    .await;
    assert_eq!(
        pgsteward_testkit::sql_value(standby_port, "", "SELECT pg_is_in_recovery()::text")
            .await
            .unwrap(),
        "true"
    );
    wait_for("a new backup id", Duration::from_secs(5), || async {
        (pgsteward_backup::info::backup_id_for(&chrono::Utc::now()) != primary_backup.backup_id)
            .then_some(())
    })
    .await;
    let mut standby_config = tokio_postgres::Config::new();
    standby_config
        .host("127.0.0.1")
        .port(standby_port)
        .user("postgres")
        .dbname("postgres");
    let mut options = take_options(instance);
    options.pgdata = standby.clone();
    let outcome = take_backup(
        Arc::clone(&setup.store),
        &standby_config,
        &options,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("standby backup failed: {e}"));
    stop_restored(version, &standby);
    let label = outcome.info.backup_label().unwrap().unwrap();
    assert!(label.contains("BACKUP FROM: standby"), "{label}");

    query(
        instance,
        "INSERT INTO after_backup SELECT md5(i::text) FROM generate_series(101, 200) i; SELECT 1",
    )
    .await;
    let expected = query(instance, CHECKSUM).await;
    let last = query(instance, "SELECT pg_walfile_name(pg_switch_wal())").await;
    wait_archived(&setup.store, &last).await;
    let restored = setup.creds.mkdir("restored", 0o700);
    barman_run(
        "barman-cloud-restore",
        &setup.s3,
        &[
            &bucket,
            SERVER,
            &outcome.backup_id,
            restored.to_str().unwrap(),
        ],
    );
    assert!(!restored.join("standby.signal").exists());
    let port = start_restored(&setup.s3, version, &setup.creds, &restored, false);
    wait_for(
        "the restored server to promote",
        Duration::from_secs(180),
        || async {
            let value = pgsteward_testkit::sql_value(port, "", "SELECT pg_is_in_recovery()::text")
                .await
                .ok()?;
            (value == "false").then_some(())
        },
    )
    .await;
    let got = pgsteward_testkit::sql_value(port, "", CHECKSUM)
        .await
        .unwrap();
    stop_restored(version, &restored);
    assert_eq!(
        got, expected,
        "data restored from the standby backup differs"
    );
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(backup_of_a_standby_restores);

/// A tablespace becomes `<oid>.tar.gz`, recorded in backup.info, and barman-cloud-restore
/// relocates it (`--tablespace name:location`) with its data intact.
async fn tablespaces_restore_with_barman(version: PgVersion) {
    let mut setup = setup(version).await;
    let instance = &setup.instance;
    let location = setup.creds.mkdir("tbs", 0o700);
    // Not in a transaction block: a statement of its own.
    pgsteward_testkit::sql(
        instance.pg_port,
        "postgres",
        PASSWORD,
        "postgres",
        &format!("CREATE TABLESPACE space1 LOCATION '{}'", location.display()),
    )
    .await
    .unwrap();
    query(
        instance,
        "CREATE TABLE in_space TABLESPACE space1 AS SELECT i, md5(i::text) AS v FROM generate_series(1, 20000) i; SELECT 1",
    )
    .await;
    let expected = query(
        instance,
        "SELECT md5(string_agg(v, ',' ORDER BY i)) FROM in_space",
    )
    .await;
    let outcome = take_backup(
        Arc::clone(&setup.store),
        &pg_config(instance),
        &take_options(instance),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("backup failed: {e}"));
    let spaces = outcome.info.tablespaces().unwrap();
    assert_eq!(spaces.len(), 1, "{spaces:?}");
    assert_eq!(spaces[0].name, "space1");
    let oid = spaces[0].oid;
    let object = setup.s3.object_path(&format!(
        "{PREFIX}/{SERVER}/base/{}/{oid}.tar.gz",
        outcome.backup_id
    ));
    assert!(object.is_file(), "{}", object.display());
    // Write WAL first: right after a switch, pg_walfile_name names the previous segment.
    query(instance, "CREATE TABLE tail (i int); SELECT 1").await;
    let last = query(instance, "SELECT pg_walfile_name(pg_switch_wal())").await;
    wait_archived(&setup.store, &last).await;

    let restored = setup.creds.mkdir("restored", 0o700);
    let moved = setup.creds.mkdir("tbs-restored", 0o700);
    barman_run(
        "barman-cloud-restore",
        &setup.s3,
        &[
            &format!("s3://{}/{PREFIX}", setup.s3.bucket()),
            SERVER,
            &outcome.backup_id,
            restored.to_str().unwrap(),
            "--tablespace",
            &format!("space1:{}", moved.display()),
        ],
    );
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&moved)
        .status();
    assert!(chown.is_ok_and(|s| s.success()));
    let port = start_restored(&setup.s3, version, &setup.creds, &restored, false);
    wait_for(
        "the restored server to promote",
        Duration::from_secs(180),
        || async {
            let value = pgsteward_testkit::sql_value(port, "", "SELECT pg_is_in_recovery()::text")
                .await
                .ok()?;
            (value == "false").then_some(())
        },
    )
    .await;
    let got = pgsteward_testkit::sql_value(
        port,
        "",
        "SELECT md5(string_agg(v, ',' ORDER BY i)) FROM in_space",
    )
    .await
    .unwrap();
    let where_now = pgsteward_testkit::sql_value(
        port,
        "",
        "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'space1'",
    )
    .await
    .unwrap();
    stop_restored(version, &restored);
    assert_eq!(got, expected);
    assert_eq!(where_now, moved.display().to_string());
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(tablespaces_restore_with_barman);
