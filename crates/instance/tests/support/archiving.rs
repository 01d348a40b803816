//! Helpers of the WAL archiving tests (included with `#[path = "support/archiving.rs"] mod
//! archiving;` after `mod common;`): instances archiving to a `file://` store or the S3
//! server, pgbench load, waiting until nothing is `.ready`, and checking that every segment
//! restores byte-identical through the manager's prefetch spool.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::common::*;
use pgsteward_testkit::fsutil::ScratchDir;

pub fn pgbench(version: PgVersion, port: u16, args: &[&str]) {
    let status = Command::new(version.bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("pgbench: {e}"));
    assert!(status.success(), "pgbench {args:?} failed");
}

pub fn archive_options(version: PgVersion, destination: &str) -> ManagerOptions {
    let mut opts = options(version);
    opts.args = vec![
        format!("--set=archive.destination={destination}"),
        "--set=archive.server_name=cluster-a".into(),
        "--set=archive.wal.gzip_level=1".into(),
    ];
    opts.parameters = vec![("wal_keep_size".into(), "1GB".into())];
    opts
}

/// A scratch directory with a `store` directory, and an instance archiving to it (file://).
pub fn file_store_instance(version: PgVersion) -> (ScratchDir, PathBuf, Instance) {
    let scratch = ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    let instance = Instance::new(archive_options(
        version,
        &format!("file://{}", store.display()),
    ));
    (scratch, store, instance)
}

pub async fn wait_archived(instance: &Instance) -> serde_json::Value {
    wait_for(
        "an empty .ready backlog",
        Duration::from_secs(120),
        || async {
            let status = http::get(&format!("{}/pg/status", instance.api()))
                .await?
                .json();
            let archive = status.get("archive")?.clone();
            let ready = std::fs::read_dir(instance.pgdata.join("pg_wal/archive_status"))
                .ok()?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count();
            (ready == 0 && archive["ready_backlog"] == 0).then_some(archive)
        },
    )
    .await
}

/// Every segment before `last` in pg_wal is archived (no gaps) and restores byte-identical;
/// returns how many were compared.
pub fn verify_archive(instance: &Instance, last: &str) -> usize {
    let pgdata = instance.pgdata.display().to_string();
    let check = pgsteward(&["wal", "check", "--pgdata", &pgdata]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let mut compared = 0;
    // In order, as postgres's startup process asks: the manager's prefetch spool serves them.
    let mut segments: Vec<_> = std::fs::read_dir(instance.pgdata.join("pg_wal"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .filter(|(name, _)| name.len() == 24 && name.as_str() < last)
        .collect();
    segments.sort();
    for (name, path) in segments {
        let dest = instance.pgdata.join("pg_wal/pgsteward-test-restore");
        let out = pgsteward(&[
            "wal-restore",
            "--pgdata",
            &pgdata,
            &name,
            &dest.display().to_string(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "restoring {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(&dest).unwrap_or_default() == std::fs::read(&path).unwrap_or_default(),
            "{name} differs after restore"
        );
        compared += 1;
    }
    compared
}

/// `verify_archive` (at least `at_least` segments) through the running manager: after the
/// first, every in-order request finds its segment prefetched (or waits for the download
/// under way instead of fetching it twice).
pub async fn verify_prefetched_restores(instance: &Instance, last: &str, at_least: usize) {
    let compared = verify_archive(instance, last);
    assert!(compared >= at_least, "only {compared} segments compared");
    let hits = metric(
        &instance.metrics(),
        "pgsteward_wal_restore_prefetch_hits_total",
    )
    .await
    .unwrap_or(0.0);
    assert!(
        hits >= (compared - 1) as f64,
        "{hits} prefetch hits for {compared} in-order restores"
    );
}

/// Options archiving to the S3 server through its endpoint, credentials in files readable by
/// the postgres user.
pub fn s3_options(
    version: PgVersion,
    s3: &pgsteward_testkit::s3::S3Server,
    creds_dir: &Path,
) -> ManagerOptions {
    let mut opts = options(version);
    opts.args = s3_archive_args(s3, creds_dir, "backups", "cluster-a");
    opts.args.extend([
        "--set=archive.wal.gzip_level=1".into(),
        "--set=archive.wal.timeout=20s".into(),
    ]);
    opts.parameters = vec![("wal_keep_size".into(), "1GB".into())];
    opts
}

pub fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out
}
