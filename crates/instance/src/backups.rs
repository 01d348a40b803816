//! The manager's base backups: at most one at a time, run in the background on request
//! (`POST /pg/backup`), through the local socket as the superuser into the archive's store and
//! server; progress, outcome and the first recoverability point for status and metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgsteward_api::{BackupProgress, BackupResult, BackupStatus};
use pgsteward_archive::store::MultipartOptions;
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::BackupStatus as CatalogStatus;
use pgsteward_backup::take::{take_backup, Progress, TakeOptions};
use prometheus::{Gauge, IntGauge, Opts, Registry};

use crate::supervisor::shared::Shared;

/// Backup metrics, registered with the manager's registry.
#[derive(Clone, Debug)]
pub struct BackupMetrics {
    pub last_success: Gauge,
    pub last_failure: Gauge,
    pub first_recoverability_point: Gauge,
    pub running: IntGauge,
    pub bytes_done: IntGauge,
    pub bytes_total: IntGauge,
    pub last_duration: Gauge,
}

impl BackupMetrics {
    pub fn new(registry: &Registry, namespace: &str) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(namespace.to_owned());
        let metrics = BackupMetrics {
            last_success: Gauge::with_opts(opts(
                "backup_last_success_timestamp",
                "When a base backup last succeeded, seconds since the epoch",
            ))?,
            last_failure: Gauge::with_opts(opts(
                "backup_last_failure_timestamp",
                "When a base backup last failed, seconds since the epoch",
            ))?,
            first_recoverability_point: Gauge::with_opts(opts(
                "backup_first_recoverability_point",
                "Begin time of the oldest DONE backup in the catalog, seconds since the epoch",
            ))?,
            running: IntGauge::with_opts(opts("backup_running", "1 while a base backup runs"))?,
            bytes_done: IntGauge::with_opts(opts(
                "backup_bytes_done",
                "Bytes read by the running (or last) base backup",
            ))?,
            bytes_total: IntGauge::with_opts(opts(
                "backup_bytes_total",
                "Bytes the running (or last) base backup reads in total",
            ))?,
            last_duration: Gauge::with_opts(opts(
                "backup_last_duration_seconds",
                "Duration of the last finished base backup",
            ))?,
        };
        registry.register(Box::new(metrics.last_success.clone()))?;
        registry.register(Box::new(metrics.last_failure.clone()))?;
        registry.register(Box::new(metrics.first_recoverability_point.clone()))?;
        registry.register(Box::new(metrics.running.clone()))?;
        registry.register(Box::new(metrics.bytes_done.clone()))?;
        registry.register(Box::new(metrics.bytes_total.clone()))?;
        registry.register(Box::new(metrics.last_duration.clone()))?;
        Ok(metrics)
    }
}

#[derive(Debug, Default)]
struct Tracking {
    running: Option<(String, Arc<Progress>)>,
    status: BackupStatus,
}

/// The manager's backup state.
#[derive(Debug, Default)]
pub struct Backups {
    tracking: Mutex<Tracking>,
}

/// Why a backup cannot start now.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("backup {0} is running")]
    Running(String),
    #[error("archive.destination is not configured: base backups need an object store")]
    NotConfigured,
    #[error("postgres is not running")]
    NotRunning,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn epoch_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Backups {
    fn track<T>(&self, f: impl FnOnce(&mut Tracking) -> T) -> T {
        let mut guard = self.tracking.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Status for `/pg/status`, with the running backup's live progress.
    pub fn status(&self) -> BackupStatus {
        self.track(|t| {
            let mut status = t.status.clone();
            status.running = t.running.as_ref().map(|(id, progress)| {
                let p = progress.snapshot();
                BackupProgress {
                    backup_id: id.clone(),
                    phase: serde_json::to_value(p.phase)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    bytes_done: p.bytes_done,
                    bytes_total: p.bytes_total,
                    bytes_uploaded: p.bytes_uploaded,
                    elapsed_seconds: p.elapsed_seconds,
                    rate_bytes_per_second: p.rate_bytes_per_second,
                }
            });
            status
        })
    }

    /// Update the progress gauges (called by the metrics scrape).
    pub fn refresh_metrics(&self, metrics: &BackupMetrics) {
        self.track(|t| {
            metrics.running.set(i64::from(t.running.is_some()));
            if let Some((_, progress)) = &t.running {
                let p = progress.snapshot();
                metrics.bytes_done.set(p.bytes_done as i64);
                metrics.bytes_total.set(p.bytes_total as i64);
            }
        });
    }
}

/// Start a backup in the background; returns its id.
pub async fn start(
    shared: &Arc<Shared>,
    immediate_checkpoint: Option<bool>,
) -> Result<String, StartError> {
    let archiver = shared
        .archiver
        .get()
        .cloned()
        .ok_or(StartError::NotConfigured)?;
    if shared.state.current() != pgsteward_api::InstanceState::Running {
        return Err(StartError::NotRunning);
    }
    let config = shared.config();
    let data = config.archive.data.clone();
    let now = chrono::Utc::now();
    let progress = Arc::new(Progress::default());
    let server = archiver.settings().server_name.clone();
    // Ids are start times to the second (barman's format): a backup started in the same
    // second as the previous one of this manager, or as one another member (sharing the
    // destination) already wrote to the catalog, gets the next free second.
    let previous = shared
        .backups
        .track(|t| t.status.last.as_ref().map(|l| l.backup_id.clone()));
    let mut candidate = unused_backup_id(now, previous.as_deref());
    let catalog = Catalog::new(Arc::clone(archiver.wal().store()), &server);
    for _ in 0..ID_TRIES {
        match catalog.read(&candidate).await {
            Ok(Some(_)) => candidate = unused_backup_id(now, Some(&candidate)),
            Ok(None) => break,
            // The take reports an unreadable catalog with its cause.
            Err(e) => {
                tracing::warn!(error = %e, backup_id = %candidate, "checking the catalog for the backup id failed");
                break;
            }
        }
    }
    let id = shared.backups.track(|t| match &t.running {
        Some((running, _)) => Err(StartError::Running(running.clone())),
        None => {
            t.running = Some((candidate.clone(), Arc::clone(&progress)));
            Ok(candidate.clone())
        }
    })?;
    let mut options = TakeOptions::new(&server, &shared.pgdata);
    options.gzip_level = data.gzip_level;
    options.compressors = data.compressor_threads();
    options.readers = data.readers;
    options.fast_checkpoint = immediate_checkpoint.unwrap_or(data.immediate_checkpoint);
    options.multipart = MultipartOptions {
        part_size: data.part_size_mib * 1024 * 1024,
        parts_in_flight: data.parts_in_flight,
    };
    options.backup_id = Some(id.clone());
    let target = shared.target();
    let mut pg = tokio_postgres::Config::new();
    pg.host_path(&target.socket_dir)
        .port(target.port)
        .user(&target.superuser)
        .dbname("postgres")
        .application_name("pgsteward backup")
        .connect_timeout(Duration::from_secs(10));
    let store = Arc::clone(archiver.wal().store());
    let shared = Arc::clone(shared);
    let metrics = shared.metrics.backup.clone();
    tracing::info!(backup_id = %id, destination = %store.describe(), server = %server, "base backup requested");
    tokio::spawn(async move {
        metrics.running.set(1);
        let result = take_backup(Arc::clone(&store), &pg, &options, Arc::clone(&progress)).await;
        let snapshot = progress.snapshot();
        metrics.running.set(0);
        metrics.bytes_done.set(snapshot.bytes_done as i64);
        metrics.bytes_total.set(snapshot.bytes_total as i64);
        metrics.last_duration.set(snapshot.elapsed_seconds);
        let finished = now_rfc3339();
        let (succeeded, error) = match &result {
            Ok(_) => {
                metrics.last_success.set(epoch_seconds());
                (true, None)
            }
            Err(e) => {
                metrics.last_failure.set(epoch_seconds());
                (false, Some(e.to_string()))
            }
        };
        let first = first_recoverability_point(&Catalog::new(store, &server)).await;
        if let Some((text, epoch)) = &first {
            metrics.first_recoverability_point.set(*epoch);
            tracing::debug!(first_recoverability_point = %text, "catalog scanned");
        }
        shared.backups.track(|t| {
            t.running = None;
            let status = &mut t.status;
            if succeeded {
                status.last_success_time = Some(finished.clone());
            } else {
                status.last_failure_time = Some(finished.clone());
            }
            if let Some((text, _)) = first {
                status.first_recoverability_point = Some(text);
            }
            status.last = Some(BackupResult {
                backup_id: snapshot.backup_id.clone().unwrap_or_default(),
                succeeded,
                error,
                finished_time: finished,
                duration_seconds: snapshot.elapsed_seconds,
                bytes_read: snapshot.bytes_done,
                bytes_stored: snapshot.bytes_uploaded,
            });
        });
    });
    Ok(id)
}

/// The id for a backup starting at `now`: its time to the second, or the second after
/// `previous` when that is not earlier.
/// How many following seconds `start` tries when the catalog already holds the id.
const ID_TRIES: usize = 30;

fn unused_backup_id(now: chrono::DateTime<chrono::Utc>, previous: Option<&str>) -> String {
    let id = pgsteward_backup::info::backup_id_for(&now);
    let Some(previous) = previous else {
        return id;
    };
    match chrono::NaiveDateTime::parse_from_str(previous, "%Y%m%dT%H%M%S") {
        Ok(last) if id.as_str() <= previous => {
            pgsteward_backup::info::backup_id_for(&(last.and_utc() + chrono::TimeDelta::seconds(1)))
        }
        _ => id,
    }
}

/// Begin time of the oldest DONE backup, as RFC 3339 and epoch seconds.
async fn first_recoverability_point(catalog: &Catalog) -> Option<(String, f64)> {
    let entries = match catalog.list().await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "listing the backup catalog failed");
            return None;
        }
    };
    entries
        .iter()
        .filter_map(|entry| entry.info.as_ref().ok())
        .filter(|info| info.status().ok() == Some(CatalogStatus::Done))
        .filter_map(|info| info.begin_time().ok().flatten())
        .min()
        .map(|time| (time.to_rfc3339(), time.timestamp_micros() as f64 / 1e6))
}

#[cfg(test)]
mod id_tests {
    use super::unused_backup_id;

    #[test]
    fn same_second_backups_get_the_next_second() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:05Z")
            .unwrap_or_default()
            .to_utc();
        assert_eq!(unused_backup_id(now, None), "20261122T100005");
        assert_eq!(
            unused_backup_id(now, Some("20261122T100004")),
            "20261122T100005"
        );
        assert_eq!(
            unused_backup_id(now, Some("20261122T100005")),
            "20261122T100006"
        );
        assert_eq!(
            unused_backup_id(now, Some("20261122T100006")),
            "20261122T100007"
        );
        assert_eq!(unused_backup_id(now, Some("garbage")), "20261122T100005");
    }
}
