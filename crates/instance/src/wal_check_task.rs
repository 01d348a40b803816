//! The primary's scheduled archive check: every `archive.wal.check_interval` (scheduled by
//! `primary_schedule`: only while postgres runs as a primary), the manager lists its archive and
//! follows the replay path of the newest finished backup on the newest timeline's history
//! (`recovery::wal_path`, the path a restore to the end takes): the
//! segments a restore from it to the end of the archive would miss, less those this primary
//! still holds `.ready` (not lost: the backlog, which its own alerts cover) and those stored
//! while the check ran (uploads finish out of order), become
//! `wal_archive_path_missing_segments`, logged by name. A hole (archiving off for a while, a
//! segment deleted or marked done by hand, a lifecycle rule on the bucket) is then seen within
//! the interval, not at the next drill or the next real restore. Timelines whose segments are
//! archived without their history file (by the same rules) become
//! `wal_archive_timelines_without_history`: postgres finds a newer timeline only by that file,
//! so a restore to the end, or a standby fed from the archive, silently stops before them.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pgsteward_archive::wal::deadline_in;
use pgsteward_archive::{WalFile, WalKind};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::BackupInfo;
use prometheus::{Gauge, IntCounter, IntGauge, Opts, Registry};

use crate::archiver::{status, Archiver};
use crate::primary_schedule;
use crate::recovery::wal_path;
use crate::supervisor::shared::Shared;

/// How long one check's listing of the archive may take, retries included.
const LIST_TIMEOUT: Duration = Duration::from_secs(600);

/// Metrics of the scheduled archive checks.
#[derive(Clone)]
pub struct WalCheckMetrics {
    /// Segments the newest finished backup's replay path misses (0: a restore to the end of
    /// the archive works).
    pub missing: IntGauge,
    /// Timelines with segments but no history file (0: every timeline is reachable).
    pub without_history: IntGauge,
    /// When a check last completed (seconds since the epoch).
    pub last_check: Gauge,
    /// When a check last failed (seconds since the epoch; 0: never).
    pub last_failure: Gauge,
    pub errors: IntCounter,
}

impl WalCheckMetrics {
    pub fn register(registry: &Registry, namespace: &str) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(namespace.to_owned());
        let metrics = WalCheckMetrics {
            missing: IntGauge::with_opts(opts(
                "wal_archive_path_missing_segments",
                "WAL segments a restore from the newest finished backup to the end of the archive would miss (not counting segments still waiting to be archived); 0 when it would work",
            ))?,
            without_history: IntGauge::with_opts(opts(
                "wal_archive_timelines_without_history",
                "Timelines with archived WAL segments but no archived history file (after the archive's first timeline): no restore to the end and no standby fed from the archive reaches them; 0 when every timeline has one",
            ))?,
            last_check: Gauge::with_opts(opts(
                "wal_archive_last_check_timestamp_seconds",
                "When the scheduled archive check last completed (seconds since the epoch)",
            ))?,
            last_failure: Gauge::with_opts(opts(
                "wal_archive_last_check_failure_timestamp_seconds",
                "When the scheduled archive check last failed (seconds since the epoch; 0: never); newer than the last completed check: the archive's restorability is not known",
            ))?,
            errors: IntCounter::with_opts(opts(
                "wal_archive_check_errors_total",
                "Scheduled archive checks that failed (store errors, unreadable catalog)",
            ))?,
        };
        registry.register(Box::new(metrics.missing.clone()))?;
        registry.register(Box::new(metrics.without_history.clone()))?;
        registry.register(Box::new(metrics.last_check.clone()))?;
        registry.register(Box::new(metrics.last_failure.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        Ok(metrics)
    }
}

/// The files of `names` this data directory does not still hold `.ready`.
fn lost<'a>(names: impl IntoIterator<Item = &'a String>, pgdata: &Path) -> Vec<String> {
    let ready: HashSet<String> = status::names_with_status(pgdata, status::READY)
        .into_iter()
        .collect();
    names
        .into_iter()
        .filter(|name| !ready.contains(*name))
        .cloned()
        .collect()
}

/// What one check found.
#[derive(Debug)]
struct Found {
    /// The newest finished backup on the newest timeline's history and the segments a
    /// restore from it to the end would miss (None without such a backup).
    path: Option<(String, Vec<String>)>,
    /// Timelines after the archive's first with segments but no history file: no replay
    /// following the newest timeline reaches them, nor does a standby fed from the archive.
    without_history: Vec<u32>,
}

/// The segments a restore from the newest finished backup on the newest timeline's history
/// would miss, and the timelines without a history file, less what is still `.ready` here. A
/// backup off that history (taken by a primary that went on after a failover) cannot be
/// restored to the end, which `pgsteward wal check` reports; it is skipped here.
async fn check(archiver: &Archiver, timeout: Duration) -> anyhow::Result<Found> {
    let wal = archiver.wal();
    let archived: Vec<WalFile> = wal
        .list(deadline_in(timeout))
        .await?
        .into_iter()
        .map(|(file, _)| file)
        .collect();
    let mut suspects: Vec<String> = wal_path::timelines_without_history(&archived)
        .into_iter()
        .filter_map(WalFile::history_of)
        .map(|file| file.name().to_owned())
        .collect();
    let catalog = Catalog::new(wal.store().clone(), &archiver.settings().server_name);
    let entries = catalog.list().await?;
    let backups: Vec<&BackupInfo> = wal_path::finished_backups(&entries).rev().collect();
    let timelines = backups
        .iter()
        .filter_map(|backup| wal_path::backup_timeline(backup))
        .collect();
    let histories = wal_path::latest_histories(wal, timelines, &archived, timeout).await?;
    let on_path = backups.into_iter().find_map(|backup| {
        let history = histories.get(&wal_path::backup_timeline(backup)?)?;
        let missing = wal_path::path_holes(&archived, backup, history);
        if missing.is_none() {
            tracing::debug!(backup = %backup.backup_id(), timeline = history.timeline(), "archive check: the backup is not on the newest timeline's history; an older one is checked");
        }
        Some((backup.backup_id().to_owned(), missing?))
    });
    if let Some((_, missing)) = &on_path {
        suspects.extend(missing.iter().flat_map(|(_, names)| names).cloned());
    }
    // Read after the listing: a file in flight then is either still `.ready` now, or stored
    // by now (postgres drops `.ready` only once it is archived), which the second look below
    // finds; what is neither is gone. Without it, the parallel uploads' out-of-order
    // completions would be counted as holes for a whole interval.
    let candidates: Vec<WalFile> = lost(&suspects, archiver.pgdata())
        .iter()
        .filter_map(|name| WalFile::parse(name).ok())
        .collect();
    let stored_since = if candidates.is_empty() {
        Default::default()
    } else {
        wal.archived_among(&candidates, deadline_in(timeout))
            .await?
    };
    let gone = |file: &&WalFile| !stored_since.contains(*file);
    Ok(Found {
        path: on_path.map(|(backup, _)| {
            let names = candidates
                .iter()
                .filter(gone)
                .filter(|file| file.kind() == WalKind::Segment)
                .map(|file| file.name().to_owned())
                .collect();
            (backup, names)
        }),
        without_history: candidates
            .iter()
            .filter(gone)
            .filter(|file| file.kind() == WalKind::TimelineHistory)
            .map(WalFile::timeline)
            .collect(),
    })
}

/// Start the schedule (a no-op without an archive).
pub fn spawn(shared: Arc<Shared>) {
    primary_schedule::every(
        shared,
        |config| config.archive.wal.check_interval,
        |shared, archiver| async move { run_once(&shared, &archiver).await },
    );
}

async fn run_once(shared: &Shared, archiver: &Archiver) {
    let metrics = &shared.metrics.wal_check;
    if let Err(skip) = primary_schedule::primary_now(shared).await {
        tracing::debug!(?skip, "archive check skipped");
        return;
    }
    // Listing a large archive takes a request per thousand objects: a generous bound, not
    // the per-segment call's.
    match check(archiver, LIST_TIMEOUT).await {
        Ok(found) => {
            let missing = found.path.as_ref().map_or(0, |(_, names)| names.len());
            metrics.missing.set(missing as i64);
            metrics
                .without_history
                .set(found.without_history.len() as i64);
            metrics
                .last_check
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            if !found.without_history.is_empty() {
                tracing::error!(
                    timelines = ?found.without_history,
                    "the archive holds segments of timeline(s) whose history file is missing: a restore to the end, or a standby fed from the archive, stops before them (`pgsteward wal check`)"
                );
            }
            match found.path {
                Some((backup, names)) if !names.is_empty() => tracing::error!(
                    backup,
                    missing = names.len(),
                    segments = %wal_path::some_names(&names, 10),
                    "the archive lacks WAL a restore from the newest backup needs: a restore to the end would stop there (`pgsteward wal check`)"
                ),
                Some((backup, _)) => {
                    tracing::debug!(
                        backup,
                        "archive check: the newest backup restores to the end"
                    )
                }
                None => tracing::debug!("archive check: no finished backup yet"),
            }
        }
        Err(e) => {
            metrics.errors.inc();
            metrics
                .last_failure
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            tracing::error!(error = %format!("{e:#}"), "archive check failed: whether a restore to the end works is not known until a check completes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_still_ready_here_are_not_lost() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let status = dir.path().join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(status.join("000000010000000000000006.ready"), "")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(status.join("000000010000000000000005.done"), "")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(status.join("00000002.history.ready"), "").unwrap_or_else(|e| panic!("{e}"));
        let suspects = [
            "000000010000000000000005".to_owned(),
            "000000010000000000000006".to_owned(),
            "00000002.history".to_owned(),
            "00000003.history".to_owned(),
        ];
        assert_eq!(
            lost(&suspects, dir.path()),
            vec![
                "000000010000000000000005".to_owned(),
                "00000003.history".to_owned()
            ]
        );
    }
}
