//! The manager's WAL archiver: watches `pg_wal/archive_status/*.ready`, compresses and uploads
//! segments ahead of postgres's archiver, `max_parallel` at a time with one store client, and
//! answers `wal-archive` calls on the local socket as soon as their segment is stored. Also
//! serves `wal-restore` calls (see `prefetch`).

pub mod destination;
pub mod paths;
pub mod prefetch;
pub mod protocol;
pub mod server;
pub mod settings;
pub mod sidecar;
pub mod standby;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pgsteward_api::ArchiveStatus;
use pgsteward_archive::{ArchiveOutcome, WalArchive, WalError, WalFile, WalKind};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::metrics::Metrics;
use settings::ArchiveSettings;

type UploadResult = Option<Result<(), String>>;

/// Pooled segment buffers are freed after this long without an upload.
const RELEASE_BUFFERS_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Tracking {
    inflight: HashMap<String, watch::Receiver<UploadResult>>,
    /// Stored, waiting for postgres to call archive_command and mark them `.done`.
    stored: HashSet<String>,
    /// Failed uploads are retried from the scan only after this instant.
    retry_after: HashMap<String, Instant>,
    status: ArchiveStatus,
    destination_ok: bool,
    /// The destination check failed at least once (later uploads check before compressing).
    destination_refused: bool,
}

/// The archiver; share it with `Arc`.
#[derive(Debug)]
pub struct Archiver {
    wal: WalArchive,
    settings: ArchiveSettings,
    pgdata: PathBuf,
    metrics: Metrics,
    uploads: Arc<Semaphore>,
    tracking: Mutex<Tracking>,
    wake: Notify,
    destination_check: tokio::sync::Mutex<()>,
    pub(crate) prefetch: prefetch::Prefetcher,
    /// Serves restores only (a point-in-time replay's source archive): archive requests are
    /// refused and nothing is scanned or uploaded.
    restore_only: bool,
}

/// Above this, the transfer buffers' bound is logged as a warning.
const LARGE_BUFFERS: u64 = 1 << 30;

/// Transfers hold whole segments in memory (a segment and its gzip form each, compressed or
/// decompressed whole): about `2 x segment size x max_parallel` at most. With large segments
/// (`initdb --wal-segsize` up to 1 GiB) that can exceed what the container was given.
fn transfer_buffers_bound(max_parallel: usize, segment_bytes: u64) -> u64 {
    2 * segment_bytes * max_parallel as u64
}

impl Archiver {
    /// Open the store and create the archiver (nothing runs until `spawn`).
    pub async fn new(
        settings: ArchiveSettings,
        pgdata: &Path,
        metrics: Metrics,
        segment_bytes: u64,
    ) -> anyhow::Result<Arc<Self>> {
        Self::build(settings, pgdata, metrics, segment_bytes, false).await
    }

    /// An archiver that only serves `wal-restore` calls, with prefetch, for the private
    /// postgres of a restore, a recovery bootstrap or a drill, which replays from the source
    /// archive: started with `serve_restores`, it never uploads anything there.
    pub async fn for_replay(
        settings: ArchiveSettings,
        pgdata: &Path,
        segment_bytes: u64,
    ) -> anyhow::Result<Arc<Self>> {
        let metrics = Metrics::new("pgsteward_replay")?;
        Self::build(settings, pgdata, metrics, segment_bytes, true).await
    }

    async fn build(
        settings: ArchiveSettings,
        pgdata: &Path,
        metrics: Metrics,
        segment_bytes: u64,
        restore_only: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let wal = if restore_only {
            settings.open().await?
        } else {
            settings.open_for_archiving(pgdata).await?
        };
        let status = ArchiveStatus {
            destination: wal.store().describe(),
            ..ArchiveStatus::default()
        };
        let prefetch = prefetch::Prefetcher::new(pgdata, settings.prefetch, segment_bytes);
        let bound = transfer_buffers_bound(settings.max_parallel, segment_bytes);
        if bound > LARGE_BUFFERS {
            tracing::warn!(
                max_parallel = settings.max_parallel,
                segment_bytes,
                buffers_bound_mib = bound >> 20,
                "WAL transfers may hold up to this much memory (2 x segment size x archive.wal.max_parallel); lower archive.wal.max_parallel if the manager's memory is limited"
            );
        }
        Ok(Arc::new(Archiver {
            uploads: Arc::new(Semaphore::new(settings.max_parallel)),
            wal,
            settings,
            pgdata: pgdata.to_path_buf(),
            metrics,
            tracking: Mutex::new(Tracking {
                status,
                ..Tracking::default()
            }),
            wake: Notify::new(),
            destination_check: tokio::sync::Mutex::new(()),
            prefetch,
            restore_only,
        }))
    }

    fn track<T>(&self, f: impl FnOnce(&mut Tracking) -> T) -> T {
        let mut guard = self.tracking.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn wal(&self) -> &WalArchive {
        &self.wal
    }

    pub fn settings(&self) -> &ArchiveSettings {
        &self.settings
    }

    /// The data directory whose `pg_wal` this archiver archives.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// WAL segment size of the cluster.
    pub fn segment_bytes(&self) -> u64 {
        self.prefetch.segment_bytes()
    }

    /// Current archiving status.
    pub fn status(&self) -> ArchiveStatus {
        self.track(|t| t.status.clone())
    }

    /// Serve the socket only (the archiver of [`Archiver::for_replay`]); aborting the task
    /// stops the server.
    pub fn serve_restores(self: &Arc<Self>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        server::spawn(self.clone())
    }

    /// WAL files this archiver restored for postgres (spooled or fetched directly).
    pub fn restored_count(&self) -> u64 {
        self.metrics.wal_restored.get()
    }

    /// Start the `.ready` scanner and the socket server.
    pub fn spawn(self: &Arc<Self>) -> anyhow::Result<()> {
        server::spawn(self.clone())?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.scan().await;
                this.wal.release_idle_buffers(RELEASE_BUFFERS_AFTER);
                let _ =
                    tokio::time::timeout(Duration::from_millis(250), this.wake.notified()).await;
            }
        });
        Ok(())
    }

    async fn ensure_destination(&self) -> Result<(), String> {
        if self.track(|t| t.destination_ok) {
            return Ok(());
        }
        // One check at a time: the first upload lists the destination and writes the marker,
        // the ones waiting behind it then find `destination_ok` set.
        let _checking = self.destination_check.lock().await;
        if self.track(|t| t.destination_ok) {
            return Ok(());
        }
        match destination::ensure_ready(&self.pgdata, &self.settings, &self.wal).await {
            Ok(()) => {
                self.track(|t| t.destination_ok = true);
                Ok(())
            }
            Err(e) => {
                self.track(|t| t.destination_refused = true);
                Err(format!("{e:#}"))
            }
        }
    }

    /// One pass over `archive_status`: start uploads for new `.ready` files, forget stored
    /// segments postgres has marked `.done`, refresh backlog and lag.
    async fn scan(self: &Arc<Self>) {
        let Ok(mut ready) = status::with_status(&self.pgdata, status::READY) else {
            return;
        };
        // History files first (a promotion needs them archived), then in WAL order.
        ready.sort_by_key(|(name, _)| (!name.ends_with(".history"), name.clone()));
        let names: HashSet<&str> = ready.iter().map(|(n, _)| n.as_str()).collect();
        let oldest = ready.iter().map(|(_, t)| *t).min();
        let now = Instant::now();
        let to_start: Vec<String> = self.track(|t| {
            t.stored.retain(|name| names.contains(name.as_str()));
            t.retry_after
                .retain(|name, _| names.contains(name.as_str()));
            t.status.ready_backlog = ready.len() as u64;
            t.status.lag_seconds = oldest
                .and_then(|o| o.elapsed().ok())
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let free = self.settings.max_parallel.saturating_sub(t.inflight.len());
            ready
                .iter()
                .map(|(n, _)| n)
                .filter(|n| {
                    !t.stored.contains(*n)
                        && !t.inflight.contains_key(*n)
                        && t.retry_after.get(*n).is_none_or(|at| *at <= now)
                })
                .take(free)
                .cloned()
                .collect()
        });
        self.metrics
            .wal_archive_ready_backlog
            .set(ready.len() as i64);
        self.metrics
            .wal_archive_lag_seconds
            .set(self.track(|t| t.status.lag_seconds));
        for name in to_start {
            let _ = self.start_upload(&name);
        }
    }

    /// Start uploading `name` unless it is already under way; returns a receiver of its result.
    fn start_upload(self: &Arc<Self>, name: &str) -> watch::Receiver<UploadResult> {
        let (tx, rx) = watch::channel(None);
        let existing = self.track(|t| {
            if let Some(rx) = t.inflight.get(name) {
                return Some(rx.clone());
            }
            t.inflight.insert(name.to_owned(), rx.clone());
            None
        });
        if let Some(rx) = existing {
            return rx;
        }
        let this = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let result = this.upload(&name).await;
            this.record(&name, &result);
            let _ = tx.send(Some(result));
            // A slot is free: start the next `.ready` segment now, not at the next tick.
            this.wake.notify_one();
        });
        rx
    }

    async fn upload(&self, name: &str) -> Result<(), String> {
        let file = WalFile::parse(name).map_err(|e| e.to_string())?;
        let on_standby = standby::is_standby(&self.pgdata);
        if on_standby {
            let grace = self.settings.standby_grace();
            let timeout = self.settings.timeout();
            if standby::left_to_primary(&self.wal, &self.pgdata, &file, grace, timeout).await? {
                return Ok(());
            }
        } else if self.track(|t| t.destination_refused) {
            // Until the destination was accepted once, check it first after a refusal (no
            // compressing segments that cannot be stored), else while the segment is
            // compressed.
            self.ensure_destination().await?;
        }
        let _permit = self.uploads.acquire().await.map_err(|e| e.to_string())?;
        let path = self.pgdata.join("pg_wal").join(name);
        let deadline = Instant::now() + self.settings.timeout();
        let started = Instant::now();
        // A standby archives into its primary's destination, which that primary accepted;
        // the first-archive rule is the primary's (and a standby restored from a backup has no
        // marker of its own).
        let allowed = async {
            if on_standby {
                Ok(())
            } else {
                self.ensure_destination().await
            }
        };
        match self.wal.archive_file(&file, &path, deadline, allowed).await {
            Ok(ArchiveOutcome::Stored {
                key,
                raw_bytes,
                stored_bytes,
            }) => {
                tracing::info!(
                    wal = name,
                    key,
                    raw_bytes,
                    stored_bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "WAL archived"
                );
                Ok(())
            }
            Ok(ArchiveOutcome::AlreadyArchived { key }) => {
                tracing::info!(
                    wal = name,
                    key,
                    "WAL already archived with identical content"
                );
                Ok(())
            }
            Err(e) => {
                if matches!(e, WalError::Conflict { .. }) {
                    self.metrics.wal_archive_conflicts.inc();
                }
                Err(e.to_string())
            }
        }
    }

    fn record(&self, name: &str, result: &Result<(), String>) {
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.track(|t| {
            t.inflight.remove(name);
            match result {
                Ok(()) => {
                    t.stored.insert(name.to_owned());
                    t.retry_after.remove(name);
                    t.status.archived_count += 1;
                    let is_segment = WalFile::parse(name)
                        .map(|f| f.kind() == WalKind::Segment)
                        .unwrap_or(false);
                    if is_segment
                        && t.status
                            .last_archived_wal
                            .as_deref()
                            .is_none_or(|last| last < name)
                    {
                        t.status.last_archived_wal = Some(name.to_owned());
                    }
                    t.status.last_archived_time = Some(now);
                }
                Err(e) => {
                    t.retry_after
                        .insert(name.to_owned(), Instant::now() + Duration::from_secs(2));
                    t.status.failed_count += 1;
                    t.status.last_failed_wal = Some(name.to_owned());
                    t.status.last_failure_time = Some(now);
                    t.status.last_failure = Some(e.clone());
                }
            }
        });
        match result {
            Ok(()) => {
                self.metrics.wal_archived.inc();
                self.metrics.wal_archive_last_success.set(epoch);
            }
            Err(e) => {
                self.metrics.wal_archive_failures.inc();
                self.metrics.wal_archive_last_failure.set(epoch);
                tracing::error!(wal = name, error = %e, "archiving WAL failed; postgres keeps the segment");
            }
        }
    }

    /// Archive `name` now (the `wal-archive` call): Ok once stored.
    pub async fn archive_now(self: &Arc<Self>, name: &str) -> Result<(), String> {
        WalFile::parse(name).map_err(|e| e.to_string())?;
        if self.track(|t| t.stored.contains(name)) {
            return Ok(());
        }
        let mut rx = self.start_upload(name);
        self.wake.notify_one();
        loop {
            if let Some(result) = rx.borrow().clone() {
                return result;
            }
            if rx.changed().await.is_err() {
                return Err("the upload task ended without a result".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_bound_follows_the_segment_size() {
        // The defaults: 4 transfers of 16 MiB segments.
        assert_eq!(transfer_buffers_bound(4, 16 << 20), 128 << 20);
        assert!(transfer_buffers_bound(4, 16 << 20) <= LARGE_BUFFERS);
        // 1 GiB segments: 8 GiB with the same setting (warned at start), 2 GiB with one transfer.
        assert_eq!(transfer_buffers_bound(4, 1 << 30), 8 << 30);
        assert_eq!(transfer_buffers_bound(1, 1 << 30), 2 << 30);
    }
}
