//! Continuous WAL archiving against real postgres: every segment written under load reaches
//! the archive and restores byte-identical; a quiet commit is archived within
//! `archive_timeout`; a conflicting object is refused and postgres keeps the segment; a
//! destination holding another cluster's WAL is refused; the WAL commands reject bad input;
//! a cluster with 1 MiB segments archives and restores with its own segment size. Faults
//! (store outage, killed manager, full spool) are in `wal_archive_faults.rs`.

#[path = "support/archiving.rs"]
mod archiving;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use archiving::*;
use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::fsutil::ScratchDir;

async fn archive_under_load_restores_byte_identical(version: PgVersion) {
    let (_scratch, store, instance) = file_store_instance(version);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    pgbench(version, instance.pg_port, &["-i", "-s", "3", "-q"]);
    pgbench(version, instance.pg_port, &["-c", "2", "-t", "300", "-n"]);
    for _ in 0..3 {
        query(&instance, "SELECT pg_switch_wal()::text").await;
        query(
            &instance,
            "CREATE TABLE IF NOT EXISTS tick (i int); INSERT INTO tick VALUES (1); SELECT 1",
        )
        .await;
    }
    // The archive's bound on lost commits on a quiet primary (no user setting here).
    assert_eq!(query(&instance, "SHOW archive_timeout").await, "5min");
    let last: String = current_walfile(&instance).await;
    let archive = wait_archived(&instance).await;
    assert_eq!(archive["failed_count"], 0, "{archive}");
    assert!(
        archive["archived_count"].as_u64().unwrap_or(0) >= 5,
        "{archive}"
    );
    assert!(archive["lag_bytes"].as_u64().is_some(), "{archive}");
    assert_eq!(
        metric(&instance.metrics(), "pgsteward_wal_archive_ready_backlog").await,
        Some(0.0)
    );

    // Every segment before the current one is archived, with no gaps, and restores byte-identical.
    verify_prefetched_restores(&instance, &last, 5).await;
    // Objects are in barman-cloud's layout, one gzip member each.
    let object = store.join(format!(
        "cluster-a/wals/{}/{}.gz",
        &last[..16],
        "000000010000000000000001"
    ));
    let first = store.join("cluster-a/wals/0000000100000000/000000010000000000000001.gz");
    assert!(
        first.is_file() || object.is_file(),
        "no object at {}",
        first.display()
    );

    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
}
for_each_version!(archive_under_load_restores_byte_identical);

/// A cluster created with 1 MiB WAL segments (`bootstrap.initdb.wal_segment_size_mb`):
/// the manager takes its segment size from the cluster, every segment is archived, `wal
/// check` counts with that size (no false gaps), and the prefetch spool fetches the right
/// next segments. Restarted with another size configured, it says the setting does not apply
/// and keeps the cluster's.
async fn small_segments_archive_and_restore(version: PgVersion) {
    let scratch = ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    let mut opts = archive_options(version, &format!("file://{}", store.display()));
    opts.args
        .push("--set=bootstrap.initdb.wal_segment_size_mb=1".into());
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    assert_eq!(query(&instance, "SHOW wal_segment_size").await, "1MB");
    assert!(
        manager.log().contains("\"segment_bytes\":1048576"),
        "{}",
        manager.log()
    );
    pgbench(version, instance.pg_port, &["-i", "-s", "1", "-q"]);
    query(&instance, "SELECT pg_switch_wal()::text").await;
    query(
        &instance,
        "CREATE TABLE tick (i int); INSERT INTO tick VALUES (1); SELECT 1",
    )
    .await;
    let last: String = current_walfile(&instance).await;
    let archive = wait_archived(&instance).await;
    assert_eq!(archive["failed_count"], 0, "{archive}");

    let pgdata = instance.pgdata.display().to_string();
    let check = pgsteward(&["wal", "check", "--pgdata", &pgdata, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&check.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&check.stdout)));
    assert_eq!(report["segment_bytes"], 1 << 20, "{report}");
    assert_eq!(report["gaps"], serde_json::json!([]), "{report}");
    verify_prefetched_restores(&instance, &last, 10).await;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());

    // Another size configured later applies to no existing cluster: said, and the cluster's
    // own size is used.
    let mut again =
        instance.spawn_with(&["--set=bootstrap.initdb.wal_segment_size_mb=16".to_owned()]);
    again.wait_ready(READY).await;
    let log = again.log();
    assert!(
        log.contains("wal_segment_size_mb differs from this cluster's WAL segment size")
            && log.contains("\"segment_bytes\":1048576"),
        "{log}"
    );
    again.signal(Signal::SIGTERM).await;
    assert_eq!(again.wait_exit(EXIT).await, 0, "{}", again.log());
}
for_each_version!(small_segments_archive_and_restore);

/// A commit on a quiet primary reaches the archive without anyone switching WAL files:
/// `archive_timeout` (5 minutes by default when archiving, 2 s set by the user here) closes
/// the segment that holds it, and the user's setting wins over the default. Right after the
/// start too: without the manager waking postgres's checkpointer, its first sleep ignores
/// `archive_timeout` and lasts `checkpoint_timeout` (5 minutes), and this test times out.
async fn a_quiet_commit_is_archived_within_archive_timeout(version: PgVersion) {
    let scratch = ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    let mut opts = archive_options(version, &format!("file://{}", store.display()));
    opts.parameters
        .push(("archive_timeout".into(), "2s".into()));
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    assert_eq!(query(&instance, "SHOW archive_timeout").await, "2s");

    query(
        &instance,
        "CREATE TABLE quiet (i int); INSERT INTO quiet VALUES (1); SELECT 1",
    )
    .await;
    let holding = current_walfile(&instance).await;
    let object = store.join(format!("cluster-a/wals/{}/{holding}.gz", &holding[..16]));
    wait_file(
        "the segment holding the commit archived without a WAL switch",
        Duration::from_secs(60),
        &object,
    )
    .await;

    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
}
for_each_version!(a_quiet_commit_is_archived_within_archive_timeout);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_object_is_refused_and_postgres_keeps_the_segment() {
    let (scratch, store, instance) = file_store_instance(PgVersion::V15);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    // Archive once so the destination is accepted, then plant a conflict.
    query(&instance, "SELECT pg_switch_wal()::text").await;
    wait_archived(&instance).await;
    // New WAL inside the next segment (at a segment boundary pg_walfile_name names the previous one).
    query(
        &instance,
        "CREATE TABLE t (i int); INSERT INTO t VALUES (1); SELECT 1",
    )
    .await;
    let current: String = current_walfile(&instance).await;
    // Somebody else's object where the current segment will go.
    let key = store.join(format!("cluster-a/wals/{}/{current}.gz", &current[..16]));
    std::fs::create_dir_all(key.parent().unwrap_or(Path::new("/")))
        .unwrap_or_else(|e| panic!("{e}"));
    let foreign =
        pgsteward_archive::compress::gzip(b"not this cluster's WAL", 6).unwrap_or_default();
    std::fs::write(&key, &foreign).unwrap_or_else(|e| panic!("{e}"));
    scratch.chown_postgres(&key);
    query(&instance, "SELECT pg_switch_wal()::text").await;
    let archive = wait_for(
        "the conflict to be reported",
        Duration::from_secs(60),
        || async {
            let status = http::get(&format!("{}/pg/status", instance.api()))
                .await?
                .json();
            let archive = status.get("archive")?.clone();
            archive["last_failure"]
                .as_str()
                .is_some_and(|f| f.contains("refusing to overwrite"))
                .then_some(archive)
        },
    )
    .await;
    assert_eq!(archive["last_failed_wal"], current.as_str());
    assert!(
        metric(&instance.metrics(), "pgsteward_wal_archive_conflicts_total")
            .await
            .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        std::fs::read(&key).unwrap_or_default(),
        foreign,
        "the foreign object was overwritten"
    );
    assert!(
        instance.pgdata.join(format!("pg_wal/{current}")).is_file(),
        "postgres lost the segment"
    );
    assert!(instance
        .pgdata
        .join(format!("pg_wal/archive_status/{current}.ready"))
        .is_file());
    manager.signal(Signal::SIGQUIT).await;
    manager.wait_exit(EXIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_with_another_clusters_wal_is_refused_until_allowed() {
    let scratch = ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    // Another cluster's segment, at a name this cluster will not reach in the test.
    let old = store.join("cluster-a/wals/00000001000000A0/00000001000000A0000000F0.gz");
    std::fs::create_dir_all(old.parent().unwrap_or(Path::new("/")))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &old,
        pgsteward_archive::compress::gzip(b"old cluster", 6).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let chown = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(&store)
        .status();
    assert!(chown.is_ok_and(|s| s.success()));
    let instance = Instance::new(archive_options(
        PgVersion::V15,
        &format!("file://{}", store.display()),
    ));
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    query(&instance, "SELECT pg_switch_wal()::text").await;
    wait_for("the refusal", Duration::from_secs(60), || async {
        let status = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        status["archive"]["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("refusing to mix WAL of different clusters"))
            .then_some(())
    })
    .await;
    manager.signal(Signal::SIGTERM).await;
    // The shutdown checkpoint cannot be archived either: postgres waits, then smart→fast.
    let _ = manager.wait_exit(EXIT).await;

    let mut allowed = instance.spawn_with(&["--set=archive.allow_existing_wal=true".into()]);
    allowed.wait_ready(READY).await;
    wait_archived(&instance).await;
    allowed.signal(Signal::SIGTERM).await;
    assert_eq!(allowed.wait_exit(EXIT).await, 0, "{}", allowed.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_commands_reject_bad_input() {
    let (_scratch, store, instance) = file_store_instance(PgVersion::V15);
    let manager = instance.spawn();
    manager.wait_ready(READY).await;
    let pgdata = instance.pgdata.display().to_string();
    for (args, expected) in [
        (
            vec!["wal-archive", "--pgdata", &pgdata, "/etc/passwd"],
            "outside",
        ),
        (
            vec![
                "wal-archive",
                "--pgdata",
                &pgdata,
                "pg_wal/000000010000000000000001.evil",
            ],
            "not a WAL file name",
        ),
        (
            vec![
                "wal-archive",
                "--pgdata",
                &pgdata,
                "pg_wal/0000000100000000000000AA",
            ],
            "cannot be read",
        ),
        (
            vec![
                "wal-restore",
                "--pgdata",
                &pgdata,
                "../../etc/passwd",
                "pg_wal/x",
            ],
            "not a WAL file name",
        ),
        (
            vec![
                "wal-restore",
                "--pgdata",
                &pgdata,
                "000000010000000000000001",
                "/tmp/elsewhere",
            ],
            "outside",
        ),
        (
            vec![
                "wal-archive",
                "--pgdata",
                "/nonexistent",
                "pg_wal/000000010000000000000001",
            ],
            "pgsteward.archive.json",
        ),
    ] {
        let out = pgsteward(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }
    // A missing segment is "not found" (exit 1) quickly, without an error.
    let started = std::time::Instant::now();
    let out = pgsteward(&[
        "wal-restore",
        "--pgdata",
        &pgdata,
        "0000000100000000000000AB",
        "pg_wal/RECOVERYXLOG",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("ERROR"));
    assert!(started.elapsed() < Duration::from_secs(5));

    // Files in pg_wal that are not the segment their name says are refused, by the manager
    // and by the direct upload alike, and nothing is stored under their names (the real
    // segment could never be archived after them).
    let wal_dir = instance.pgdata.join("pg_wal");
    let real = std::fs::read(wal_dir.join("000000010000000000000001"))
        .unwrap_or_else(|e| panic!("reading the first segment: {e}"));
    let mut foreign = real.clone();
    foreign[24] ^= 0xFF; // xlp_sysid: another database system
    let bad_files = [
        (
            "0000000100000000000000A0",
            vec![0u8; 8192],
            "8192 bytes is not a WAL segment size",
        ),
        (
            "0000000100000000000000A1",
            real,
            "its header places it at WAL position 0/1000000",
        ),
        (
            "000000020000000000000001",
            foreign,
            "belongs to database system",
        ),
    ];
    for (name, content, _) in &bad_files {
        let path = wal_dir.join(name);
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("{e}"));
        let chown = Command::new("chown").arg("postgres").arg(&path).status();
        assert!(chown.is_ok_and(|s| s.success()));
    }
    let refused = |expected: &str, name: &str, how: &str| {
        let out = pgsteward(&[
            "wal-archive",
            "--pgdata",
            &pgdata,
            &format!("pg_wal/{name}"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{how} {name}: {stderr}");
        assert!(
            stderr.contains(&format!("refusing to archive {name}")) && stderr.contains(expected),
            "{how} {name}: expected {expected:?} in {stderr}"
        );
    };
    for (name, _, expected) in &bad_files {
        refused(expected, name, "through the manager");
    }
    let mut manager = manager;
    manager.signal(Signal::SIGTERM).await;
    let _ = manager.wait_exit(EXIT).await;
    for (name, _, expected) in &bad_files {
        refused(expected, name, "directly");
    }
    let stored = walk(&store);
    assert!(
        bad_files
            .iter()
            .all(|(name, _, _)| stored.iter().all(|key| !key.contains(name))),
        "a refused file was stored: {stored:?}"
    );
}
