//! A failover leaves no hole in the archive: the segments a primary could not archive before
//! it failed, which its standby received by streaming (and postgres marked archived there
//! without archiving them), reach the archive once the standby is promoted. With
//! `archive.wal.archive_on_standbys` the standby keeps them through its restartpoints and
//! archives them itself, promoted or not. Real PostgreSQL 15 and 18, a `file://` archive the
//! primary cannot write to while it fails.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgsteward_backup::restore::target::Lsn;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::Manager;

/// Make `dir` and everything below it writable or not (the manager writes as postgres).
fn set_writable(dir: &std::path::Path, writable: bool) {
    let mode = if writable { "u+w" } else { "a-w" };
    let status = Command::new("chmod").args(["-R", mode]).arg(dir).status();
    assert!(status.is_ok_and(|s| s.success()), "chmod -R {mode}");
}

async fn lsn_value(instance: &Instance, sql: &str) -> Lsn {
    let text = query(instance, sql).await;
    text.parse()
        .unwrap_or_else(|e| panic!("{sql} returned {text:?}: {e}"))
}

/// A primary and its streaming standby, both archiving into `store` with `extra` settings.
async fn primary_and_standby(
    version: PgVersion,
    store: &std::path::Path,
    extra: &[&str],
) -> (Instance, Manager, Instance, Manager) {
    let mut archive_args = file_archive_args(store);
    archive_args.extend(extra.iter().map(|s| s.to_string()));
    let mut primary_options = options(version);
    primary_options.args.clone_from(&archive_args);
    primary_options
        .parameters
        .push(("wal_keep_size".into(), "256MB".into()));
    let primary = Instance::new(primary_options);
    let primary_manager = primary.spawn();
    primary_manager.wait_ready(READY).await;
    exec(&primary, "CREATE TABLE t (i int)").await;

    let mut replica = Instance::new(options(version));
    replica.options.args = vec![
        "--set=bootstrap.method=basebackup".into(),
        "--set=bootstrap.basebackup.host=127.0.0.1".into(),
        format!("--set=bootstrap.basebackup.port={}", primary.pg_port),
        format!(
            "--set=bootstrap.basebackup.password_file={}",
            replica.dir.join("superuser.pw").display()
        ),
    ];
    replica.options.args.extend(archive_args.iter().cloned());
    let replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;
    (primary, primary_manager, replica, replica_manager)
}

/// The archive stops taking WAL (the store read-only) while the primary writes three
/// segments, which the standby replays; returns the segments the primary holds `.ready`.
async fn segments_the_primary_cannot_archive(
    primary: &Instance,
    replica: &Instance,
    store: &std::path::Path,
) -> Vec<String> {
    query(primary, "SELECT pg_switch_wal()::text").await;
    wait_for("the primary's backlog archived", READY, || async {
        let status = http::get(&format!("{}/pg/status", primary.api()))
            .await?
            .json();
        (status["archive"]["ready_backlog"] == 0 && status["archive"]["archived_count"] != 0)
            .then_some(())
    })
    .await;
    set_writable(store, false);
    for i in 0..3 {
        exec(primary, &format!("INSERT INTO t VALUES ({i})")).await;
        query(primary, "SELECT pg_switch_wal()::text").await;
    }
    // A checkpoint record for the standby's restartpoint below.
    exec(primary, "INSERT INTO t VALUES (99); CHECKPOINT").await;
    let sent = lsn_value(primary, "SELECT pg_current_wal_lsn()::text").await;
    wait_for("the standby to replay the primary's WAL", READY, || async {
        let replayed = lsn_value(replica, "SELECT pg_last_wal_replay_lsn()::text").await;
        (replayed >= sent).then_some(())
    })
    .await;
    let unarchived: Vec<String> = std::fs::read_dir(primary.pgdata.join("pg_wal/archive_status"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".ready")
                .filter(|n| n.len() == 24)
                .map(str::to_owned)
        })
        .collect();
    assert!(
        unarchived.len() >= 3,
        "the primary archived its segments anyway: {unarchived:?}"
    );
    unarchived
}

/// The primary fails: manager and postmaster killed.
async fn kill_primary(primary: &Instance, manager: &Manager) {
    let postmaster = pgsteward_testkit::manager::postmaster_pid(&primary.pgdata);
    kill(Pid::from_raw(manager.pid().await), Signal::SIGKILL).unwrap_or_else(|e| panic!("{e}"));
    if let Some(pid) = postmaster {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Each of `names` reaches the archive in `store` within a minute.
async fn wait_archived(store: &std::path::Path, names: &[String], how: &str) {
    for name in names {
        let object = store.join(format!("cluster/wals/{}/{name}.gz", &name[..16]));
        wait_file(
            &format!("{name} archived {how}"),
            Duration::from_secs(60),
            &object,
        )
        .await;
    }
}

async fn received_wal_is_archived_after_failover(version: PgVersion) {
    let scratch = ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    let (primary, primary_manager, replica, mut replica_manager) =
        primary_and_standby(version, &store, &[]).await;
    let unarchived = segments_the_primary_cannot_archive(&primary, &replica, &store).await;
    kill_primary(&primary, &primary_manager).await;
    set_writable(&store, true);

    let (code, body) = post(&replica, "/pg/promote", Some(TOKEN), r#"{"term":2}"#).await;
    assert_eq!(code, 200, "{body}");
    wait_archived(&store, &unarchived, "after the standby's promotion").await;

    replica_manager.signal(Signal::SIGTERM).await;
    assert_eq!(
        replica_manager.wait_exit(EXIT).await,
        0,
        "{}",
        replica_manager.log()
    );
    drop(primary_manager);
}
for_each_version!(received_wal_is_archived_after_failover);

async fn standbys_keep_and_archive_what_the_primary_could_not(version: PgVersion) {
    let scratch = ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    let extra = [
        "--set=archive.wal.archive_on_standbys=true",
        "--set=archive.wal.standby_grace=2s",
    ];
    let (primary, primary_manager, replica, mut replica_manager) =
        primary_and_standby(version, &store, &extra).await;
    assert_eq!(query(&replica, "SHOW archive_mode").await, "always");
    let unarchived = segments_the_primary_cannot_archive(&primary, &replica, &store).await;

    // A restartpoint while the store is unwritable: the standby keeps the segments, still to
    // be archived (with archive_mode = on they would be marked done, and may be removed).
    exec(&replica, "CHECKPOINT").await;
    let status_dir = replica.pgdata.join("pg_wal/archive_status");
    for name in &unarchived {
        assert!(
            replica.pgdata.join("pg_wal").join(name).is_file()
                && status_dir.join(format!("{name}.ready")).is_file(),
            "the standby does not keep {name} to archive: {:?}",
            std::fs::read_dir(&status_dir)
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
    }

    // The primary fails and the store works again: the standby archives them itself,
    // without being promoted.
    kill_primary(&primary, &primary_manager).await;
    set_writable(&store, true);
    wait_archived(&store, &unarchived, "by the standby").await;
    wait_for("the standby's backlog archived", READY, || async {
        let status = http::get(&format!("{}/pg/status", replica.api()))
            .await?
            .json();
        let archive = &status["archive"];
        (archive["ready_backlog"] == 0 && archive["archived_count"].as_u64()? >= 3).then_some(())
    })
    .await;
    assert_eq!(
        query(&replica, "SELECT pg_is_in_recovery()::text").await,
        "true"
    );
    // What the primary had stored was left to it: the standby uploaded only what it lacked.
    let log = replica_manager.log();
    let uploaded: Vec<String> = log
        .lines()
        .filter(|line| line.contains("archiving it from the standby"))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| entry["wal"].as_str().map(str::to_owned))
        .collect();
    assert!(!uploaded.is_empty(), "{log}");
    for name in &uploaded {
        assert!(
            unarchived.contains(name),
            "the standby uploaded {name}, which the primary had archived: {log}"
        );
    }

    replica_manager.signal(Signal::SIGTERM).await;
    assert_eq!(
        replica_manager.wait_exit(EXIT).await,
        0,
        "{}",
        replica_manager.log()
    );
}
for_each_version!(standbys_keep_and_archive_what_the_primary_could_not);
