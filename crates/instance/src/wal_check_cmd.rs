//! `pgsteward wal check [--json]`: the archived segments' gaps per timeline, then for every
//! finished backup of the catalog in the same place whether a restore from it reaches the end
//! of the archive (its own WAL is there, it is on the newest timeline's history and no gap
//! stops the replay along that history; `recovery::wal_path`). Text for people, `--json` for
//! scripts; the exit code is the same: 0 when all is whole, 1 when a timeline has gaps or a finished backup does not restore
//! to the end, 2 when the check itself failed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pgsteward_archive::timeline::History;
use pgsteward_archive::{WalFile, WalKind};
use pgsteward_backup::catalog::{Catalog, CatalogEntry};
use pgsteward_backup::info::BackupStatus;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::archiver::status;
use crate::recovery::wal_path::{self, Replay};
use crate::wal_cmd::operator_target;

/// What one backup's line says.
struct BackupLine {
    backup_id: String,
    status: String,
    /// None when the backup was not checked (unfinished, unreadable, no first segment).
    replay: Option<Replay>,
    text: String,
}

/// Everything the check found.
struct Report {
    destination: String,
    server: String,
    /// Files listed in the archive.
    files: usize,
    /// Files the local data directory still holds `.ready`: not archived yet, not lost.
    pending: Vec<String>,
    timelines: Vec<u32>,
    /// Timelines after the first with segments but no archived history file.
    without_history: Vec<u32>,
    /// The segment size the gaps were counted with.
    segment_bytes: u64,
    gaps: Vec<(u32, Vec<String>)>,
    backups: Vec<BackupLine>,
}

impl Report {
    fn ok(&self) -> bool {
        self.gaps.is_empty()
            && self.without_history.is_empty()
            && self.backups.iter().all(|b| {
                b.replay
                    .as_ref()
                    .is_none_or(|r| matches!(r, Replay::Whole { .. }))
            })
    }

    fn print_text(&self) {
        println!(
            "{}: {} files on timeline(s) {:?}",
            self.destination,
            self.files,
            self.timelines
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
        );
        if self.segment_bytes != 16 << 20 {
            println!("WAL segments of {} MiB", self.segment_bytes >> 20);
        }
        if !self.pending.is_empty() {
            println!(
                "{} file(s) still waiting to be archived in this data directory, counted as archived (postgres keeps them until they are): {}",
                self.pending.len(),
                wal_path::some_names(&self.pending, 20)
            );
        }
        for timeline in &self.without_history {
            println!(
                "timeline {timeline}: segments archived but no {timeline:08X}.history: a restore \
                 reaches them only from a backup taken on timeline {timeline} (postgres finds a \
                 newer timeline by its history file)"
            );
        }
        for (timeline, missing) in &self.gaps {
            println!(
                "timeline {timeline}: {} missing segment(s): {}",
                missing.len(),
                wal_path::some_names(missing, 20)
            );
        }
        for line in &self.backups {
            println!("backup {}: {}", line.backup_id, line.text);
        }
        if self.backups.is_empty() {
            println!("no backups in {}/base", self.server);
        }
        if self.ok() {
            println!(
                "no gaps{}",
                if self.backups.is_empty() {
                    ""
                } else {
                    "; every finished backup restores to the end of the archive"
                }
            );
        }
    }

    fn to_json(&self) -> Value {
        let backups: Vec<Value> = self
            .backups
            .iter()
            .map(|line| {
                let mut entry = json!({
                    "backup_id": line.backup_id,
                    "status": line.status,
                    "summary": line.text,
                });
                entry["restore"] = match &line.replay {
                    None => json!("not_checked"),
                    Some(Replay::Whole { last }) => {
                        entry["last_segment"] = json!(last);
                        json!("to_end")
                    }
                    Some(Replay::EndsAtGap {
                        first_gap,
                        stops_at,
                        ..
                    }) => {
                        entry["stops_at_lsn"] = json!(stops_at.to_string());
                        entry["missing"] = json!(first_gap);
                        json!("up_to_gap")
                    }
                    Some(Replay::LacksOwnWal { missing }) => {
                        entry["missing"] = json!(missing);
                        json!("impossible")
                    }
                    Some(Replay::OffHistory {
                        timeline,
                        backup_timeline,
                        forked_at,
                    }) => {
                        entry["timeline"] = json!(timeline);
                        entry["backup_timeline"] = json!(backup_timeline);
                        entry["forked_at_lsn"] = json!(forked_at.map(|l| l.to_string()));
                        json!("off_history")
                    }
                };
                entry
            })
            .collect();
        json!({
            "destination": self.destination,
            "server_name": self.server,
            "files": self.files,
            "pending": self.pending,
            "timelines": self.timelines,
            "timelines_without_history": self.without_history,
            "segment_bytes": self.segment_bytes,
            "gaps": self.gaps.iter().map(|(timeline, missing)| json!({
                "timeline": timeline,
                "missing": missing,
            })).collect::<Vec<_>>(),
            "backups": backups,
            "ok": self.ok(),
        })
    }
}

/// `pgsteward wal check`.
pub fn check(
    pgdata: Option<&Path>,
    config: Option<&Path>,
    segment_mb: Option<u64>,
    as_json: bool,
) -> i32 {
    crate::cli::block_on("wal", crate::cli::CommandRuntime::CurrentThread, async {
        match report(pgdata, config, segment_mb).await {
            Ok(report) => {
                if as_json {
                    println!("{}", report.to_json());
                } else {
                    report.print_text();
                }
                if report.ok() {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("pgsteward wal check: ERROR: {e:#}");
                2
            }
        }
    })
}

async fn report(
    pgdata: Option<&Path>,
    config: Option<&Path>,
    segment_mb: Option<u64>,
) -> Result<Report> {
    let (settings, local) = operator_target(pgdata, config)?;
    // Its `.ready` files are not holes (when it is on this machine).
    let local = local.filter(|dir| dir.join("pg_wal/archive_status").is_dir());
    let wal = settings.open().await?;
    let mut files: Vec<WalFile> = wal
        .list(Instant::now() + Duration::from_secs(600))
        .await?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let listed = files.len();
    // What this data directory still holds `.ready`, read after the listing: postgres keeps
    // those until they are archived, so they are not holes (a busy primary always has some,
    // and its parallel uploads finish out of order).
    let pending: Vec<WalFile> = local
        .as_deref()
        .map(|dir| status::names_with_status(dir, status::READY))
        .unwrap_or_default()
        .iter()
        .filter_map(|name| WalFile::parse(name).ok())
        .filter(|file| !files.contains(file))
        .collect();
    files.extend(pending.iter().cloned());
    let catalog = Catalog::new(Arc::clone(wal.store()), &settings.server_name);
    let entries = catalog
        .list()
        .await
        .context("listing the backups beside the WAL")?;
    // The newest timeline's history, as a restore to the end follows it, for each timeline
    // the finished backups start on.
    let backup_timelines = wal_path::finished_backups(&entries)
        .filter_map(wal_path::backup_timeline)
        .collect();
    let histories =
        wal_path::latest_histories(&wal, backup_timelines, &files, settings.timeout()).await?;
    let segment_bytes = segment_size(segment_mb, local.as_deref(), &entries);
    let mut backups = assess_backups(&entries, &files, &histories);
    let mut found_gaps = gaps(&files, segment_bytes);
    if local.is_some() {
        // A file whose upload ended between the listing and the `.ready` read is neither
        // listed nor pending: look for what seems missing once more.
        let seemingly_missing: Vec<WalFile> = missing_names(&found_gaps, &backups)
            .iter()
            .filter_map(|name| WalFile::parse(name).ok())
            .chain(
                wal_path::timelines_without_history(&files)
                    .into_iter()
                    .filter_map(WalFile::history_of),
            )
            .collect();
        if !seemingly_missing.is_empty() {
            let stored_since = wal
                .archived_among(&seemingly_missing, Instant::now() + settings.timeout())
                .await?;
            if !stored_since.is_empty() {
                files.extend(stored_since);
                backups = assess_backups(&entries, &files, &histories);
                found_gaps = gaps(&files, segment_bytes);
            }
        }
    }
    Ok(Report {
        destination: wal.store().describe(),
        server: settings.server_name.clone(),
        files: listed,
        pending: pending.iter().map(|f| f.name().to_owned()).collect(),
        timelines: files
            .iter()
            .map(WalFile::timeline)
            .collect::<std::collections::BTreeSet<u32>>()
            .into_iter()
            .collect(),
        without_history: wal_path::timelines_without_history(&files),
        segment_bytes,
        gaps: found_gaps,
        backups,
    })
}

/// The WAL segment size the gaps are counted with: the one given, else the data directory's
/// (when it is on this machine), else the newest finished backup's, else 16 MiB. With the
/// wrong size every log file's end would look like a gap.
fn segment_size(given_mb: Option<u64>, local: Option<&Path>, entries: &[CatalogEntry]) -> u64 {
    given_mb
        .map(|mb| mb << 20)
        .or_else(|| local.and_then(crate::pgdata::wal_segment_size))
        .or_else(|| {
            wal_path::finished_backups(entries)
                .rev()
                .find_map(|info| info.segment_size().ok())
        })
        .unwrap_or(16 << 20)
}

/// Every segment name the gaps and the backups' lines call missing.
fn missing_names(gaps: &[(u32, Vec<String>)], backups: &[BackupLine]) -> BTreeSet<String> {
    let from_backups = backups.iter().flat_map(|line| match &line.replay {
        Some(Replay::LacksOwnWal { missing }) => missing.as_slice(),
        Some(Replay::EndsAtGap { first_gap, .. }) => first_gap.as_slice(),
        _ => &[],
    });
    gaps.iter()
        .flat_map(|(_, names)| names)
        .chain(from_backups)
        .cloned()
        .collect()
}

/// One line per backup of the catalog: how a restore from a finished one goes.
fn assess_backups(
    entries: &[CatalogEntry],
    files: &[WalFile],
    histories: &BTreeMap<u32, History>,
) -> Vec<BackupLine> {
    entries
        .iter()
        .map(|entry| {
            let (status, replay, text) = match &entry.info {
                Err(e) => (
                    "UNREADABLE".to_owned(),
                    None,
                    format!("unreadable backup.info ({e}), not checked"),
                ),
                Ok(info) => match info.status() {
                    Ok(BackupStatus::Done) => match wal_path::backup_timeline(info)
                        .and_then(|timeline| histories.get(&timeline))
                        .and_then(|history| wal_path::assess(files, info, history))
                    {
                        Some(replay) => ("DONE".to_owned(), Some(replay.clone()), replay.summary()),
                        None => (
                            "DONE".to_owned(),
                            None,
                            "names no first WAL segment, not checked".to_owned(),
                        ),
                    },
                    Ok(status) => (
                        status.as_str().to_owned(),
                        None,
                        format!("{}, not checked", status.as_str()),
                    ),
                    Err(e) => ("UNKNOWN".to_owned(), None, format!("{e}, not checked")),
                },
            };
            BackupLine {
                backup_id: entry.backup_id.clone(),
                status,
                replay,
                text,
            }
        })
        .collect()
}

/// Missing segments between the first and last archived segment of each timeline.
pub fn gaps(names: &[WalFile], segment_bytes: u64) -> Vec<(u32, Vec<String>)> {
    let mut by_timeline: std::collections::BTreeMap<u32, Vec<&WalFile>> =
        std::collections::BTreeMap::new();
    for file in names.iter().filter(|f| f.kind() == WalKind::Segment) {
        by_timeline.entry(file.timeline()).or_default().push(file);
    }
    let mut out = Vec::new();
    for (timeline, mut files) in by_timeline {
        files.sort();
        let mut missing = Vec::new();
        for pair in files.windows(2) {
            let mut expected = pair[0].next_segment(segment_bytes);
            let mut guard = 0;
            while let Some(next) = expected {
                if next.name() >= pair[1].name() || guard > 100_000 {
                    break;
                }
                missing.push(next.name().to_owned());
                expected = next.next_segment(segment_bytes);
                guard += 1;
            }
        }
        if !missing.is_empty() {
            out.push((timeline, missing));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_gaps_per_timeline() {
        let names: Vec<WalFile> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000005",
            "00000002.history",
            "000000020000000000000005",
            "000000020000000000000006",
        ]
        .iter()
        .map(|n| WalFile::parse(n).unwrap())
        .collect();
        assert!(wal_path::timelines_without_history(&names).is_empty());
        let found = gaps(&names, 16 << 20);
        assert_eq!(
            found,
            vec![(
                1,
                vec![
                    "000000010000000000000003".to_owned(),
                    "000000010000000000000004".to_owned()
                ]
            )]
        );
    }

    #[test]
    fn gaps_follow_the_segment_size() {
        // 64 MiB segments: a log file holds 0x00-0x3F, then the next one begins.
        let names: Vec<WalFile> = [
            "00000001000000000000003E",
            "00000001000000000000003F",
            "000000010000000100000000",
            "000000010000000100000002",
        ]
        .iter()
        .map(|n| WalFile::parse(n).unwrap_or_else(|e| panic!("{e}")))
        .collect();
        assert_eq!(
            gaps(&names, 64 << 20),
            vec![(1, vec!["000000010000000100000001".to_owned()])]
        );
        // Counted with 16 MiB, the end of the log file would look like 192 missing segments.
        assert_eq!(gaps(&names, 16 << 20)[0].1.len(), 192 + 1);
    }

    #[test]
    fn the_segment_size_is_the_given_one_then_the_directorys_then_the_backups() {
        let backup = |id: &str, size: u64, status: &str| {
            let mut info = pgsteward_backup::info::BackupInfo::new(id);
            info.set("xlog_segment_size", size.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            info.set("status", status).unwrap_or_else(|e| panic!("{e}"));
            CatalogEntry {
                backup_id: id.to_owned(),
                info: Ok(info),
            }
        };
        let entries = vec![
            backup("20261201T000000", 32 << 20, "DONE"),
            backup("20261202T000000", 64 << 20, "DONE"),
            backup("20261203T000000", 128 << 20, "FAILED"),
        ];
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(segment_size(None, None, &[]), 16 << 20);
        // The newest finished backup's.
        assert_eq!(segment_size(None, Some(dir.path()), &entries), 64 << 20);
        std::fs::create_dir_all(dir.path().join("pg_wal")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::File::create(dir.path().join("pg_wal/000000010000000000000001"))
            .and_then(|f| f.set_len(8 << 20))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(segment_size(None, Some(dir.path()), &entries), 8 << 20);
        assert_eq!(segment_size(Some(1), Some(dir.path()), &entries), 1 << 20);
    }
}
