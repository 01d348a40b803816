//! The manager's side of restore on PostgreSQL 15 and 18 with a real S3 server and
//! barman-cloud backups: `bootstrap.method: recovery` (point-in-time recovery into an empty
//! data directory before the first start; a target beyond the archive fails the start), and
//! restore drills (`archive.drill.interval` in the manager, `pgsteward drill` on the command
//! line; a corrupted backup object fails the drill and everything is cleaned up), and the
//! scheduled archive check (a segment deleted from the archive is counted, alerted on and
//! cleared once it is back; a check that fails, the bucket gone, is alerted on until one
//! completes again).

mod common;
#[path = "support/pitr.rs"]
mod pitr;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use pitr::*;

async fn manager_bootstraps_by_point_in_time_recovery(version: PgVersion) {
    let source = source(version).await;
    let mut opts = options(version);
    opts.args = s3_archive_args(&source.s3, source.creds.path(), PREFIX, "boot");
    opts.args.extend([
        "--set=bootstrap.method=recovery".to_owned(),
        format!("--set=bootstrap.recovery.source.server_name={SOURCE}"),
        format!("--set=bootstrap.recovery.target.time={}", source.between),
    ]);
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    assert_eq!(
        query(&instance, "SELECT string_agg(v, ',' ORDER BY v) FROM t").await,
        "base,first"
    );
    let status = manager.status().await;
    assert_eq!(status["role"], "primary", "{status}");
    assert!(status["timeline"].as_u64().unwrap_or(0) >= 2, "{status}");
    let log = manager.log();
    assert!(log.contains("recovery bootstrap complete"), "{log}");
    assert!(!instance.pgdata.join(pgsteward::bootstrap::MARKER).exists());
    // The recovery parameters never reached the data directory's configuration.
    let conf = std::fs::read_to_string(instance.pgdata.join("pgsteward.conf")).unwrap_or_default();
    assert!(!conf.contains("recovery_target"), "{conf}");
    // The new timeline is archived under the instance's own name.
    query(&instance, "INSERT INTO t VALUES ('after'); SELECT 1").await;
    let history = source.s3.object_path(&format!(
        "{PREFIX}/boot/wals/{:08X}.history.gz",
        status["timeline"].as_u64().unwrap_or(0)
    ));
    wait_file(
        "the new timeline's history archived",
        Duration::from_secs(60),
        &history,
    )
    .await;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);

    // A target beyond the archive fails the bootstrap plainly (and exits).
    let mut opts = options(version);
    opts.args = s3_archive_args(&source.s3, source.creds.path(), PREFIX, "boot-beyond");
    opts.args.extend([
        "--set=bootstrap.method=recovery".to_owned(),
        format!("--set=bootstrap.recovery.source.server_name={SOURCE}"),
        "--set=bootstrap.recovery.target.lsn=FF/0".to_owned(),
    ]);
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    assert_ne!(manager.wait_exit(READY).await, 0);
    let log = manager.log();
    assert!(
        log.contains("recovery ended before the configured recovery target was reached"),
        "{log}"
    );
    // The half-recovered directory is refused from then on.
    let mut again = instance.spawn();
    assert_ne!(again.wait_exit(READY).await, 0);
    assert!(
        again.log().contains("unfinished bootstrap"),
        "{}",
        again.log()
    );
    let mut source_manager = source.manager;
    source_manager.signal(Signal::SIGTERM).await;
    assert_eq!(source_manager.wait_exit(EXIT).await, 0);
}

/// `recovery.action: standby` with the source's primary configured: the restored instance stays
/// a standby, replays the archive, then streams from the primary (its slot created there).
async fn manager_bootstraps_a_standby_that_streams(version: PgVersion) {
    let source = source(version).await;
    let mut opts = options(version);
    opts.args = s3_archive_args(&source.s3, source.creds.path(), PREFIX, SOURCE);
    let instance = Instance::new(opts);
    let password_file = instance.dir.join("superuser.pw");
    let mut instance = instance;
    instance.options.args.extend([
        "--set=bootstrap.method=recovery".to_owned(),
        format!("--set=bootstrap.recovery.source.server_name={SOURCE}"),
        "--set=bootstrap.recovery.action=standby".to_owned(),
        "--set=bootstrap.basebackup.host=127.0.0.1".to_owned(),
        format!(
            "--set=bootstrap.basebackup.port={}",
            source.instance.pg_port
        ),
        format!(
            "--set=bootstrap.basebackup.password_file={}",
            password_file.display()
        ),
    ]);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let status = manager.status().await;
    assert_eq!(status["replication"]["role"], "replica", "{status}");
    assert_eq!(
        query(&instance, "SELECT pg_is_in_recovery()::text").await,
        "true"
    );
    // Written on the primary after the backup: arrives by the archive or by streaming.
    query(&source.instance, "INSERT INTO t VALUES ('later'); SELECT 1").await;
    wait_for("the standby to stream from the primary", READY, || async {
        let s = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        (s["replication"]["receiver"]["wal_receiver_status"] == "streaming").then_some(())
    })
    .await;
    wait_for("the new row on the standby", READY, || async {
        let rows = pgsteward_testkit::sql_value(
            instance.pg_port,
            PASSWORD,
            "SELECT count(*)::text FROM t WHERE v = 'later'",
        )
        .await
        .ok()?;
        (rows == "1").then_some(())
    })
    .await;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
    let mut source_manager = source.manager;
    source_manager.signal(Signal::SIGTERM).await;
    assert_eq!(source_manager.wait_exit(EXIT).await, 0);
}

async fn drills_check_backups_and_report_corruption(version: PgVersion) {
    // The manager drills every 5 s (the first ones fail: no backup yet).
    let source = source_with(version, &["--set=archive.drill.interval=5s"], |_| {
        Vec::new()
    })
    .await;
    let status = wait_for(
        "a scheduled drill to succeed",
        Duration::from_secs(180),
        || async {
            let status = source.manager.status().await;
            (status["drill"]["last_result"] == "success").then_some(status)
        },
    )
    .await;
    eprintln!("drill status: {}", status["drill"]);
    assert!(status["drill"]["recovered_lsn"].is_string());
    assert!(status["drill"]["wal_replayed_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(status["drill"]["databases_checked"].as_u64().unwrap_or(0) >= 2);
    let metrics = source.instance.metrics();
    for name in [
        "pgsteward_drill_last_success_timestamp",
        "pgsteward_drill_duration_seconds",
        "pgsteward_drill_recovered_lsn",
    ] {
        let value = metric(&metrics, name).await.unwrap_or(0.0);
        assert!(value > 0.0, "{name} = {value}");
    }
    // The recommended alert on the manager's drills: quiet while they succeed.
    let prometheus = alerting_on(&source).await;
    prometheus
        .wait_alert("PgstewardRestoreDrillFailing", "inactive", READY)
        .await;

    // From the command line, into a scratch directory that is left empty.
    let scratch = source.creds.mkdir("drill-scratch", 0o700);
    source.creds.chown_postgres(&scratch);
    let (report, out) = drill(&source, &scratch);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["success"], true);
    assert!(report["recovered_lsn"].is_string());
    // The replay ran from the backup's start past the transactions that followed it.
    assert!(
        report["wal_replayed_bytes"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(report["databases_checked"].as_u64().unwrap_or(0) >= 2);
    assert_eq!(
        std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(99),
        0
    );

    // A corrupted backup object: the drill fails, says why, and still cleans up.
    let id = backup_id(&source);
    let object = source
        .s3
        .object_path(&format!("{PREFIX}/{SOURCE}/base/{id}/data.tar.gz"));
    let mut bytes = std::fs::read(&object).unwrap_or_else(|e| panic!("{}: {e}", object.display()));
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&object, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let (report, out) = drill(&source, &scratch);
    assert!(!out.status.success());
    assert_eq!(report["success"], false);
    let error = report["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("data.tar.gz"), "{error}");
    assert!(stderr(&out).contains("FAILED"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(99),
        0
    );
    // No private postgres is left behind.
    assert!(
        pgsteward_testkit::proc::pids_matching(&scratch.display().to_string()).is_empty(),
        "a drill postgres survived"
    );
    // The manager's next scheduled drill fails the same way, and the alert fires.
    prometheus
        .wait_alert("PgstewardRestoreDrillFailing", "firing", READY)
        .await;

    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

async fn archive_checks_see_a_hole_before_any_restore(version: PgVersion) {
    // The manager checks the archive every second.
    let source = source_with(version, &["--set=archive.wal.check_interval=1s"], |_| {
        Vec::new()
    })
    .await;
    let prometheus = alerting_on(&source).await;
    let missing = || async {
        let metrics = source.instance.metrics();
        metric(&metrics, "pgsteward_wal_archive_path_missing_segments").await
    };
    wait_for("a check that finds the archive whole", READY, || async {
        let missing =
            checked_metric(&source, "pgsteward_wal_archive_path_missing_segments").await?;
        (missing == 0.0).then_some(())
    })
    .await;
    prometheus
        .wait_alert("PgstewardWalArchiveHole", "inactive", READY)
        .await;

    // Two more segments after the backup, the first of them lost from the archive.
    for _ in 0..2 {
        sql(&source.instance, "INSERT INTO t VALUES ('later'); SELECT 1").await;
        switch_and_wait_archived(&source.instance, &source.s3).await;
    }
    let segments = archived_segments(&source);
    let lost = match segments.as_slice() {
        [.., lost, _] => lost.clone(),
        _ => panic!("fewer than two archived segments: {segments:?}"),
    };
    let kept = std::fs::read(&lost).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&lost).unwrap_or_else(|e| panic!("{e}"));
    wait_for("the check to count the hole", READY, || async {
        (missing().await? == 1.0).then_some(())
    })
    .await;
    prometheus
        .wait_alert("PgstewardWalArchiveHole", "firing", READY)
        .await;
    let name = segment_name(&lost);
    let log = source.manager.log();
    assert!(
        log.lines()
            .any(|l| l.contains("the archive lacks WAL a restore") && l.contains(&name)),
        "{log}"
    );

    // Put back (a bucket version, another copy): the next check clears it.
    std::fs::write(&lost, kept).unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the check to see the archive whole again",
        READY,
        || async { (missing().await? == 0.0).then_some(()) },
    )
    .await;
    prometheus
        .wait_alert("PgstewardWalArchiveHole", "inactive", READY)
        .await;

    // The bucket gone for a while (renamed away: `NoSuchBucket`, not retried): the checks
    // fail, which is counted and alerted on, and the next one after it is back clears it.
    prometheus
        .wait_alert("PgstewardWalArchiveCheckFailing", "inactive", READY)
        .await;
    let bucket = source.s3.object_path("");
    let away = bucket.with_extension("away");
    std::fs::rename(&bucket, &away).unwrap_or_else(|e| panic!("{e}"));
    prometheus
        .wait_alert("PgstewardWalArchiveCheckFailing", "firing", READY)
        .await;
    let log = source.manager.log();
    assert!(
        log.lines()
            .any(|l| l.contains("archive check failed") && l.contains("NoSuchBucket")),
        "{log}"
    );
    std::fs::rename(&away, &bucket).unwrap_or_else(|e| panic!("{e}"));
    prometheus
        .wait_alert("PgstewardWalArchiveCheckFailing", "inactive", READY)
        .await;
    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

/// A real Prometheus scraping the source's manager with the recommended alert rules.
async fn alerting_on(source: &Source) -> pgsteward_testkit::prometheus::Prometheus {
    pgsteward_testkit::prometheus::Prometheus::start(
        &[format!("127.0.0.1:{}", source.instance.metrics_port)],
        &[alert_rules("pgsteward-alerts.yaml")],
    )
    .await
}

for_each_version!(manager_bootstraps_by_point_in_time_recovery);
for_each_version!(archive_checks_see_a_hole_before_any_restore);
for_each_version!(manager_bootstraps_a_standby_that_streams);
for_each_version!(drills_check_backups_and_report_corruption);
