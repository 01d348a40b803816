//! Restore and point-in-time recovery end to end, on PostgreSQL 15 and 18, a real S3 server
//! (s3s-fs) and real barman-cloud: a source instance archives its WAL with pgsteward,
//! `barman-cloud-backup` takes the base backup, known transactions follow, and
//! `pgsteward restore` (run as root with `--user postgres`) recovers into the data directory of
//! a second instance, which `pgsteward run` then starts: the whole archive, a time between
//! two transactions (exactly the first), an LSN, a restore-point name, a relocated
//! tablespace; refusals for a non-empty directory, a target before the backup, a target
//! beyond the archive, a damaged segment, a gap in the archive and a backup whose own WAL is
//! lost (failures, not a shorter recovery; `wal check` reports the last two per backup, and
//! does not count a segment still `.ready` in the data directory it is given as lost).

mod common;
#[path = "support/pitr.rs"]
mod pitr;

use common::*;
use nix::sys::signal::Signal;
use pitr::*;

async fn restores_barman_cloud_backups_to_targets(version: PgVersion) {
    let source = source(version).await;

    // The whole archive.
    assert_eq!(
        restore_and_read(&source, version, "r-all", &[]).await,
        "base,first,second,third"
    );
    // A time between 'first' and 'second': exactly the first.
    assert_eq!(
        restore_and_read(
            &source,
            version,
            "r-time",
            &["--target-time", &source.between]
        )
        .await,
        "base,first"
    );
    // An LSN right after 'first'.
    assert_eq!(
        restore_and_read(
            &source,
            version,
            "r-lsn",
            &["--target-lsn", &source.lsn_after_first]
        )
        .await,
        "base,first"
    );
    // The transaction that inserted 'first'.
    assert_eq!(
        restore_and_read(
            &source,
            version,
            "r-xid",
            &["--target-xid", &source.xid_first]
        )
        .await,
        "base,first"
    );
    // Immediate: the end of the backup, before 'first'.
    assert_eq!(
        restore_and_read(&source, version, "r-immediate", &["--target-immediate"]).await,
        "base"
    );
    // A restore point.
    assert_eq!(
        restore_and_read(
            &source,
            version,
            "r-name",
            &["--target-name", "after-second"]
        )
        .await,
        "base,first,second"
    );
    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

async fn restore_refusals(version: PgVersion) {
    let source = source(version).await;

    // A non-empty destination: refused, the file left alone.
    let instance = target_instance(&source, version, "r-nonempty");
    instance.dir.mkdir("data", 0o700);
    instance.dir.write("data/keep-me", "precious\n");
    instance.dir.chown_postgres(&instance.pgdata);
    let out = restore(&source, &instance, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(instance.pgdata.join("keep-me")).unwrap_or_default(),
        "precious\n"
    );
    let entries = std::fs::read_dir(&instance.pgdata)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(entries, 1);

    // A target before the only backup's end: no backup can reach it.
    let before = "2001-01-01 00:00:00";
    refused_before_writing(
        &source,
        version,
        "r-before",
        &["--target-time", before],
        &["end after the target"],
    );
    // The same backup named explicitly: the target is before its end.
    let id = backup_id(&source);
    refused_before_writing(
        &source,
        version,
        "r-before-id2",
        &["--backup", &id, "--target-time", before],
        &["before the end of backup"],
    );

    // A target beyond the archive: postgres ends recovery early; reported plainly.
    let instance = target_instance(&source, version, "r-beyond");
    let out = restore(&source, &instance, &["--target-lsn", "FF/0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("recovery ended before the configured recovery target was reached"),
        "{}",
        stderr(&out)
    );

    // Two more segments after the backup's. Then the first of them is lost (archiving was off
    // for a while, WAL was deleted): a gap. Restoring the whole archive is refused before
    // anything is written, naming the missing segment, instead of ending the recovery at the
    // gap and starting a cluster that silently lacks what follows.
    for _ in 0..2 {
        sql(&source.instance, "INSERT INTO t VALUES ('later'); SELECT 1").await;
        switch_and_wait_archived(&source.instance, &source.s3).await;
    }
    let segments = archived_segments(&source);
    let (lost, last) = match segments.as_slice() {
        [.., lost, last] => (lost.clone(), last.clone()),
        _ => panic!("fewer than two archived segments: {segments:?}"),
    };
    let kept = std::fs::read(&lost).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&lost).unwrap_or_else(|e| panic!("{e}"));
    let lost_name = segment_name(&lost);
    refused_before_writing(
        &source,
        version,
        "r-gap",
        &[],
        &["the archive has a gap", &lost_name],
    );
    // `wal check` says the same of the backup, with where a replay would stop.
    wal_check_says(
        &source,
        1,
        &[&format!("backup {id}: restores only up to"), &lost_name],
    );
    let (code, backup) = wal_check_json(&source, &id);
    assert_eq!(code, Some(1));
    assert_eq!(backup["restore"], "up_to_gap", "{backup}");
    assert!(
        backup["missing"]
            .as_array()
            .is_some_and(|m| m.iter().any(|n| n == lost_name.as_str())),
        "{backup}"
    );
    // The same segment still `.ready` in the data directory `wal check` is given (in flight
    // on a busy primary, whose uploads finish out of order): waiting, not a hole.
    let local = pgsteward_testkit::fsutil::ScratchDir::new();
    local.mkdir("pg_wal/archive_status", 0o700);
    local.write(
        "pgsteward.archive.json",
        &std::fs::read_to_string(source.instance.pgdata.join("pgsteward.archive.json"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    local.write(&format!("pg_wal/archive_status/{lost_name}.ready"), "");
    let out = pgsteward(&[
        "wal",
        "check",
        "--pgdata",
        &local.path().display().to_string(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
    assert!(
        said.contains("1 file(s) still waiting to be archived") && said.contains(&lost_name),
        "{said}"
    );
    std::fs::write(&lost, kept).unwrap_or_else(|e| panic!("{e}"));
    wal_check_says(
        &source,
        0,
        &[&format!("backup {id}: restores to the end of the archive")],
    );
    let (code, backup) = wal_check_json(&source, &id);
    assert_eq!(
        (code, &backup["restore"]),
        (Some(0), &"to_end".into()),
        "{backup}"
    );

    // The backup's own first segment is lost: no restore from it can become consistent. It is
    // refused before the base backup is downloaded, for a target too (postgres would fail only
    // after the whole download), and `wal check` says so.
    let begin = backup_field(&source, &id, "begin_wal");
    let own = segments
        .iter()
        .find(|object| segment_name(object) == begin)
        .unwrap_or_else(|| panic!("the backup's first segment {begin} is not archived"))
        .clone();
    let kept = std::fs::read(&own).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&own).unwrap_or_else(|e| panic!("{e}"));
    refused_before_writing(
        &source,
        version,
        "r-own-wal",
        &["--target-lsn", &source.lsn_after_first],
        &["cannot be restored", &begin],
    );
    wal_check_says(
        &source,
        1,
        &[&format!("backup {id}: cannot be restored"), &begin],
    );
    let (_, backup) = wal_check_json(&source, &id);
    assert_eq!(backup["restore"], "impossible", "{backup}");
    std::fs::write(&own, kept).unwrap_or_else(|e| panic!("{e}"));

    // A damaged segment (the last one): restoring the whole archive fails in the replay,
    // naming it, instead of ending the recovery before it.
    let name = segment_name(&last);
    std::fs::write(&last, b"not gzip").unwrap_or_else(|e| panic!("{e}"));
    let instance = target_instance(&source, version, "r-damaged");
    let out = restore(&source, &instance, &[]);
    assert!(
        !out.status.success(),
        "the restore succeeded past a damaged segment: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&name) && stderr(&out).contains("replaying archived WAL"),
        "expected the damaged {name} in: {}",
        stderr(&out)
    );
    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

async fn restores_tablespaces_where_asked(version: PgVersion) {
    let source = pitr::source_with(version, &[], |creds| {
        let dir = creds.mkdir("ts-source", 0o700);
        creds.chown_postgres(&dir);
        vec![
            format!("CREATE TABLESPACE ts1 LOCATION '{}'", dir.display()),
            "CREATE TABLE tt (v text) TABLESPACE ts1".to_owned(),
            "INSERT INTO tt VALUES ('in-ts')".to_owned(),
        ]
    })
    .await;
    // Its recorded location still holds the source's tablespace: refused.
    let instance = target_instance(&source, version, "r-ts-refused");
    let out = restore(&source, &instance, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ts-source exists and is not empty"),
        "{}",
        stderr(&out)
    );

    // Relocated into an empty directory.
    let instance = target_instance(&source, version, "r-ts");
    let relocated = instance.dir.mkdir("ts-restored", 0o700);
    instance.dir.chown_postgres(&relocated);
    let rule = format!("ts1:{}", relocated.display());
    let out = restore(&source, &instance, &["--tablespace", &rule]);
    assert!(out.status.success(), "{}", stderr(&out));
    let links: Vec<_> = std::fs::read_dir(instance.pgdata.join("pg_tblspc"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(std::fs::read_link(&links[0]).ok(), Some(relocated.clone()));
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    assert_eq!(
        query(&instance, "SELECT string_agg(v, ',') FROM tt").await,
        "in-ts"
    );
    assert_eq!(
        query(
            &instance,
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"
        )
        .await,
        relocated.display().to_string()
    );
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
    let mut manager = source.manager;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
}

for_each_version!(restores_tablespaces_where_asked);
for_each_version!(restores_barman_cloud_backups_to_targets);
for_each_version!(restore_refusals);
