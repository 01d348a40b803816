//! Measurement (not a correctness test; run explicitly):
//! `cargo test -p pgsteward-backup --test retention_bench -- --ignored --nocapture`.
//! A catalog of 10 daily backups with `PGSTEWARD_BENCH_WAL_PER_DAY` (default 500) WAL
//! segments per day in s3s-fs, twice; `REDUNDANCY 3` applied by barman-cloud-backup-delete
//! to one copy and by pgsteward to the other; prints both durations and checks both left
//! the same objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::{backup_id_for, BackupInfo, BackupStatus};
use pgsteward_backup::retention::{run_retention, ApplyOptions, RetentionPolicy};
use pgsteward_testkit::s3::S3Server;

fn write_file(s3: &S3Server, key: &str, body: &[u8]) {
    let path = s3.object_path(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn keys_below(root: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn retention_speed_against_barman() {
    let per_day: u64 = std::env::var("PGSTEWARD_BENCH_WAL_PER_DAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let env = support::Env::new("pg").await;
    let s3 = &env.s3;
    let now = Utc::now();
    for prefix in ["bench/barman", "bench/pgsteward"] {
        let mut segno = 1u64;
        for day in (0..10i64).rev() {
            let end = now - TimeDelta::days(day) - TimeDelta::hours(2);
            let id = backup_id_for(&end);
            let name = |s: u64| format!("00000001{:08X}{:08X}", s / 256, s % 256);
            let mut info = BackupInfo::new(&id);
            info.set_status(BackupStatus::Done);
            info.set("timeline", "1").unwrap();
            info.set("begin_wal", name(segno)).unwrap();
            info.set("end_wal", name(segno + 1)).unwrap();
            info.set_time("end_time", &end.fixed_offset()).unwrap();
            write_file(
                s3,
                &format!("{prefix}/pg/base/{id}/backup.info"),
                info.render().as_bytes(),
            );
            write_file(s3, &format!("{prefix}/pg/base/{id}/data.tar.gz"), b"tar");
            for s in segno..segno + per_day {
                let n = name(s);
                write_file(s3, &format!("{prefix}/pg/wals/{}/{n}.gz", &n[..16]), b"wal");
            }
            segno += per_day;
        }
    }
    let objects = keys_below(&s3.object_path("bench/barman")).len();

    let started = Instant::now();
    let (ok, stderr) = env.barman_delete("bench/barman", &["-r", "REDUNDANCY 3"]);
    let barman_time = started.elapsed();
    assert!(ok, "{stderr}");
    let store = env.store("bench/pgsteward").await;
    let started = Instant::now();
    let (_, summary) = run_retention(
        &Catalog::new(store, "pg"),
        &RetentionPolicy::Redundancy(3),
        Utc::now(),
        0,
        ApplyOptions::default(),
    )
    .await
    .unwrap();
    let ours_time = started.elapsed();
    assert_eq!(
        keys_below(&s3.object_path("bench/barman")),
        keys_below(&s3.object_path("bench/pgsteward"))
    );
    eprintln!(
        "catalog of {objects} objects; REDUNDANCY 3 deleted {} backups and {} WAL objects: \
         barman-cloud-backup-delete {:.2}s, pgsteward {:.2}s (debug build)",
        summary.deleted_backups.len(),
        summary.wal_objects,
        barman_time.as_secs_f64(),
        ours_time.as_secs_f64()
    );
}
