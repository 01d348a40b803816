//! `pgsteward backup list|show|delete|retention` against a catalog in a `file://` destination
//! named by a manager configuration file: listing with retention statuses, dry runs that
//! change nothing, deletions that remove the backup and its WAL, refusals with clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use chrono::{TimeDelta, Utc};
use pgsteward_archive::store::{open, StoreOptions};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::{backup_id_for, BackupInfo, BackupStatus};

fn pgsteward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(args)
        .env_remove("PGSTEWARD_CONFIG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap()
}

/// Five backups (one FAILED, the oldest kept with keep:full) and WAL from the first one on.
async fn build_catalog(dest: &Path) -> Vec<String> {
    let store = open(
        &format!("file://{}", dest.display()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let catalog = Catalog::new(store.clone(), "main");
    let now = Utc::now();
    let mut ids = Vec::new();
    for (index, (days, status)) in [
        (40, BackupStatus::Done),
        (30, BackupStatus::Done),
        (20, BackupStatus::Failed),
        (10, BackupStatus::Done),
        (1, BackupStatus::Done),
    ]
    .into_iter()
    .enumerate()
    {
        let end = now - TimeDelta::days(days);
        let id = backup_id_for(&(end - TimeDelta::minutes(5)));
        let segment = 2 + index as u32 * 3;
        let mut info = BackupInfo::new(&id);
        info.set_status(status);
        info.set("timeline", "1").unwrap();
        info.set("begin_wal", format!("00000001000000000000{segment:04X}"))
            .unwrap();
        info.set(
            "end_wal",
            format!("00000001000000000000{:04X}", segment + 1),
        )
        .unwrap();
        info.set_time("begin_time", &(end - TimeDelta::minutes(5)).fixed_offset())
            .unwrap();
        info.set_time("end_time", &end.fixed_offset()).unwrap();
        info.set("size", "2048").unwrap();
        if status == BackupStatus::Failed {
            info.set("error", "connection lost").unwrap();
        }
        catalog.write(&info).await.unwrap();
        store
            .put(
                &format!("main/base/{id}/data.tar.gz"),
                b"tar".to_vec().into(),
            )
            .await
            .unwrap();
        for n in 0..3 {
            let name = format!("00000001000000000000{:04X}", segment + n);
            store
                .put(
                    &format!("main/wals/0000000100000000/{name}.gz"),
                    b"wal".to_vec().into(),
                )
                .await
                .unwrap();
        }
        ids.push(id);
    }
    store
        .put(
            &format!("main/base/{}/annotations/keep", ids[0]),
            b"full".to_vec().into(),
        )
        .await
        .unwrap();
    ids
}

fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn list_show_retention_and_delete() {
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("backups");
    std::fs::create_dir_all(&dest).unwrap();
    let ids = build_catalog(&dest).await;
    let config = scratch.path().join("pgsteward.yaml");
    std::fs::write(
        &config,
        format!(
            "instance_name: main\npgdata: {}/pgdata\narchive:\n  destination: file://{}\n  retention_policy: REDUNDANCY 2\n",
            scratch.path().display(),
            dest.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // list: statuses as barman reports them under REDUNDANCY 2.
    let rows = json(&pgsteward(&[
        "backup", "list", "--json", "--config", config,
    ]));
    let rows = rows.as_array().unwrap();
    let field = |name: &str| -> Vec<String> {
        rows.iter()
            .map(|r| r[name].as_str().unwrap_or("null").to_owned())
            .collect()
    };
    assert_eq!(field("backup_id"), ids);
    assert_eq!(field("status"), ["DONE", "DONE", "FAILED", "DONE", "DONE"]);
    assert_eq!(
        field("retention"),
        ["KEEP:FULL", "OBSOLETE", "-", "VALID", "VALID"]
    );
    assert_eq!(field("keep")[0], "full");
    assert_eq!(field("error")[2], "connection lost");
    assert_eq!(rows[0]["size"], 2048);
    assert_eq!(rows[0]["timeline"], 1);
    let table = stdout(&pgsteward(&["backup", "list", "--config", config]));
    assert!(table.starts_with("BACKUP ID"), "{table}");
    assert!(
        table.contains(&ids[1]) && table.contains("OBSOLETE"),
        "{table}"
    );

    // show
    let shown = json(&pgsteward(&[
        "backup", "show", &ids[1], "--json", "--config", config,
    ]));
    assert_eq!(shown["retention"], "OBSOLETE");
    assert_eq!(shown["info"]["status"], "DONE");
    assert_eq!(shown["info"]["begin_wal"], "000000010000000000000005");
    let out = pgsteward(&["backup", "show", "20200101T000000", "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // retention --dry-run changes nothing and lists what would go.
    let before = files_below(&dest);
    let dry = json(&pgsteward(&[
        "backup",
        "retention",
        "--dry-run",
        "--json",
        "--config",
        config,
    ]));
    assert_eq!(files_below(&dest), before);
    assert_eq!(dry["policy"], "REDUNDANCY 2");
    assert_eq!(dry["summary"]["dry_run"], true);
    assert_eq!(dry["deletions"][0]["backup_id"], ids[1].as_str());
    // Behind a keep:full backup no WAL may go.
    assert_eq!(dry["deletions"][0]["wal_objects"], serde_json::json!([]));
    let text = stdout(&pgsteward(&[
        "backup",
        "retention",
        "--dry-run",
        "--config",
        config,
    ]));
    assert!(
        text.contains(&format!("Would delete backup {}", ids[1])),
        "{text}"
    );
    assert!(
        text.contains(&format!("main/base/{}/data.tar.gz", ids[1])),
        "{text}"
    );

    // retention deletes the obsolete backup.
    let done = json(&pgsteward(&[
        "backup",
        "retention",
        "--json",
        "--config",
        config,
    ]));
    assert_eq!(
        done["summary"]["deleted_backups"],
        serde_json::json!([ids[1]])
    );
    assert!(!dest
        .join(format!("main/base/{}", ids[1]))
        .join("backup.info")
        .exists());
    assert!(!dest
        .join(format!("main/base/{}/data.tar.gz", ids[1]))
        .exists());
    let rows = json(&pgsteward(&[
        "backup", "list", "--json", "--config", config,
    ]));
    assert_eq!(rows.as_array().unwrap().len(), 4);

    // delete by id: refused for the kept backup and below the minimum redundancy (four
    // backups are not STARTED, the FAILED one included, as barman counts them).
    let out = pgsteward(&["backup", "delete", &ids[0], "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keep annotation"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pgsteward(&[
        "backup",
        "delete",
        &ids[3],
        "--minimum-redundancy",
        "4",
        "--config",
        config,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("minimum redundancy"));
    let before = files_below(&dest);
    let dry = stdout(&pgsteward(&[
        "backup",
        "delete",
        &ids[2],
        "--dry-run",
        "--config",
        config,
    ]));
    assert!(
        dry.contains(&format!("Would delete backup {}", ids[2])),
        "{dry}"
    );
    assert_eq!(files_below(&dest), before);
    let deleted = stdout(&pgsteward(&[
        "backup", "delete", &ids[2], "--config", config,
    ]));
    assert!(deleted.contains("Deleted 1 backup(s)"), "{deleted}");
    assert!(!dest
        .join(format!("main/base/{}/backup.info", ids[2]))
        .exists());

    // Bad policies and missing ones are refused with the reason.
    let out = pgsteward(&[
        "backup",
        "retention",
        "--policy",
        "30 days",
        "--config",
        config,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid retention policy"));
    let bare = scratch.path().join("bare.yaml");
    std::fs::write(
        &bare,
        format!("archive:\n  destination: file://{}\n", dest.display()),
    )
    .unwrap();
    let out = pgsteward(&["backup", "retention", "--config", bare.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no retention policy"));
    // The configuration's policy is validated at load (`config check`, manager start).
    let bad = scratch.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "instance_name: main\npgdata: {}/pgdata\narchive:\n  destination: file://{}\n  retention_policy: 30 days\n",
            scratch.path().display(),
            dest.display()
        ),
    )
    .unwrap();
    let check = pgsteward(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    let problems = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        problems.contains("archive.retention_policy: invalid retention policy \"30 days\""),
        "{problems}"
    );
}
