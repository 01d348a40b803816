//! pgsteward's retention against `barman-cloud-backup-delete` on the same catalogs: each
//! catalog (backup.info files written through `BackupInfo`, tar placeholders, WAL with
//! history, `.partial` and `.backup` files on several timelines, FAILED and STARTED backups,
//! keep annotations, dates relative to now) is written twice to a real S3 server (s3s-fs);
//! barman deletes on one copy, pgsteward on the other, and the remaining object sets must be
//! equal, except the objects barman leaves behind in the directories of backups it deleted
//! (pgsteward removes those too). Before deleting, barman's own retention report (VALID,
//! OBSOLETE, OBSOLETE*, KEEP:FULL, KEEP:STANDALONE, -) must equal pgsteward's.
//! barman runs through a shim for an s3s-fs listing quirk (see `support`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::{backup_id_for, BackupInfo, BackupStatus};
use pgsteward_backup::retention::{
    delete_backup, run_retention, ApplyOptions, RetentionError, RetentionPolicy,
};
use support::{Env, Objects};

const SERVER: &str = "pg";

/// One backup of a catalog shape.
#[derive(Clone)]
struct Backup {
    /// Age of its end time, in hours.
    hours_ago: i64,
    status: BackupStatus,
    keep: Option<&'static str>,
    tablespaces: &'static [u64],
    /// Also leave objects barman does not delete in its directory.
    extra_object: bool,
}

fn done(days: i64) -> Backup {
    Backup {
        hours_ago: days * 24 + 3,
        status: BackupStatus::Done,
        keep: None,
        tablespaces: &[],
        extra_object: false,
    }
}

fn with(mut b: Backup, f: impl FnOnce(&mut Backup)) -> Backup {
    f(&mut b);
    b
}

/// A catalog: backups oldest first, each starting a new run of WAL; a backup index in
/// `switch_after` makes the timeline change after it (a `.partial` of the old timeline and
/// a history file).
struct Shape {
    name: &'static str,
    backups: Vec<Backup>,
    switch_after: Vec<usize>,
    /// Segments skipped between backups (large values cross `wals/<tli><log>/` directories).
    stride: u64,
    /// Odd WAL objects (keys below `<server>/wals/`).
    extra_wal: &'static [&'static str],
}

fn seg_name(tli: u32, segno: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", segno / 256, segno % 256)
}

fn wal(objects: &mut Objects, name: &str, gz: bool) {
    let file = if gz {
        format!("{name}.gz")
    } else {
        name.to_owned()
    };
    let key = if name.ends_with(".history") {
        format!("{SERVER}/wals/{file}")
    } else {
        format!("{SERVER}/wals/{}/{file}", &name[..16])
    };
    objects.push((key, b"wal".to_vec()));
}

fn lsn(segno: u64, offset: u64) -> String {
    format!("{:X}/{:08X}", segno / 256, ((segno % 256) << 24) | offset)
}

/// Objects of a shape (key below the destination → body) and its backup infos.
fn build(shape: &Shape, now: DateTime<Utc>) -> (Objects, Vec<BackupInfo>) {
    let mut objects: Objects = Vec::new();
    let mut infos = Vec::new();
    let mut tli = 1u32;
    let mut segno = 3u64;
    for (index, backup) in shape.backups.iter().enumerate() {
        let end = now - TimeDelta::hours(backup.hours_ago);
        let begin = end - TimeDelta::minutes(7);
        let id = backup_id_for(&begin);
        let begin_wal = seg_name(tli, segno);
        let mut info = BackupInfo::new(&id);
        info.set_status(backup.status);
        info.set("timeline", tli.to_string()).unwrap();
        info.set("version", "150000").unwrap();
        info.set("systemid", "7300000000000000001").unwrap();
        info.set("server_name", SERVER).unwrap();
        info.set("mode", "concurrent").unwrap();
        info.set("compression", "gzip").unwrap();
        info.set("begin_wal", &begin_wal).unwrap();
        info.set("begin_xlog", lsn(segno, 0x28)).unwrap();
        info.set("begin_offset", "40").unwrap();
        info.set_time("begin_time", &begin.fixed_offset()).unwrap();
        if matches!(
            backup.status,
            BackupStatus::Done | BackupStatus::WaitingForWals
        ) {
            info.set("end_wal", seg_name(tli, segno + 1)).unwrap();
            info.set_time("end_time", &end.fixed_offset()).unwrap();
            info.set("end_xlog", lsn(segno + 1, 0x100)).unwrap();
            info.set("end_offset", "256").unwrap();
            info.set("size", "1024").unwrap();
        } else if backup.status == BackupStatus::Failed {
            info.set("error", "failure uploading data (connection reset)")
                .unwrap();
        }
        let tablespaces: Vec<_> = backup
            .tablespaces
            .iter()
            .map(|oid| pgsteward_backup::pyliteral::TablespaceTuple {
                name: format!("ts{oid}"),
                oid: *oid,
                location: format!("/ts/{oid}"),
            })
            .collect();
        info.set_tablespaces(&tablespaces);
        let dir = format!("{SERVER}/base/{id}/");
        if backup.status != BackupStatus::Started {
            objects.push((format!("{dir}data.tar.gz"), b"tar".to_vec()));
        }
        for oid in backup.tablespaces {
            objects.push((format!("{dir}{oid}.tar.gz"), b"tar".to_vec()));
        }
        if backup.extra_object {
            objects.push((format!("{dir}pgsteward.manifest.json"), b"{}".to_vec()));
            objects.push((format!("{dir}data_0001.tar.gz"), b"tar".to_vec()));
        }
        if let Some(keep) = backup.keep {
            objects.push((format!("{dir}annotations/keep"), keep.as_bytes().to_vec()));
        }
        // WAL: the backup's .backup file and its segments, some uncompressed.
        wal(&mut objects, &format!("{begin_wal}.00000028.backup"), true);
        for n in 0..4 {
            wal(&mut objects, &seg_name(tli, segno + n), n % 3 != 2);
        }
        if shape.switch_after.contains(&index) {
            wal(
                &mut objects,
                &format!("{}.partial", seg_name(tli, segno + 4)),
                true,
            );
            tli += 1;
            wal(&mut objects, &format!("{tli:08X}.history"), true);
            wal(&mut objects, &seg_name(tli, segno + 4), true);
        }
        segno += shape.stride;
        infos.push(info);
    }
    // A stray object in a WAL directory and trailing WAL after the newest backup.
    objects.push((
        format!("{SERVER}/wals/{}/README", &seg_name(1, 3)[..16]),
        b"?".to_vec(),
    ));
    for n in 0..3 {
        wal(&mut objects, &seg_name(tli, segno + n), true);
    }
    for key in shape.extra_wal {
        objects.push((format!("{SERVER}/wals/{key}"), b"odd".to_vec()));
    }
    (objects, infos)
}

fn shapes() -> Vec<Shape> {
    use BackupStatus::*;
    let failed = |days| with(done(days), |b| b.status = Failed);
    let started = |days| with(done(days), |b| b.status = Started);
    vec![
        Shape {
            name: "linear",
            backups: vec![
                done(60),
                done(45),
                done(32),
                failed(25),
                done(20),
                done(15),
                done(9),
                done(5),
                failed(2),
                done(1),
                started(0),
            ],
            switch_after: vec![],
            stride: 3,
            extra_wal: &[],
        },
        Shape {
            name: "timelines",
            backups: vec![
                with(done(50), |b| b.tablespaces = &[16400, 16401]),
                done(40),
                done(25),
                done(13),
                failed(10),
                done(6),
                done(2),
            ],
            switch_after: vec![1, 3, 4],
            stride: 170,
            extra_wal: &[],
        },
        Shape {
            name: "keep",
            backups: vec![
                with(done(70), |b| b.keep = Some("standalone")),
                with(done(55), |b| b.keep = Some("standalone")),
                done(40),
                with(done(30), |b| b.keep = Some("full")),
                done(22),
                with(done(16), |b| b.extra_object = true),
                done(10),
                failed(8),
                with(done(4), |b| b.keep = Some("standalone")),
                done(1),
            ],
            switch_after: vec![6],
            stride: 90,
            extra_wal: &[],
        },
        Shape {
            name: "standalone-oldest",
            backups: vec![
                with(done(40), |b| b.keep = Some("standalone")),
                with(done(33), |b| b.extra_object = true),
                done(26),
                done(19),
                done(12),
                done(5),
            ],
            switch_after: vec![],
            stride: 200,
            extra_wal: &[],
        },
        Shape {
            name: "odd",
            backups: vec![
                with(done(45), |b| b.keep = Some("standalone\n")),
                done(38),
                with(done(31), |b| b.status = WaitingForWals),
                with(done(24), |b| b.keep = Some("")),
                done(17),
                with(done(10), |b| b.status = WaitingForWals),
                done(3),
            ],
            switch_after: vec![3],
            stride: 40,
            extra_wal: &[
                // The same segment plain and gzipped (barman keeps the last key per name).
                "0000000100000000/000000010000000000000004",
                // Other compressions, lower-case hex, a plain .partial, a stray directory.
                "0000000100000000/000000010000000000000005.bz2",
                "0000000100000000/00000001000000000000001a.zst",
                "0000000100000000/000000010000000000000006.partial",
                "junk/000000010000000000000002.gz",
                "junk/notes.txt",
                "0000000100000000/000000010000000000000007.gz.tmp",
                // A history file inside a hash directory.
                "0000000200000000/00000002.history",
            ],
        },
    ]
}

/// Compare what remains; returns a description of the difference, if any.
fn compare(
    label: &str,
    before: &BTreeSet<String>,
    barman: &BTreeSet<String>,
    ours: &BTreeSet<String>,
) -> Option<String> {
    // Objects barman leaves in directories of backups it deleted (no backup.info any more).
    let deleted_dirs: BTreeSet<String> = before
        .iter()
        .filter_map(|k| k.strip_suffix("backup.info"))
        .filter(|dir| !barman.contains(&format!("{dir}backup.info")))
        .map(str::to_owned)
        .collect();
    let only_barman_kept: Vec<&String> = barman
        .difference(ours)
        .filter(|k| !deleted_dirs.iter().any(|d| k.starts_with(d.as_str())))
        .collect();
    let only_ours_kept: Vec<&String> = ours.difference(barman).collect();
    if only_barman_kept.is_empty() && only_ours_kept.is_empty() {
        None
    } else {
        Some(format!(
            "{label}: deleted by pgsteward only: {only_barman_kept:#?}\ndeleted by barman only: {only_ours_kept:#?}"
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_policies_delete_what_barman_deletes() {
    let env = Env::new(SERVER).await;
    let policies = [
        "REDUNDANCY 1",
        "REDUNDANCY 2",
        "REDUNDANCY 3",
        "RECOVERY WINDOW OF 7 DAYS",
        "RECOVERY WINDOW OF 2 WEEKS",
        "RECOVERY WINDOW OF 1 MONTHS",
    ];
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut deleted_total = 0;
    let mut leftovers_total = 0;
    let (mut wal_total, mut prefixes_total, mut kept_statuses) = (0, 0, 0);
    for shape in shapes() {
        for policy_text in policies {
            for minimum in [0u32, 3] {
                let now = Utc::now();
                let (objects, infos) = build(&shape, now);
                let slug = format!(
                    "{}-{}-m{minimum}",
                    shape.name,
                    policy_text.replace(' ', "").to_lowercase()
                );
                let (theirs, ours) = (format!("{slug}/barman"), format!("{slug}/pgsteward"));
                env.write(&theirs, &objects, &infos).await;
                env.write(&ours, &objects, &infos).await;
                let before = env.keys(&theirs).await;
                assert_eq!(before, env.keys(&ours).await);

                let minimum_arg = minimum.to_string();
                let args = ["-r", policy_text, "-m", &minimum_arg];
                let barman_report = env.barman_report(&theirs, &args);
                let (ok, stderr) = env.barman_delete(&theirs, &args);
                assert!(ok, "{slug}: barman-cloud-backup-delete failed: {stderr}");
                let policy = RetentionPolicy::parse(policy_text).unwrap();
                let catalog = Catalog::new(env.store(&ours).await, SERVER);
                let (plan, summary) = run_retention(
                    &catalog,
                    &policy,
                    Utc::now(),
                    minimum,
                    ApplyOptions::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{slug}: {e}"));
                deleted_total += summary.deleted_backups.len();
                leftovers_total += plan
                    .deletions
                    .iter()
                    .map(|d| d.leftovers.len())
                    .sum::<usize>();
                wal_total += summary.wal_objects;
                prefixes_total += plan
                    .deletions
                    .iter()
                    .map(|d| d.wal.prefixes.len())
                    .sum::<usize>();
                kept_statuses += plan
                    .report
                    .values()
                    .filter(|s| s.as_str().starts_with("KEEP"))
                    .count();
                let our_report: BTreeMap<String, String> = plan
                    .report
                    .iter()
                    .map(|(id, status)| (id.clone(), status.as_str().to_owned()))
                    .collect();
                if our_report != barman_report {
                    failures.push(format!(
                        "{slug}: retention report differs\nbarman:    {barman_report:?}\npgsteward: {our_report:?}"
                    ));
                }
                let barman_left = env.keys(&theirs).await;
                let ours_left = env.keys(&ours).await;
                compared += 1;
                if let Some(diff) = compare(&slug, &before, &barman_left, &ours_left) {
                    failures.push(format!("{diff}\nreport: {:?}", plan.report));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The shapes are meant to delete something under most policies.
    assert!(
        deleted_total > compared,
        "only {deleted_total} deletions in {compared} runs"
    );
    assert!(leftovers_total > 0, "no leftover objects exercised");
    assert!(
        wal_total > 0 && prefixes_total > 0 && kept_statuses > 0,
        "WAL objects {wal_total}, WAL directories {prefixes_total}, kept backups {kept_statuses}"
    );
    eprintln!(
        "{compared} catalogs compared: {deleted_total} backups, {wal_total} WAL objects \
         ({prefixes_total} whole directories) deleted by each tool, {kept_statuses} kept backups"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_id_deletes_what_barman_deletes() {
    let env = Env::new(SERVER).await;
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut refused = 0;
    for shape in shapes() {
        let now = Utc::now();
        let (objects, infos) = build(&shape, now);
        let ids: Vec<String> = infos.iter().map(|i| i.backup_id().to_owned()).collect();
        for (index, id) in ids.iter().enumerate() {
            for minimum in [0u32, 9] {
                let slug = format!("byid-{}-{index}-m{minimum}", shape.name);
                let (theirs, ours) = (format!("{slug}/barman"), format!("{slug}/pgsteward"));
                env.write(&theirs, &objects, &infos).await;
                env.write(&ours, &objects, &infos).await;
                let before = env.keys(&theirs).await;
                let minimum_arg = minimum.to_string();
                let (barman_ok, stderr) =
                    env.barman_delete(&theirs, &["-b", id, "-m", &minimum_arg]);
                let catalog = Catalog::new(env.store(&ours).await, SERVER);
                let ours_result =
                    delete_backup(&catalog, id, minimum, ApplyOptions::default()).await;
                let ours_ok = match &ours_result {
                    Ok(_) => true,
                    Err(RetentionError::Plan(_)) => false,
                    Err(e) => panic!("{slug}: {e}"),
                };
                if !ours_ok {
                    refused += 1;
                }
                if barman_ok != ours_ok {
                    failures.push(format!(
                        "{slug}: barman ok={barman_ok} ({stderr}), pgsteward {ours_result:?}"
                    ));
                }
                compared += 1;
                if let Some(diff) = compare(
                    &slug,
                    &before,
                    &env.keys(&theirs).await,
                    &env.keys(&ours).await,
                ) {
                    failures.push(diff);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        refused > 0 && refused < compared,
        "{refused} of {compared} refused"
    );
    eprintln!("{compared} deletions by id compared, {refused} refused by both");
}
