//! A failover leaves no hole in the archive: the segments a primary could not archive before
//! it failed, which its standby received by streaming (and postgres marked archived there
//! without archiving them), reach the archive once the standby is promoted. Real PostgreSQL
//! 15 and 18, a `file://` archive the primary cannot write to while it fails.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgsteward_backup::restore::target::Lsn;
use pgsteward_testkit::fsutil::ScratchDir;

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

async fn received_wal_is_archived_after_failover(version: PgVersion) {
    let scratch = ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    let archive_args = file_archive_args(&store);
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
    let mut replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;

    // The archive stops taking the primary's WAL; the standby still receives it.
    query(&primary, "SELECT pg_switch_wal()::text").await;
    wait_for("the primary's backlog archived", READY, || async {
        let status = http::get(&format!("{}/pg/status", primary.api()))
            .await?
            .json();
        (status["archive"]["ready_backlog"] == 0 && status["archive"]["archived_count"] != 0)
            .then_some(())
    })
    .await;
    set_writable(&store, false);
    for i in 0..3 {
        exec(&primary, &format!("INSERT INTO t VALUES ({i})")).await;
        query(&primary, "SELECT pg_switch_wal()::text").await;
    }
    exec(&primary, "INSERT INTO t VALUES (99)").await;
    let sent = lsn_value(&primary, "SELECT pg_current_wal_lsn()::text").await;
    wait_for("the standby to replay the primary's WAL", READY, || async {
        let replayed = lsn_value(&replica, "SELECT pg_last_wal_replay_lsn()::text").await;
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

    // The primary fails (manager and postmaster killed); the archive works again.
    let postmaster = pgsteward_testkit::manager::postmaster_pid(&primary.pgdata);
    kill(Pid::from_raw(primary_manager.pid().await), Signal::SIGKILL)
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(pid) = postmaster {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    set_writable(&store, true);

    let (code, body) = post(&replica, "/pg/promote", Some(TOKEN), r#"{"term":2}"#).await;
    assert_eq!(code, 200, "{body}");
    for name in &unarchived {
        let object = store.join(format!("cluster/wals/{}/{name}.gz", &name[..16]));
        wait_file(
            &format!("{name}, received by the standby, archived"),
            Duration::from_secs(60),
            &object,
        )
        .await;
    }

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
