//! Unit tests of the retention decision on hand-built catalogs.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::plan::{plan_delete, plan_retention, CatalogSnapshot, PlanError};
use super::policy::RetentionPolicy;
use super::report::{BackupSummary, RetentionStatus};
use crate::info::BackupStatus;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

struct Builder {
    snapshot: CatalogSnapshot,
}

/// A backup `days_ago` days old on `tli`, its WAL `seg` (log 0, segment `seg`).
fn seg(tli: u32, log: u32, seg: u32) -> String {
    format!("{tli:08X}{log:08X}{seg:08X}")
}

impl Builder {
    fn new() -> Self {
        Builder {
            snapshot: CatalogSnapshot {
                server: "srv".into(),
                ..CatalogSnapshot::default()
            },
        }
    }

    fn backup(mut self, days_ago: i64, status: BackupStatus, tli: u32, begin: (u32, u32)) -> Self {
        let end_time = now() - TimeDelta::days(days_ago);
        let id = crate::info::backup_id_for(&(end_time - TimeDelta::minutes(10)));
        let summary = BackupSummary {
            backup_id: id.clone(),
            status,
            timeline: Some(tli),
            begin_wal: Some(seg(tli, begin.0, begin.1)),
            end_wal: Some(seg(tli, begin.0, begin.1 + 1)),
            end_time: Some(end_time.fixed_offset()),
            tablespace_oids: vec![],
            incremental: false,
            snapshot: false,
            deleting: false,
        };
        let dir = format!("srv/base/{id}/");
        self.snapshot.backup_objects.insert(
            id.clone(),
            vec![format!("{dir}backup.info"), format!("{dir}data.tar.gz")],
        );
        self.snapshot.backups.insert(id, summary);
        self
    }

    fn keep(mut self, index: usize, target: &str) -> Self {
        let id = self.id(index);
        self.snapshot.keep.insert(id.clone(), target.into());
        let key = format!("srv/base/{id}/annotations/keep");
        self.snapshot.backup_objects.get_mut(&id).unwrap().push(key);
        self
    }

    fn id(&self, index: usize) -> String {
        self.snapshot.backups.keys().nth(index).unwrap().clone()
    }

    /// WAL segments `from..=to` (segment numbers in log `log`) on `tli`, gzipped.
    fn wals(mut self, tli: u32, log: u32, from: u32, to: u32) -> Self {
        for s in from..=to {
            let name = seg(tli, log, s);
            self.snapshot
                .wal_keys
                .push(format!("srv/wals/{}/{name}.gz", &name[..16]));
        }
        self.snapshot.wal_keys.sort();
        self
    }

    fn wal_object(mut self, key: &str) -> Self {
        self.snapshot.wal_keys.push(key.into());
        self.snapshot.wal_keys.sort();
        self
    }
}

fn statuses(report: &BTreeMap<String, RetentionStatus>) -> Vec<&'static str> {
    report.values().map(|s| s.as_str()).collect()
}

fn wal_names(keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            k.rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".gz")
                .to_owned()
        })
        .collect()
}

#[test]
fn redundancy_keeps_the_newest_done_backups_and_frees_wal_below_the_next_one() {
    use BackupStatus::*;
    let b = Builder::new()
        .backup(40, Done, 1, (0, 2))
        .backup(30, Done, 1, (0, 5))
        .backup(20, Failed, 1, (0, 8))
        .backup(10, Done, 1, (0, 10))
        .backup(1, Done, 1, (0, 12))
        .wals(1, 0, 1, 14)
        .wal_object("srv/wals/00000001.history.gz")
        .wal_object("srv/wals/0000000100000000/000000010000000000000002.00000028.backup.gz")
        .wal_object("srv/wals/0000000100000000/000000010000000000000004.partial");
    let plan = plan_retention(&b.snapshot, &RetentionPolicy::Redundancy(2), now(), 0).unwrap();
    assert_eq!(
        statuses(&plan.report),
        ["OBSOLETE", "OBSOLETE", "-", "VALID", "VALID"]
    );
    let ids: Vec<&str> = plan
        .deletions
        .iter()
        .map(|d| d.backup_id.as_str())
        .collect();
    assert_eq!(ids, [b.id(0), b.id(1)]);
    let first = &plan.deletions[0];
    assert_eq!(first.files, [format!("srv/base/{}/data.tar.gz", b.id(0))]);
    assert_eq!(first.info_key, format!("srv/base/{}/backup.info", b.id(0)));
    assert!(first.leftovers.is_empty());
    assert!(first.wal.prefixes.is_empty(), "same log as the next backup");
    // Up to the next DONE backup's begin WAL (…05), .backup and .partial compared by name.
    assert_eq!(
        wal_names(&first.wal.objects),
        [
            seg(1, 0, 1),
            format!("{}.00000028.backup", seg(1, 0, 2)),
            seg(1, 0, 2),
            seg(1, 0, 3),
            seg(1, 0, 4),
            format!("{}.partial", seg(1, 0, 4)),
        ]
    );
    // The FAILED backup is skipped: the second deletion frees WAL up to …0A.
    assert_eq!(
        wal_names(&plan.deletions[1].wal.objects),
        (5..10).map(|s| seg(1, 0, s)).collect::<Vec<_>>()
    );
}

#[test]
fn minimum_redundancy_raises_redundancy_and_guards_the_window() {
    use BackupStatus::*;
    let b = Builder::new()
        .backup(40, Done, 1, (0, 2))
        .backup(30, Done, 1, (0, 5))
        .backup(20, Done, 1, (0, 8));
    let plan = plan_retention(&b.snapshot, &RetentionPolicy::Redundancy(1), now(), 2).unwrap();
    assert_eq!(statuses(&plan.report), ["OBSOLETE", "VALID", "VALID"]);
    let window = RetentionPolicy::parse("7d").unwrap();
    let plan = plan_retention(&b.snapshot, &window, now(), 0).unwrap();
    assert_eq!(statuses(&plan.report), ["OBSOLETE", "OBSOLETE", "VALID"]);
    let plan = plan_retention(&b.snapshot, &window, now(), 2).unwrap();
    assert_eq!(statuses(&plan.report), ["OBSOLETE", "OBSOLETE*", "VALID"]);
    assert_eq!(plan.deletions.len(), 1);
    let plan = plan_retention(
        &b.snapshot,
        &RetentionPolicy::parse("35d").unwrap(),
        now(),
        0,
    )
    .unwrap();
    assert_eq!(statuses(&plan.report), ["VALID", "VALID", "VALID"]);
    // The first backup that ended before the window's start stays: it covers the start.
    let plan = plan_retention(
        &b.snapshot,
        &RetentionPolicy::parse("25d").unwrap(),
        now(),
        0,
    )
    .unwrap();
    assert_eq!(statuses(&plan.report), ["OBSOLETE", "VALID", "VALID"]);
}

#[test]
fn keep_full_blocks_wal_removal_and_keep_standalone_protects_its_range() {
    use BackupStatus::*;
    let base = Builder::new()
        .backup(40, Done, 1, (0, 2))
        .backup(30, Done, 1, (0, 5))
        .backup(20, Done, 1, (0, 8))
        .backup(1, Done, 1, (0, 10))
        .wals(1, 0, 1, 12);
    let full = Builder {
        snapshot: base.snapshot.clone(),
    }
    .keep(0, "full");
    let plan = plan_retention(&full.snapshot, &RetentionPolicy::Redundancy(1), now(), 0).unwrap();
    assert_eq!(
        statuses(&plan.report),
        ["KEEP:FULL", "OBSOLETE", "OBSOLETE", "VALID"]
    );
    assert!(plan.deletions.iter().all(|d| d.wal.objects.is_empty()));

    let standalone = Builder {
        snapshot: base.snapshot.clone(),
    }
    .keep(0, "standalone");
    let plan = plan_retention(
        &standalone.snapshot,
        &RetentionPolicy::Redundancy(1),
        now(),
        0,
    )
    .unwrap();
    assert_eq!(
        statuses(&plan.report),
        ["KEEP:STANDALONE", "OBSOLETE", "OBSOLETE", "VALID"]
    );
    // Backup 0 keeps …02..=…03; the rest below the next backup goes.
    assert_eq!(
        wal_names(&plan.deletions[0].wal.objects),
        [
            seg(1, 0, 1),
            seg(1, 0, 4),
            seg(1, 0, 5),
            seg(1, 0, 6),
            seg(1, 0, 7)
        ]
    );
    assert_eq!(
        wal_names(&plan.deletions[1].wal.objects),
        [seg(1, 0, 8), seg(1, 0, 9)]
    );
    // A delete by id skips WAL cleanup behind a standalone backup.
    let plan = plan_delete(&standalone.snapshot, &standalone.id(1), 0).unwrap();
    assert!(plan.deletions[0].wal.objects.is_empty());
    // An annotation with a newline is not "standalone": barman treats it as full.
    let odd = Builder {
        snapshot: base.snapshot.clone(),
    }
    .keep(0, "standalone\n");
    let plan = plan_retention(&odd.snapshot, &RetentionPolicy::Redundancy(1), now(), 0).unwrap();
    assert_eq!(
        plan.report.values().next(),
        Some(&RetentionStatus::KeepFull)
    );
}

#[test]
fn whole_wal_directories_go_and_other_timelines_stay() {
    use BackupStatus::*;
    let b = Builder::new()
        .backup(40, Done, 1, (1, 2))
        .backup(30, Done, 1, (3, 5))
        .backup(20, Done, 2, (4, 1))
        .backup(10, Done, 3, (5, 1))
        .wals(1, 0, 1, 3)
        .wals(1, 1, 1, 3)
        .wals(1, 2, 1, 3)
        .wals(1, 3, 1, 6)
        .wals(2, 4, 0, 3)
        .wals(3, 5, 0, 3)
        .wal_object("srv/wals/00000002.history.gz")
        .wal_object("srv/wals/00000003.history.gz")
        .wal_object("srv/wals/0000000100000001/junk.txt")
        .wal_object("srv/wals/not-a-wal-dir/000000010000000000000001.gz");
    let plan = plan_retention(&b.snapshot, &RetentionPolicy::Redundancy(2), now(), 0).unwrap();
    assert_eq!(
        statuses(&plan.report),
        ["OBSOLETE", "OBSOLETE", "VALID", "VALID"]
    );
    let first = &plan.deletions[0];
    // Below the next backup (timeline 1, log 3) whole directories of logs 0..=2 go, junk too.
    assert_eq!(
        first.wal.prefixes,
        [
            "srv/wals/0000000100000000/",
            "srv/wals/0000000100000001/",
            "srv/wals/0000000100000002/"
        ]
    );
    // Log 3 goes segment by segment below …0300000005; the stray segment outside a hash
    // directory goes by name.
    let mut expected: Vec<String> = (1..5)
        .map(|s| format!("srv/wals/0000000100000003/{}.gz", seg(1, 3, s)))
        .collect();
    expected.push("srv/wals/not-a-wal-dir/000000010000000000000001.gz".into());
    assert_eq!(first.wal.objects, expected);
    // The second one's next backup is on timeline 2: timeline 1 (the deleted backup's, as
    // barman counts it) and 3 stay protected; only timeline 2 below its begin WAL goes.
    let second = &plan.deletions[1];
    assert!(second.wal.prefixes.is_empty());
    assert_eq!(wal_names(&second.wal.objects), [seg(2, 4, 0)]);
}

#[test]
fn backup_files_follow_barman_matching_and_leftovers_are_listed() {
    use BackupStatus::*;
    let mut b = Builder::new()
        .backup(40, Done, 1, (0, 2))
        .backup(1, Done, 1, (0, 5));
    let id = b.id(0);
    let dir = format!("srv/base/{id}/");
    b.snapshot.backups.get_mut(&id).unwrap().tablespace_oids = vec![16390, 1639];
    let objects = b.snapshot.backup_objects.get_mut(&id).unwrap();
    for name in [
        "data_0001.tar.gz",
        "data.tar.gz.tmp",
        "datafile",
        "16390.tar",
        "1639.tar.gz",
        "1639_0002.tar.gz",
        "pgsteward.manifest.json",
        "sub/data.tar.gz",
    ] {
        objects.push(format!("{dir}{name}"));
    }
    objects.sort();
    let plan = plan_delete(&b.snapshot, &id, 0).unwrap();
    let deletion = &plan.deletions[0];
    let rel = |keys: &[String]| -> Vec<String> {
        keys.iter()
            .map(|k| k.strip_prefix(&dir).unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        rel(&deletion.files),
        [
            "data.tar.gz",
            "data_0001.tar.gz",
            "1639.tar.gz",
            "1639_0002.tar.gz",
            "16390.tar"
        ]
    );
    assert_eq!(
        rel(&deletion.leftovers),
        [
            "data.tar.gz.tmp",
            "datafile",
            "pgsteward.manifest.json",
            "sub/data.tar.gz"
        ]
    );
}

#[test]
fn delete_by_id_refusals() {
    use BackupStatus::*;
    let b = Builder::new()
        .backup(40, Done, 1, (0, 2))
        .backup(30, Started, 1, (0, 5))
        .backup(20, Failed, 1, (0, 6))
        .keep(2, "");
    assert!(matches!(
        plan_delete(&b.snapshot, "20200101T000000", 0),
        Err(PlanError::NotFound(_))
    ));
    // Even an empty keep annotation blocks a delete by id.
    assert!(matches!(
        plan_delete(&b.snapshot, &b.id(2), 0),
        Err(PlanError::Kept { .. })
    ));
    // Two backups are not STARTED: minimum redundancy 2 refuses, 1 allows.
    assert!(matches!(
        plan_delete(&b.snapshot, &b.id(0), 2),
        Err(PlanError::MinimumRedundancy { current: 2, .. })
    ));
    let plan = plan_delete(&b.snapshot, &b.id(0), 1).unwrap();
    assert_eq!(plan.deletions.len(), 1);
    // An empty keep annotation does not count for retention.
    let plan = plan_retention(&b.snapshot, &RetentionPolicy::Redundancy(1), now(), 0).unwrap();
    assert_eq!(statuses(&plan.report), ["VALID", "-", "-"]);
}

#[test]
fn interrupted_deletions_are_finished_first() {
    use BackupStatus::*;
    let mut b = Builder::new()
        .backup(40, Done, 1, (0, 2))
        .backup(30, Failed, 1, (0, 5))
        .backup(20, Done, 1, (0, 8))
        .backup(1, Done, 1, (0, 10))
        .wals(1, 0, 1, 11);
    let id = b.id(1);
    b.snapshot.backups.get_mut(&id).unwrap().deleting = true;
    let plan = plan_retention(&b.snapshot, &RetentionPolicy::Redundancy(2), now(), 0).unwrap();
    assert_eq!(statuses(&plan.report), ["OBSOLETE", "-", "VALID", "VALID"]);
    let ids: Vec<&str> = plan
        .deletions
        .iter()
        .map(|d| d.backup_id.as_str())
        .collect();
    assert_eq!(ids, [b.id(1), b.id(0)]);
    // An older DONE backup still exists then: no WAL goes with the interrupted one.
    assert!(plan.deletions[0].wal.objects.is_empty());
    assert_eq!(
        wal_names(&plan.deletions[1].wal.objects),
        (1..8).map(|s| seg(1, 0, s)).collect::<Vec<_>>()
    );
}
