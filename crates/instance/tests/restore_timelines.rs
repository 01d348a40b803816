//! Restores after a timeline fork, on PostgreSQL 15 and 18, a real S3 server and real
//! barman-cloud backups: a point-in-time restore of the source's first backup, archiving into
//! the same place, forks timeline 2 off timeline 1, while the source goes on writing on
//! timeline 1 and takes a second backup there. A restore to the end follows timeline 2's
//! history as postgres does; the second backup is off that history, so the defaults pass it
//! over for the first (which comes back with timeline 2's rows), a restore of it named to the
//! newest timeline is refused before anything is downloaded (postgres would refuse it only
//! after the download), and it restores with `--target-timeline current`; `wal check` says
//! which backup restores how. With timeline 2's history file gone, `wal check` and the
//! source's scheduled archive check (`wal_archive_timelines_without_history`) both say so.

mod common;
#[path = "support/pitr.rs"]
mod pitr;

use common::*;
use nix::sys::signal::Signal;
use pitr::*;

/// Restore the source's backup up to 'first' into an instance that archives into the source's
/// own place (`allow_existing_wal`), start it, write 'on-two' and archive it: timeline 2.
/// Returns the stopped fork (its data directory still holds `00000002.history`) and the LSN
/// where timeline 2 forked off timeline 1.
async fn fork_timeline_two(source: &Source, version: PgVersion) -> (Instance, String) {
    let mut opts = options(version);
    opts.args = s3_archive_args(&source.s3, source.creds.path(), PREFIX, SOURCE);
    opts.args
        .push("--set=archive.allow_existing_wal=true".into());
    let fork = Instance::new(opts);
    let out = restore(source, &fork, &["--target-lsn", &source.lsn_after_first]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut manager = fork.spawn();
    manager.wait_ready(READY).await;
    assert_eq!(manager.status().await["timeline"].as_u64(), Some(2));
    sql(&fork, "INSERT INTO t VALUES ('on-two'); SELECT 1").await;
    switch_and_wait_archived(&fork, &source.s3).await;
    wait_history_archived(source, SOURCE, 2).await;
    let history_text = sql(&fork, "SELECT pg_read_file('pg_wal/00000002.history')").await;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
    let forked_at = history_text
        .split('\t')
        .nth(1)
        .unwrap_or_else(|| panic!("no fork position in {history_text:?}"))
        .to_owned();
    (fork, forked_at)
}

/// Wait until the source's scheduled checks count `count` timelines without a history file.
async fn wait_without_history(source: &Source, count: f64) {
    wait_for(
        &format!("the archive check to count {count} timeline(s) without history"),
        READY,
        || async {
            let found =
                checked_metric(source, "pgsteward_wal_archive_timelines_without_history").await?;
            (found == count).then_some(())
        },
    )
    .await;
}

async fn restores_follow_the_newest_timelines_history(version: PgVersion) {
    // The source's manager checks its archive every second.
    let source = source_with(version, &["--set=archive.wal.check_interval=1s"], |_| {
        Vec::new()
    })
    .await;
    let first = backup_id(&source);
    let (fork, forked_at) = fork_timeline_two(&source, version).await;

    // The source went on on timeline 1 after the fork: 'fourth', and a second backup there.
    sql(
        &source.instance,
        "INSERT INTO t VALUES ('fourth'); SELECT 1",
    )
    .await;
    barman_backup(&source.s3, &source.instance);
    let second = backup_id(&source);
    assert_ne!(first, second);
    switch_and_wait_archived(&source.instance, &source.s3).await;

    // `wal check`: the first backup restores along timeline 2, the second cannot.
    let (code, backup) = wal_check_json(&source, &first);
    assert_eq!(code, Some(1), "{backup}");
    assert_eq!(backup["restore"], "to_end", "{backup}");
    assert!(
        backup["last_segment"]
            .as_str()
            .is_some_and(|s| s.starts_with("00000002")),
        "{backup}"
    );
    let (_, backup) = wal_check_json(&source, &second);
    assert_eq!(backup["restore"], "off_history", "{backup}");
    assert_eq!(backup["timeline"], 2, "{backup}");
    assert_eq!(backup["forked_at_lsn"], forked_at.as_str(), "{backup}");
    wal_check_says(
        &source,
        1,
        &[&format!(
            "backup {second}: cannot be restored to timeline 2"
        )],
    );
    // The scheduled check passes over the second backup and finds the first one's path whole.
    wait_without_history(&source, 0.0).await;
    assert_eq!(
        checked_metric(&source, "pgsteward_wal_archive_path_missing_segments").await,
        Some(0.0)
    );

    // Without timeline 2's history file no replay reaches timeline 2 (postgres finds a newer
    // timeline by its history file): `wal check` says so, and both backups then restore along
    // timeline 1 alone.
    let history = source
        .s3
        .object_path(&format!("{PREFIX}/{SOURCE}/wals/00000002.history.gz"));
    let kept = std::fs::read(&history).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&history).unwrap_or_else(|e| panic!("{e}"));
    wal_check_says(
        &source,
        1,
        &["timeline 2: segments archived but no 00000002.history"],
    );
    for id in [&first, &second] {
        let (_, backup) = wal_check_json(&source, id);
        assert_eq!(backup["restore"], "to_end", "{backup}");
        assert!(
            backup["last_segment"]
                .as_str()
                .is_some_and(|s| s.starts_with("00000001")),
            "{backup}"
        );
    }
    // The primary's scheduled check sees it too, and says so in its log.
    wait_without_history(&source, 1.0).await;
    let log = source.manager.log();
    assert!(
        log.lines()
            .any(|l| l.contains("whose history file is missing") && l.contains("[2]")),
        "{log}"
    );
    // The runbook's fix: archive it again from a data directory on timeline 2 (the fork's).
    let pgdata = fork.pgdata.display().to_string();
    let out = pgsteward(&[
        "wal-archive",
        "--pgdata",
        &pgdata,
        "pg_wal/00000002.history",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&history).ok(), Some(kept));
    wait_without_history(&source, 0.0).await;

    // The defaults (the newest backup, to the end of the newest timeline) pass over the
    // second backup for the newest one on timeline 2's history: timeline 2's rows.
    assert_eq!(
        restore_and_read(&source, version, "r-latest", &[]).await,
        "base,first,on-two"
    );
    // Timeline 2 by number: its backups and those of earlier timelines on its history.
    assert_eq!(
        restore_and_read(&source, version, "r-two", &["--target-timeline", "2"]).await,
        "base,first,on-two"
    );
    // The second backup named, to the newest timeline: refused before writing.
    refused_before_writing(
        &source,
        version,
        "r-off-history",
        &["--backup", &second],
        &[
            &format!("backup {second} cannot be restored to timeline 2"),
            &forked_at,
            "--target-timeline current",
        ],
    );
    // As suggested, it restores on its own timeline, with timeline 1's rows.
    assert_eq!(
        restore_and_read(
            &source,
            version,
            "r-current",
            &["--backup", &second, "--target-timeline", "current"]
        )
        .await,
        "base,first,fourth,second,third"
    );

    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

for_each_version!(restores_follow_the_newest_timelines_history);
