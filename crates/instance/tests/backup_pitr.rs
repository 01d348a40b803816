//! pgsteward's own backups restored by pgsteward, on PostgreSQL 15 and 18 with a real S3
//! server: a base backup taken through `POST /pg/backup` while pgbench writes, then known
//! transactions; `pgsteward restore` to a time between 'first' and 'second' recovers exactly
//! 'first' and the pgbench tables as they were at that time; `pgsteward drill` passes on it.

// Test code: the shared async test bodies are not `#[test]` functions clippy exempts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/pitr.rs"]
mod pitr;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pitr::*;

const CHECKSUM: &str = "SELECT (SELECT sum(abalance) || '/' || count(*) FROM pgbench_accounts) \
     || ' ' || (SELECT count(*) FROM pgbench_history)";

fn pgbench(instance: &Instance, version: PgVersion, args: &[&str]) -> Command {
    let mut command = Command::new(version.bin_dir().join("pgbench"));
    command
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(instance.pg_port.to_string())
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

async fn own_backup_restores_to_a_point_in_time(version: PgVersion) {
    let (s3, creds, instance, manager) = start_source(version, &[]).await;
    let init = pgbench(&instance, version, &["-i", "-s", "2", "-q"])
        .status()
        .unwrap();
    assert!(init.success(), "pgbench -i failed");

    // The backup runs while pgbench writes (bounded: 3000 transactions per client).
    let mut load = pgbench(&instance, version, &["-c", "2", "-t", "3000", "-n"])
        .spawn()
        .unwrap();
    let auth = format!("Bearer {TOKEN}");
    let response = http::request(
        "POST",
        &format!("{}/pg/backup", instance.api()),
        &[("authorization", auth.as_str())],
        "",
    )
    .await
    .unwrap();
    assert_eq!(response.status, 202, "{}", response.body);
    let id = response.json()["backup_id"].as_str().unwrap().to_owned();
    let last = wait_for("the backup to finish", Duration::from_secs(300), || async {
        let status = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        let last = status["backup"]["last"].clone();
        (last["backup_id"] == id.as_str()).then_some(last)
    })
    .await;
    assert_eq!(last["succeeded"], true, "{last}");
    let load_status = wait_for("pgbench to finish", Duration::from_secs(300), || {
        let done = load.try_wait().unwrap();
        async move { done }
    })
    .await;
    assert!(load_status.success(), "pgbench failed");
    // The state the point-in-time restore must bring back.
    let expected = sql(&instance, CHECKSUM).await;

    let source = finish_source(s3, creds, instance, manager).await;
    // Changes after the target that must not come back.
    let after = pgbench(&source.instance, version, &["-c", "1", "-t", "200", "-n"])
        .status()
        .unwrap();
    assert!(after.success());
    assert_ne!(sql(&source.instance, CHECKSUM).await, expected);
    switch_and_wait_archived(&source.instance, &source.s3).await;
    assert_eq!(backup_id(&source), id);

    // Restore to the time between 'first' and 'second', start, compare.
    let target = target_instance(&source, version, "pitr-own");
    let out = restore(
        &source,
        &target,
        &[&format!("--target-time={}", source.between)],
    );
    assert!(
        out.status.success(),
        "pgsteward restore failed: {}",
        stderr(&out)
    );
    let mut restored = target.spawn();
    restored.wait_ready(READY).await;
    assert_eq!(
        query(&target, "SELECT string_agg(v, ',' ORDER BY v) FROM t").await,
        "base,first"
    );
    assert_eq!(
        pgsteward_testkit::sql_value(target.pg_port, PASSWORD, CHECKSUM)
            .await
            .unwrap(),
        expected
    );
    restored.signal(nix::sys::signal::Signal::SIGTERM).await;
    assert_eq!(restored.wait_exit(EXIT).await, 0);

    // A restore drill of the same backup passes.
    let scratch = pgsteward_testkit::fsutil::ScratchDir::new();
    let (report, out) = drill(&source, scratch.path());
    assert!(out.status.success(), "drill failed: {report}");
}
for_each_version!(own_backup_restores_to_a_point_in_time);
