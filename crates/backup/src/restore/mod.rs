//! Restore of one base backup from the catalog into an empty directory, as barman-cloud-restore
//! lays it out: `data.tar[.gz]` (and its `data_NNNN` parts) into the destination, each
//! tablespace's `<oid>.tar[.gz]` into its location (or a relocation) with the
//! `pg_tblspc/<oid>` symlink, `backup_label` in place, an empty `pg_wal/archive_status`.
//! Tars are restored in parallel (each through the three-stage pipeline of [`pipeline`]) and
//! progress (bytes, rate) is logged every few seconds.
//!
//! - [`target`]: recovery targets and the parameters they become.
//! - [`choose`]: which backup a restore starts from.
//! - [`extract`]: safe tar extraction.

pub mod choose;
pub mod extract;
pub mod pipeline;
pub mod target;

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsteward_archive::store::StoreError;

use crate::catalog::Catalog;
use crate::info::{BackupInfo, InfoError};
use extract::{DeferredLink, ExtractError};
use pipeline::{PipelineError, Progress};

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Tars restored at once.
    pub parallel: usize,
    /// Tablespace name → new location (else the location recorded in the backup).
    pub tablespace_locations: BTreeMap<String, PathBuf>,
    /// How often progress is logged.
    pub progress_interval: Duration,
    /// File names tolerated in an otherwise empty data directory (a marker the caller wrote
    /// before restoring, so an interrupted restore is recognised).
    pub tolerated_in_destination: Vec<String>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            parallel: 4,
            tablespace_locations: BTreeMap::new(),
            progress_interval: Duration::from_secs(5),
            tolerated_in_destination: Vec::new(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreReport {
    pub backup_id: String,
    pub tars: usize,
    pub files: u64,
    pub bytes_downloaded: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("restore destination {0} exists and is not empty (restores only go into an empty or missing directory)")]
    DestinationNotEmpty(PathBuf),
    #[error("restore destination {path}: {error}")]
    Destination {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("backup {id}: {error}")]
    Info { id: String, error: InfoError },
    #[error("backup {id} has no {what} in the store")]
    MissingFile { id: String, what: String },
    #[error("backup file {key} uses an unsupported compression (only gzip and none are)")]
    UnsupportedCompression { key: String },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
}

/// One tar to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarJob {
    pub key: String,
    pub gzip: bool,
    pub dest: PathBuf,
}

fn destination_error(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |error| RestoreError::Destination {
        path: path.to_path_buf(),
        error,
    }
}

/// Make sure `dir` is absent or an empty directory (but for `tolerated` names), then create
/// it (mode 0700).
pub fn prepare_destination(dir: &Path, tolerated: &[String]) -> Result<(), RestoreError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let entries = std::fs::read_dir(dir).map_err(destination_error(dir))?;
            for entry in entries {
                let entry = entry.map_err(destination_error(dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !tolerated.contains(&name) {
                    return Err(RestoreError::DestinationNotEmpty(dir.to_path_buf()));
                }
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(destination_error(dir))
        }
        Ok(_) => Err(RestoreError::DestinationNotEmpty(dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(destination_error(dir)),
        Err(e) => Err(destination_error(dir)(e)),
    }
}

/// The backup's tars in the store, matched as barman-cloud-restore matches them: the main
/// file `<base>.tar[.gz]` and additional parts `<base>_<n>.tar[.gz]`.
pub async fn plan(
    catalog: &Catalog,
    backup: &BackupInfo,
    dest: &Path,
    options: &RestoreOptions,
) -> Result<(Vec<TarJob>, Vec<DeferredLink>), RestoreError> {
    let id = backup.backup_id();
    let prefix = catalog.backup_prefix(id);
    let objects = catalog.store().list(&prefix).await?;
    let tablespaces = backup.tablespaces().map_err(|error| RestoreError::Info {
        id: id.to_owned(),
        error,
    })?;
    let mut bases: Vec<(String, PathBuf)> = vec![("data".to_owned(), dest.to_path_buf())];
    let mut links = Vec::new();
    for tablespace in &tablespaces {
        let location = options
            .tablespace_locations
            .get(&tablespace.name)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(&tablespace.location));
        bases.push((tablespace.oid.to_string(), location.clone()));
        links.push(DeferredLink {
            path: PathBuf::from(format!("pg_tblspc/{}", tablespace.oid)),
            target: location,
        });
    }
    let mut jobs = Vec::new();
    for (base, target_dir) in &bases {
        let mut found_main = false;
        for object in &objects {
            let Some(name) = object.key.strip_prefix(&prefix) else {
                continue;
            };
            let Some(rest) = name.strip_prefix(base.as_str()) else {
                continue;
            };
            let (is_main, ext) = if let Some(ext) = rest.strip_prefix('.') {
                (true, ext)
            } else if let Some(part) = rest.strip_prefix('_') {
                match part.split_once('.') {
                    Some((n, ext)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                        (false, ext)
                    }
                    _ => continue,
                }
            } else {
                continue;
            };
            let gzip = match ext {
                "tar" => false,
                "tar.gz" => true,
                "tar.bz2" | "tar.snappy" | "tar.lz4" | "tar.xz" | "tar.zst" => {
                    return Err(RestoreError::UnsupportedCompression {
                        key: object.key.clone(),
                    })
                }
                _ => continue,
            };
            found_main |= is_main;
            jobs.push(TarJob {
                key: object.key.clone(),
                gzip,
                dest: target_dir.clone(),
            });
        }
        if !found_main {
            return Err(RestoreError::MissingFile {
                id: id.to_owned(),
                what: format!("{base}.tar or {base}.tar.gz"),
            });
        }
    }
    Ok((jobs, links))
}

/// Restore `backup` into `dest` (absent or empty; tablespace locations too).
pub async fn restore(
    catalog: &Catalog,
    backup: &BackupInfo,
    dest: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let id = backup.backup_id().to_owned();
    let (jobs, tablespace_links) = plan(catalog, backup, dest, options).await?;
    prepare_destination(dest, &options.tolerated_in_destination)?;
    for link in &tablespace_links {
        prepare_destination(&link.target, &[])?;
    }
    let size = backup.size().ok().flatten();
    tracing::info!(backup = %id, destination = %dest.display(), tars = jobs.len(), size_bytes = ?size, "restoring base backup");

    let progress = Arc::new(Progress::default());
    let ticker = {
        let progress = Arc::clone(&progress);
        let interval = options.progress_interval;
        let id = id.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let downloaded = progress.downloaded.load(Ordering::Relaxed);
                let written = progress.written.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    backup = %id,
                    downloaded_bytes = downloaded,
                    written_bytes = written,
                    download_rate_mb_s = format!("{:.1}", downloaded as f64 / secs / 1e6),
                    write_rate_mb_s = format!("{:.1}", written as f64 / secs / 1e6),
                    "restore progress"
                );
            }
        })
    };

    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for job in jobs.iter().cloned() {
        let store = Arc::clone(catalog.store());
        let progress = Arc::clone(&progress);
        let semaphore = Arc::clone(&semaphore);
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            tracing::debug!(key = %job.key, dest = %job.dest.display(), "restoring tar");
            pipeline::restore_tar(store, job.key, job.gzip, job.dest, progress).await
        });
    }
    let mut first_error = None;
    let mut links = Vec::new();
    let mut files = 0;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(extracted)) => {
                files += extracted.files;
                links.extend(extracted.links);
            }
            Ok(Err(e)) => {
                if first_error.is_none() {
                    tracing::error!(error = %e, "restoring a backup file failed");
                    first_error = Some(RestoreError::Pipeline(e));
                    set.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_error.get_or_insert(RestoreError::Pipeline(PipelineError::Stage {
                    key: "(task)".to_owned(),
                    detail: e.to_string(),
                }));
            }
        }
    }
    ticker.abort();
    if let Some(e) = first_error {
        return Err(e);
    }
    // Links from the tars first, then the tablespace links barman-cloud-restore creates.
    links.retain(|l| !tablespace_links.iter().any(|t| t.path == l.path));
    extract::create_links(dest, &links)?;
    extract::create_links(dest, &tablespace_links)?;
    if !tablespace_links.is_empty() {
        // The links just made are the truth: a tablespace_map would make postgres recreate
        // them at the backup's original locations.
        let map = dest.join("tablespace_map");
        match std::fs::remove_file(&map) {
            Ok(()) => tracing::info!(
                "tablespace_map removed: pg_tblspc links point at the restored tablespaces"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(destination_error(&map)(e)),
        }
    }
    finish_layout(dest, backup)?;

    let report = RestoreReport {
        backup_id: id,
        tars: jobs.len(),
        files,
        bytes_downloaded: progress.downloaded.load(Ordering::Relaxed),
        bytes_written: progress.written.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    let secs = report.elapsed.as_secs_f64().max(0.001);
    tracing::info!(
        backup = %report.backup_id,
        files = report.files,
        downloaded_bytes = report.bytes_downloaded,
        written_bytes = report.bytes_written,
        elapsed_ms = report.elapsed.as_millis() as u64,
        write_rate_mb_s = format!("{:.1}", report.bytes_written as f64 / secs / 1e6),
        "base backup restored"
    );
    Ok(report)
}

/// `pg_wal/archive_status` present (a symlinked pg_wal is never in the tar), `backup_label`
/// in place (barman-cloud puts it in the tar; written from `backup.info` when it is not).
fn finish_layout(dest: &Path, backup: &BackupInfo) -> Result<(), RestoreError> {
    let status = dest.join("pg_wal").join("archive_status");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&status)
        .map_err(destination_error(&status))?;
    let label = dest.join("backup_label");
    if !label.exists() {
        let text = backup
            .backup_label()
            .map_err(|error| RestoreError::Info {
                id: backup.backup_id().to_owned(),
                error,
            })?
            .ok_or_else(|| RestoreError::MissingFile {
                id: backup.backup_id().to_owned(),
                what: "backup_label (neither in data.tar nor in backup.info)".to_owned(),
            })?;
        std::fs::write(&label, text).map_err(destination_error(&label))?;
    }
    Ok(())
}
