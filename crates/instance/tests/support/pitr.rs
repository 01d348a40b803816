//! The source side of the restore tests (included with `#[path = "support/pitr.rs"] mod
//! pitr;` after `mod common;`): an instance archiving its WAL with pgsteward to a real S3
//! server, a base backup by `barman-cloud-backup`, known transactions after it, and helpers
//! to run `pgsteward restore` and `pgsteward drill` against that archive.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::s3::S3Server;

pub const PREFIX: &str = "pitr";
pub const SOURCE: &str = "src";

pub fn barman(tool: &str) -> PathBuf {
    let dir = std::env::var_os("PGSTEWARD_TEST_BARMAN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgsteward-ci/barman/bin"));
    let path = dir.join(tool);
    assert!(path.is_file(), "{} not found: run `cargo xtask prereqs` (installs barman[cloud] into /opt/pgsteward-ci/barman)", path.display());
    path
}

/// What the source instance did, for the restores to check against.
pub struct Source {
    pub s3: S3Server,
    pub creds: ScratchDir,
    pub instance: Instance,
    pub manager: pgsteward_testkit::Manager,
    /// A time after 'first' committed and before 'second' did (UTC, no offset).
    pub between: String,
    /// The insert position right after 'first' committed.
    pub lsn_after_first: String,
    /// The transaction that inserted 'first'.
    pub xid_first: String,
}

pub async fn sql(instance: &Instance, statement: &str) -> String {
    query(instance, statement).await
}

/// Wait until the segment holding the current insert position is archived (after a switch).
pub async fn switch_and_wait_archived(source: &Instance, s3: &S3Server) {
    let name = sql(source, "SELECT pg_walfile_name(pg_current_wal_lsn())").await;
    sql(source, "SELECT pg_switch_wal()::text").await;
    let key = format!("{PREFIX}/{SOURCE}/wals/{}/{name}.gz", &name[..16]);
    wait_file(
        &format!("{name} archived"),
        Duration::from_secs(120),
        &s3.object_path(&key),
    )
    .await;
}

pub async fn source(version: PgVersion) -> Source {
    source_with(version, &[], |_| Vec::new()).await
}

/// A source with extra `run` arguments; `setup` returns SQL statements run one by one before
/// the backup (given the scratch directory, for tablespace locations).
pub async fn source_with(
    version: PgVersion,
    extra_args: &[&str],
    setup: impl FnOnce(&ScratchDir) -> Vec<String>,
) -> Source {
    let (s3, creds, instance, manager) = start_source(version, extra_args).await;
    for statement in setup(&creds) {
        pgsteward_testkit::sql(
            instance.pg_port,
            "postgres",
            PASSWORD,
            "postgres",
            &statement,
        )
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    barman_backup(&s3, &instance);
    finish_source(s3, creds, instance, manager).await
}

/// A base backup of `instance` by `barman-cloud-backup` into the source's place in the archive.
pub fn barman_backup(s3: &S3Server, instance: &Instance) {
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
}

/// The source instance, archiving, with `t` holding 'base'.
pub async fn start_source(
    version: PgVersion,
    extra_args: &[&str],
) -> (S3Server, ScratchDir, Instance, pgsteward_testkit::Manager) {
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
    (s3, creds, instance, manager)
}

/// After the backup: the known transactions ('first', a time, 'second', a restore point,
/// 'third'), archived.
pub async fn finish_source(
    s3: S3Server,
    creds: ScratchDir,
    instance: Instance,
    manager: pgsteward_testkit::Manager,
) -> Source {
    let xid_first = sql(
        &instance,
        "INSERT INTO t VALUES ('first'); SELECT pg_current_xact_id()::text",
    )
    .await;
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
        xid_first,
    }
}

/// A second instance whose data directory is restored; it archives under its own name.
pub fn target_instance(source: &Source, version: PgVersion, name: &str) -> Instance {
    let mut opts = options(version);
    opts.args = s3_archive_args(&source.s3, source.creds.path(), PREFIX, name);
    Instance::new(opts)
}

/// `pgsteward restore` into `instance`'s data directory from the source archive.
pub fn restore(source: &Source, instance: &Instance, extra: &[&str]) -> Output {
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
pub async fn restore_and_read(
    source: &Source,
    version: PgVersion,
    name: &str,
    extra: &[&str],
) -> String {
    let instance = target_instance(source, version, name);
    let out = restore(source, &instance, extra);
    assert!(out.status.success(), "pgsteward restore {extra:?} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("promoted"), "{stdout}");
    // The replay's WAL came through the restore's own prefetch server.
    let served: Option<u64> = stdout
        .lines()
        .find(|l| l.starts_with("restored backup"))
        .and_then(|summary| summary.split_once(" WAL files through the prefetch"))
        .and_then(|(head, _)| head.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok());
    assert!(served.is_some_and(|n| n >= 1), "{stdout}");
    assert!(!instance.pgdata.join("recovery.signal").exists());
    assert!(
        !instance.pgdata.join(".s.PGSTEWARD.replay").exists(),
        "the replay's socket was left behind"
    );
    assert!(
        !instance.pgdata.join("pg_wal/pgsteward-prefetch").exists(),
        "the replay's prefetch spool was left behind"
    );
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let rows = query(&instance, "SELECT string_agg(v, ',' ORDER BY v) FROM t").await;
    let in_recovery = query(&instance, "SELECT pg_is_in_recovery()::text").await;
    assert_eq!(in_recovery, "false");
    // The history file of the new timeline reaches the instance's own archive.
    let timeline = manager.status().await["timeline"].as_u64().unwrap_or(0);
    assert!(timeline >= 2, "timeline {timeline}");
    wait_history_archived(source, name, timeline).await;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
    rows
}

/// Wait until `timeline`'s history file is archived under `server` in the source's bucket.
pub async fn wait_history_archived(source: &Source, server: &str, timeline: u64) {
    let history = source
        .s3
        .object_path(&format!("{PREFIX}/{server}/wals/{timeline:08X}.history.gz"));
    wait_file(
        &format!("{timeline:08X}.history archived"),
        Duration::from_secs(60),
        &history,
    )
    .await;
}

/// The source manager's `name` metric, once a scheduled archive check has completed.
pub async fn checked_metric(source: &Source, name: &str) -> Option<f64> {
    let metrics = source.instance.metrics();
    let checked = metric(
        &metrics,
        "pgsteward_wal_archive_last_check_timestamp_seconds",
    )
    .await?;
    if checked > 0.0 {
        metric(&metrics, name).await
    } else {
        None
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// The id of the (only) backup in the source catalog.
pub fn backup_id(source: &Source) -> String {
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
pub fn drill(source: &Source, scratch: &Path) -> (serde_json::Value, Output) {
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

/// The source's archived segment objects (not history, backup or partial files), in order.
pub fn archived_segments(source: &Source) -> Vec<PathBuf> {
    let wals = source.s3.object_path(&format!("{PREFIX}/{SOURCE}/wals"));
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wals)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|dir| {
            std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.len() == "000000010000000000000001.gz".len())
        })
        .collect();
    segments.sort();
    segments
}

/// A restore with `args` into a new instance `name` fails, saying each of `expected`, and
/// leaves the data directory empty.
pub fn refused_before_writing(
    source: &Source,
    version: PgVersion,
    name: &str,
    args: &[&str],
    expected: &[&str],
) {
    let instance = target_instance(source, version, name);
    let out = restore(source, &instance, args);
    let said = stderr(&out);
    assert!(!out.status.success(), "the restore succeeded: {said}");
    for text in expected {
        assert!(said.contains(text), "expected {text:?} in: {said}");
    }
    assert!(!instance.pgdata.exists() || is_empty(&instance.pgdata));
}

/// `pgsteward wal check` on the source's archive settings exits `code` and says each of
/// `expected`.
pub fn wal_check_says(source: &Source, code: i32, expected: &[&str]) {
    let pgdata = source.instance.pgdata.display().to_string();
    let out = pgsteward(&["wal", "check", "--pgdata", &pgdata]);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "{report}");
    for text in expected {
        assert!(report.contains(text), "expected {text:?} in: {report}");
    }
}

/// `pgsteward wal check --json` on the source's archive settings: exit code and the report of
/// the backup `id`.
pub fn wal_check_json(source: &Source, id: &str) -> (Option<i32>, serde_json::Value) {
    let pgdata = source.instance.pgdata.display().to_string();
    let out = pgsteward(&["wal", "check", "--json", "--pgdata", &pgdata]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let backup = report["backups"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["backup_id"] == id).cloned())
        .unwrap_or_else(|| panic!("no backup {id} in {report}"));
    assert_eq!(report["ok"], out.status.code() == Some(0), "{report}");
    (out.status.code(), backup)
}

/// A field of a backup's `backup.info` in the store.
pub fn backup_field(source: &Source, id: &str, key: &str) -> String {
    let info = source
        .s3
        .object_path(&format!("{PREFIX}/{SOURCE}/base/{id}/backup.info"));
    let text = std::fs::read_to_string(&info).unwrap_or_else(|e| panic!("{}: {e}", info.display()));
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_owned()
}

/// The WAL file name of a segment object.
pub fn segment_name(object: &Path) -> String {
    object
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gz").to_owned())
        .unwrap_or_default()
}
