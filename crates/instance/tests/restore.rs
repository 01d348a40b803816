//! Restore and point-in-time recovery end to end, on PostgreSQL 15 and 18, a real S3 server
//! (s3s-fs) and real barman-cloud: a source instance archives its WAL with pgsteward,
//! `barman-cloud-backup` takes the base backup, known transactions follow, and
//! `pgsteward restore` (run as root with `--user postgres`) recovers into the data directory of
//! a second instance, which `pgsteward run` then starts: the whole archive, a time between
//! two transactions (exactly the first), an LSN, a restore-point name; refusals for a
//! non-empty directory, a target before the backup and a target beyond the archive.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::s3::S3Server;

const PREFIX: &str = "pitr";
const SOURCE: &str = "src";

fn barman(tool: &str) -> PathBuf {
    let dir = std::env::var_os("PGSTEWARD_TEST_BARMAN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgsteward-ci/barman/bin"));
    let path = dir.join(tool);
    assert!(path.is_file(), "{} not found: run `cargo xtask prereqs` (installs barman[cloud] into /opt/pgsteward-ci/barman)", path.display());
    path
}

/// What the source instance did, for the restores to check against.
struct Source {
    s3: S3Server,
    creds: ScratchDir,
    instance: Instance,
    manager: pgsteward_testkit::Manager,
    /// A time after 'first' committed and before 'second' did (UTC, no offset).
    between: String,
    /// The insert position right after 'first' committed.
    lsn_after_first: String,
}

async fn sql(instance: &Instance, statement: &str) -> String {
    query(instance, statement).await
}

/// Wait until the segment holding the current insert position is archived (after a switch).
async fn switch_and_wait_archived(source: &Instance, s3: &S3Server) {
    let name = sql(source, "SELECT pg_walfile_name(pg_current_wal_lsn())").await;
    sql(source, "SELECT pg_switch_wal()::text").await;
    let key = format!("{PREFIX}/{SOURCE}/wals/{}/{name}.gz", &name[..16]);
    wait_for(
        &format!("{name} archived"),
        Duration::from_secs(120),
        || async { s3.object_path(&key).is_file().then_some(()) },
    )
    .await;
}

async fn source(version: PgVersion) -> Source {
    source_with(version, &[]).await
}

async fn source_with(version: PgVersion, extra_args: &[&str]) -> Source {
    let s3 = S3Server::new().await;
    let creds = ScratchDir::new();
    let mut opts = options(version);
    opts.args = s3_archive_args(&s3, creds.path(), PREFIX, SOURCE);
    opts.args.extend(extra_args.iter().map(|a| a.to_string()));
    let instance = Instance::new(opts);
    let manager = instance.spawn();
    manager.wait_ready(READY).await;
    sql(
        &instance,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('base'); SELECT 1",
    )
    .await;

    let out = Command::new(barman("barman-cloud-backup"))
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("PGPASSWORD", PASSWORD)
        .args([
            "--cloud-provider",
            "aws-s3",
            "--endpoint-url",
            &s3.endpoint(),
        ])
        .args([
            "--gzip",
            "--immediate-checkpoint",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &instance.pg_port.to_string()])
        .arg(format!("s3://{}/{PREFIX}", s3.bucket()))
        .arg(SOURCE)
        .output()
        .unwrap_or_else(|e| panic!("barman-cloud-backup: {e}"));
    assert!(
        out.status.success(),
        "barman-cloud-backup failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    sql(&instance, "INSERT INTO t VALUES ('first'); SELECT 1").await;
    let lsn_after_first = sql(&instance, "SELECT pg_current_wal_lsn()::text").await;
    let between = sql(
        &instance,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    )
    .await;
    // Commit timestamps have microsecond resolution: make sure 'second' commits later.
    wait_for("the clock to move on", Duration::from_secs(5), || async {
        let now = sql(
            &instance,
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
        )
        .await;
        (now > between).then_some(())
    })
    .await;
    sql(&instance, "INSERT INTO t VALUES ('second'); SELECT 1").await;
    sql(
        &instance,
        "SELECT pg_create_restore_point('after-second')::text",
    )
    .await;
    sql(&instance, "INSERT INTO t VALUES ('third'); SELECT 1").await;
    switch_and_wait_archived(&instance, &s3).await;
    Source {
        s3,
        creds,
        instance,
        manager,
        between,
        lsn_after_first,
    }
}

/// A second instance whose data directory is restored; it archives under its own name.
fn target_instance(source: &Source, version: PgVersion, name: &str) -> Instance {
    let mut opts = options(version);
    opts.args = s3_archive_args(&source.s3, source.creds.path(), PREFIX, name);
    Instance::new(opts)
}

/// `pgsteward restore` into `instance`'s data directory from the source archive.
fn restore(source: &Source, instance: &Instance, extra: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["restore", "--user", "postgres", "--config"])
        .arg(&instance.config_path)
        .args(&instance.options.args)
        .arg(format!("--source=s3://{}/{PREFIX}", source.s3.bucket()))
        .arg(format!("--server-name={SOURCE}"))
        .args(extra)
        .env_remove("PGSTEWARD_CONFIG")
        .env_remove("PGSTEWARD_USER")
        .output()
        .unwrap_or_else(|e| panic!("pgsteward restore: {e}"));
    eprintln!(
        "pgsteward restore {extra:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Restore with `extra`, start the restored instance, and return `t`'s rows.
async fn restore_and_read(
    source: &Source,
    version: PgVersion,
    name: &str,
    extra: &[&str],
) -> String {
    let instance = target_instance(source, version, name);
    let out = restore(source, &instance, extra);
    assert!(out.status.success(), "pgsteward restore {extra:?} failed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("promoted"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!instance.pgdata.join("recovery.signal").exists());
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let rows = query(&instance, "SELECT string_agg(v, ',' ORDER BY v) FROM t").await;
    let in_recovery = query(&instance, "SELECT pg_is_in_recovery()::text").await;
    assert_eq!(in_recovery, "false");
    // The history file of the new timeline reaches the instance's own archive.
    let timeline = manager.status().await["timeline"].as_u64().unwrap_or(0);
    assert!(timeline >= 2, "timeline {timeline}");
    let history = source
        .s3
        .object_path(&format!("{PREFIX}/{name}/wals/{timeline:08X}.history.gz"));
    wait_for(
        "the new timeline's history archived",
        Duration::from_secs(60),
        || async { history.is_file().then_some(()) },
    )
    .await;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
    rows
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn restores_barman_cloud_backups_to_targets(version: PgVersion) {
    let source = source(version).await;

    // The whole archive.
    assert_eq!(
        restore_and_read(&source, version, "r-all", &[]).await,
        "base,first,second,third"
    );
    // A time between 'first' and 'second': exactly the first.
    assert_eq!(
        restore_and_read(
            &source,
            version,
            "r-time",
            &["--target-time", &source.between]
        )
        .await,
        "base,first"
    );
    // An LSN right after 'first'.
    assert_eq!(
        restore_and_read(
            &source,
            version,
            "r-lsn",
            &["--target-lsn", &source.lsn_after_first]
        )
        .await,
        "base,first"
    );
    // A restore point.
    assert_eq!(
        restore_and_read(
            &source,
            version,
            "r-name",
            &["--target-name", "after-second"]
        )
        .await,
        "base,first,second"
    );
    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

async fn restore_refusals(version: PgVersion) {
    let source = source(version).await;

    // A non-empty destination: refused, the file left alone.
    let instance = target_instance(&source, version, "r-nonempty");
    instance.dir.mkdir("data", 0o700);
    instance.dir.write("data/keep-me", "precious\n");
    instance.dir.chown_postgres(&instance.pgdata);
    let out = restore(&source, &instance, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(instance.pgdata.join("keep-me")).unwrap_or_default(),
        "precious\n"
    );
    let entries = std::fs::read_dir(&instance.pgdata)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(entries, 1);

    // A target before the only backup's end: no backup can reach it.
    let before = "2001-01-01 00:00:00";
    let instance = target_instance(&source, version, "r-before");
    let out = restore(&source, &instance, &["--target-time", before]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("end after the target"),
        "{}",
        stderr(&out)
    );
    assert!(!instance.pgdata.exists() || is_empty(&instance.pgdata));
    // The same backup named explicitly: the target is before its end.
    let id = backup_id(&source);
    let instance = target_instance(&source, version, "r-before-id2");
    let out = restore(
        &source,
        &instance,
        &["--backup", &id, "--target-time", before],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("before the end of backup"),
        "{}",
        stderr(&out)
    );

    // A target beyond the archive: postgres ends recovery early; reported plainly.
    let instance = target_instance(&source, version, "r-beyond");
    let out = restore(&source, &instance, &["--target-lsn", "FF/0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("recovery ended before the configured recovery target was reached"),
        "{}",
        stderr(&out)
    );
    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// The id of the (only) backup in the source catalog.
fn backup_id(source: &Source) -> String {
    let base = source.s3.object_path(&format!("{PREFIX}/{SOURCE}/base"));
    let mut ids: Vec<String> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 15)
        .collect();
    ids.sort();
    ids.pop()
        .unwrap_or_else(|| panic!("no backup in {}", base.display()))
}

/// `pgsteward drill` on the source's own configuration; returns the report and the output.
fn drill(source: &Source, scratch: &Path) -> (serde_json::Value, Output) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["drill", "--user", "postgres", "--config"])
        .arg(&source.instance.config_path)
        .args(&source.instance.options.args)
        .arg("--scratch-dir")
        .arg(scratch)
        .env_remove("PGSTEWARD_CONFIG")
        .env_remove("PGSTEWARD_USER")
        .output()
        .unwrap_or_else(|e| panic!("pgsteward drill: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("pgsteward drill: {stdout}\n{}", stderr(&out));
    // The report is the pretty-printed JSON object at the end of stdout (logs come first).
    let start = stdout.rfind("\n{\n").map(|i| i + 1).unwrap_or(0);
    let report = serde_json::from_str(&stdout[start..])
        .unwrap_or_else(|e| panic!("no drill report in {stdout}: {e}"));
    (report, out)
}

async fn drills_check_backups_and_report_corruption(version: PgVersion) {
    // The manager drills every 5 s (the first ones fail: no backup yet).
    let source = source_with(version, &["--set=archive.drill.interval=5s"]).await;
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

    // From the command line, into a scratch directory that is left empty.
    let scratch = source.creds.mkdir("drill-scratch", 0o700);
    source.creds.chown_postgres(&scratch);
    let (report, out) = drill(&source, &scratch);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["success"], true);
    assert!(report["recovered_lsn"].is_string());
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

    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

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
    wait_for(
        "the new timeline's history archived",
        Duration::from_secs(60),
        || async { history.is_file().then_some(()) },
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
    let mut source_manager = source.manager;
    source_manager.signal(Signal::SIGTERM).await;
    assert_eq!(source_manager.wait_exit(EXIT).await, 0);
}

for_each_version!(manager_bootstraps_by_point_in_time_recovery);
for_each_version!(drills_check_backups_and_report_corruption);
for_each_version!(restores_barman_cloud_backups_to_targets);
for_each_version!(restore_refusals);
