//! Base backups through the manager (real postgres 15 and 18, real s3s-fs, barman-cloud):
//! `POST /pg/backup` (401 without the token, 202 with the id, 409 while one runs), progress
//! and outcome in `/pg/status`, the backup metrics, `pgsteward backup --wait` and
//! `pgsteward backup verify`.

// The per-version test bodies are test code too (clippy only exempts `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup_support;
mod common;

use std::process::Command;
use std::time::Duration;

use backup_support::*;
use common::*;
use nix::sys::signal::Signal;

async fn api_cli_status_and_metrics(version: PgVersion) {
    let mut setup = setup(version).await;
    let instance = &setup.instance;
    pgbench_init(instance, 2);
    let url = format!("{}/pg/backup", instance.api());
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    // Unauthenticated requests are refused like every mutating route.
    let refused = http::request("POST", &url, &[], "").await.unwrap();
    assert_eq!(refused.status, 401);
    let first = http::request("POST", &url, &headers, r#"{"immediate_checkpoint": true}"#)
        .await
        .unwrap();
    assert_eq!(first.status, 202, "{}", first.body);
    let id = first.json()["backup_id"].as_str().unwrap().to_owned();
    let second = http::request("POST", &url, &headers, "").await.unwrap();
    assert_eq!(second.status, 409, "{}", second.body);
    assert!(second.body.contains(&id), "{}", second.body);
    let last = wait_for("the backup to finish", Duration::from_secs(180), || async {
        let status = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        let last = status["backup"]["last"].clone();
        (last["backup_id"] == id.as_str()).then_some(status["backup"].clone())
    })
    .await;
    assert_eq!(last["last"]["succeeded"], true, "{last}");
    assert!(last["running"].is_null());
    assert!(last["first_recoverability_point"].is_string(), "{last}");
    let metrics = instance.metrics();
    for name in [
        "pgsteward_backup_last_success_timestamp",
        "pgsteward_backup_first_recoverability_point",
    ] {
        let value = metric(&metrics, name).await.unwrap_or(0.0);
        assert!(value > 1.7e9, "{name} = {value}");
    }
    assert_eq!(
        metric(&metrics, "pgsteward_backup_running").await,
        Some(0.0)
    );

    // The CLI: take a backup at once (in the same second as the first one ended, it gets the
    // next second's id instead of colliding) and wait for it, then verify it from the store.
    let token_file = instance.dir.join("api.token");
    let out = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["backup", "--wait", "--url", &instance.api(), "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" done in "), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["backup", "verify", &id, "--pgdata"])
        .arg(&instance.pgdata)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("is intact"), "{stdout}");
    let listed = barman_run(
        "barman-cloud-backup-list",
        &setup.s3,
        &[&format!("s3://{}/{PREFIX}", setup.s3.bucket()), SERVER],
    );
    assert_eq!(listed.matches(" 0000000").count(), 2, "{listed}");
    setup.manager.signal(Signal::SIGTERM).await;
    assert_eq!(setup.manager.wait_exit(EXIT).await, 0);
}
for_each_version!(api_cli_status_and_metrics);
