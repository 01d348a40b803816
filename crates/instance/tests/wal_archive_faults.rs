//! WAL archiving through faults, against real postgres and a real S3 server: the store gone
//! for 30 s under load (nothing lost or skipped, the backlog drains), the manager killed in
//! the middle of an upload (no partial object counted as archived), and a full prefetch spool
//! (restores fall back to direct fetches).

#[path = "support/archiving.rs"]
mod archiving;
mod common;

use std::process::Command;
use std::time::Duration;

use archiving::*;
use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::fsutil::ScratchDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_during_load_loses_and_skips_nothing() {
    let mut s3 = pgsteward_testkit::s3::S3Server::new().await;
    let creds = ScratchDir::new();
    let instance = Instance::new(s3_options(PgVersion::V15, &s3, creds.path()));
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    pgbench(PgVersion::V15, instance.pg_port, &["-i", "-s", "2", "-q"]);
    query(&instance, "SELECT pg_switch_wal()::text").await;
    wait_archived(&instance).await;

    // The store goes away for 30 s while postgres keeps writing and switching segments.
    s3.stop();
    let outage = std::time::Instant::now();
    let mut switched = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        pgbench(
            PgVersion::V15,
            instance.pg_port,
            &["-c", "2", "-t", "100", "-n"],
        );
        query(&instance, "SELECT pg_switch_wal()::text").await;
        switched += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = manager.status().await["archive"].clone();
    assert!(
        during["ready_backlog"].as_u64().unwrap_or(0) >= 1,
        "nothing waited during the outage: {during}"
    );
    assert!(
        during["failed_count"].as_u64().unwrap_or(0) >= 1,
        "{during}"
    );
    let last: String = current_walfile(&instance).await;

    s3.start().await;
    let after = wait_archived(&instance).await;
    assert!(
        after["archived_count"].as_u64().unwrap_or(0) >= switched,
        "{after}"
    );
    let compared = verify_archive(&instance, &last);
    assert!(
        compared >= switched as usize,
        "compared {compared}, switched {switched}"
    );
    // Objects sit under the destination prefix in barman's layout.
    let first =
        s3.object_path("backups/cluster-a/wals/0000000100000000/000000010000000000000001.gz");
    assert!(first.is_file(), "{}", first.display());
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
    assert!(
        !manager.log().contains(s3.secret_key()),
        "the S3 secret reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_killed_mid_upload_counts_no_partial_object() {
    let s3 = pgsteward_testkit::s3::S3Server::new().await;
    let creds = ScratchDir::new();
    let instance = Instance::new(s3_options(PgVersion::V15, &s3, creds.path()));
    let mut first = instance.spawn();
    first.wait_ready(READY).await;
    pgbench(PgVersion::V15, instance.pg_port, &["-i", "-s", "2", "-q"]);
    // Kill the manager while segments are being uploaded; postgres keeps running and its
    // archive_command falls back to uploading by itself.
    query(&instance, "SELECT pg_switch_wal()::text").await;
    first.signal(Signal::SIGKILL).await;
    first.wait_exit(EXIT).await;
    for _ in 0..3 {
        pgbench(
            PgVersion::V15,
            instance.pg_port,
            &["-c", "2", "-t", "100", "-n"],
        );
        query(&instance, "SELECT pg_switch_wal()::text").await;
    }
    wait_for(
        "postgres to archive without a manager",
        Duration::from_secs(120),
        || async {
            let ready = std::fs::read_dir(instance.pgdata.join("pg_wal/archive_status"))
                .ok()?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count();
            (ready == 0).then_some(())
        },
    )
    .await;
    let mut second = instance.spawn();
    second.wait_ready(READY).await;
    let last: String = current_walfile(&instance).await;
    wait_archived(&instance).await;
    let compared = verify_archive(&instance, &last);
    assert!(compared >= 4, "{compared}");
    // No temporary or partial object is left in the bucket.
    let stray: Vec<String> = walk(s3.root())
        .into_iter()
        .filter(|p| p.contains("/wals/") && !p.ends_with(".gz"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    second.signal(Signal::SIGTERM).await;
    assert_eq!(second.wait_exit(EXIT).await, 0, "{}", second.log());
}

/// Unmounts a test tmpfs on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_prefetch_spool_falls_back_to_direct_restores() {
    let (_scratch, _store, instance) = file_store_instance(PgVersion::V15);
    let manager = instance.spawn();
    manager.wait_ready(READY).await;
    for _ in 0..4 {
        query(&instance, "CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t VALUES (1); SELECT pg_switch_wal()::text").await;
    }
    wait_archived(&instance).await;
    // A spool on a 64 KiB file system: no 16 MiB segment fits.
    let spool = instance.pgdata.join("pg_wal/pgsteward-prefetch");
    std::fs::create_dir_all(&spool).unwrap_or_else(|e| panic!("{e}"));
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0777", "tmpfs"])
        .arg(&spool)
        .status();
    assert!(
        mounted.is_ok_and(|s| s.success()),
        "mounting a tmpfs needs root"
    );
    let _mount = Mount(spool.clone());
    let pgdata = instance.pgdata.display().to_string();
    for name in [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    ] {
        let dest = instance.pgdata.join("pg_wal/pgsteward-test-restore");
        let out = pgsteward(&[
            "wal-restore",
            "--pgdata",
            &pgdata,
            name,
            &dest.display().to_string(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0),
            16 << 20
        );
    }
    wait_for(
        "the spool failure in the log",
        Duration::from_secs(30),
        || async {
            manager
                .log()
                .contains("prefetch spool write failed")
                .then_some(())
        },
    )
    .await;
}
