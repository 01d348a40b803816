//! Taking a base backup into the barman-cloud catalog: `backup.info` with status STARTED as
//! soon as `pg_backup_start` returned, each tablespace as `<oid>.tar.gz`, the data directory as
//! `data.tar.gz` (global/pg_control last, then the `backup_label` `pg_backup_stop` returned, as
//! barman-cloud-backup writes it), every archive streamed tar → parallel gzip → multipart
//! upload with bounded memory, then the manifest and `backup.info` DONE. Any failure aborts
//! the uploads, ends the backup mode (by closing the session) and records status FAILED with
//! `error=`; a catalog entry never says DONE unless every object was completed.

pub mod progress;
pub mod scan;
pub mod session;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgsteward_archive::layout::Compression;
use pgsteward_archive::store::{MultipartOptions, ObjectStore, StoreError};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::catalog::Catalog;
use crate::info::{self, BackupInfo, BackupStatus};
use crate::manifest::{Manifest, ManifestArchive, MANIFEST_FORMAT};
use crate::pyliteral::TablespaceTuple;
pub use progress::{Phase, Progress, ProgressSnapshot};
use scan::Item;
use stream::{Extra, StreamSettings};

/// Why a backup failed.
#[derive(Debug, Error)]
pub enum TakeError {
    #[error("postgres: {0}")]
    Postgres(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the data directory: {0}")]
    Io(String),
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("a backup with id {0} already exists")]
    Exists(String),
}

/// How to take a backup.
#[derive(Debug, Clone)]
pub struct TakeOptions {
    /// barman's server name (the catalog's first path component).
    pub server: String,
    /// The data directory as this process sees it.
    pub pgdata: PathBuf,
    pub gzip_level: u32,
    pub compressors: usize,
    pub readers: usize,
    /// `pg_backup_start(fast => true)`: an immediate checkpoint.
    pub fast_checkpoint: bool,
    pub multipart: MultipartOptions,
    /// How long to keep trying to record FAILED when the store is down.
    pub record_failure_for: Duration,
    /// The backup id to use (default: the start time, `YYYYmmddTHHMMSS` UTC).
    pub backup_id: Option<String>,
}

impl TakeOptions {
    pub fn new(server: &str, pgdata: &Path) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        TakeOptions {
            server: server.to_owned(),
            pgdata: pgdata.to_path_buf(),
            gzip_level: 6,
            compressors: cores,
            readers: 2,
            fast_checkpoint: false,
            multipart: MultipartOptions::default(),
            record_failure_for: Duration::from_secs(60),
            backup_id: None,
        }
    }
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct TakeOutcome {
    pub backup_id: String,
    pub info: BackupInfo,
    pub manifest: Manifest,
    pub duration: Duration,
}

/// One archive being produced and uploaded.
struct ArchiveJob {
    name: String,
    key: String,
    oid: Option<u64>,
    items: Vec<Item>,
}

/// Stream `job` into the store; `items_done`/`extra` as for [`stream::write_archive`].
async fn upload_archive(
    store: Arc<dyn ObjectStore>,
    job: ArchiveJob,
    settings: StreamSettings,
    multipart: MultipartOptions,
    progress: Arc<Progress>,
    items_done: Option<tokio::sync::oneshot::Sender<()>>,
    extra: Option<std::sync::mpsc::Receiver<Extra>>,
) -> Result<ManifestArchive, TakeError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let items = job.items;
    let writer_progress = Arc::clone(&progress);
    let writer = tokio::task::spawn_blocking(move || {
        let sink: crate::gzip::Sink = Box::new(move |chunk| {
            tx.blocking_send(chunk).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")
            })
        });
        stream::write_archive(
            &items,
            settings,
            sink,
            &writer_progress.bytes_done,
            items_done,
            extra,
        )
    });
    let mut upload = match store.put_multipart(&job.key, multipart).await {
        Ok(upload) => upload,
        Err(e) => {
            drop(rx);
            let _ = writer.await;
            return Err(e.into());
        }
    };
    let mut hasher = Sha256::new();
    let mut upload_error = None;
    while let Some(chunk) = rx.recv().await {
        hasher.update(&chunk);
        let len = chunk.len() as u64;
        if let Err(e) = upload.write(chunk).await {
            upload_error = Some(e);
            break;
        }
        progress.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
    }
    drop(rx);
    let written = writer.await;
    if let Some(e) = upload_error {
        if let Err(abort) = upload.abort().await {
            tracing::warn!(key = %job.key, error = %abort, "aborting the upload failed");
        }
        return Err(e.into());
    }
    let result = match written {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => {
            let _ = upload.abort().await;
            return Err(TakeError::Io(e.to_string()));
        }
        Err(e) => {
            let _ = upload.abort().await;
            return Err(TakeError::Io(format!("archive writer failed: {e}")));
        }
    };
    let meta = upload.complete().await?;
    tracing::info!(object = %job.key, uncompressed = result.totals.uncompressed, compressed = meta.size, "archive uploaded");
    Ok(ManifestArchive {
        name: job.name,
        tablespace_oid: job.oid,
        compressed_size: meta.size,
        compressed_sha256: hex::encode(hasher.finalize()),
        uncompressed_size: result.totals.uncompressed,
        files: result.files,
    })
}

/// Log the progress every 10 seconds (aborted when the backup ends).
async fn log_progress(progress: Arc<Progress>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let p = progress.snapshot();
        tracing::info!(
            backup_id = p.backup_id.as_deref().unwrap_or(""),
            phase = ?p.phase,
            bytes_done = p.bytes_done,
            bytes_total = p.bytes_total,
            bytes_uploaded = p.bytes_uploaded,
            rate_mib_per_second = p.rate_bytes_per_second / 1048576.0,
            "base backup progress"
        );
    }
}

/// Record FAILED with the error, retrying while the store is unreachable.
async fn record_failure(
    catalog: &Catalog,
    info: &mut BackupInfo,
    error: &str,
    for_how_long: Duration,
) {
    info.set_status(BackupStatus::Failed);
    let one_line: String = error.replace(['\n', '\r'], " ");
    if let Err(e) = info.set("error", one_line) {
        tracing::warn!(error = %e, "cannot record the error text in backup.info");
    }
    let deadline = tokio::time::Instant::now() + for_how_long;
    let mut delay = Duration::from_millis(200);
    loop {
        match catalog.write(info).await {
            Ok(()) => {
                tracing::info!(backup_id = info.backup_id(), "backup recorded as FAILED");
                return;
            }
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(backup_id = info.backup_id(), error = %e, "recording the failed backup: retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(backup_id = info.backup_id(), error = %e, "could not record the failed backup; its backup.info still says STARTED");
                return;
            }
        }
    }
}

/// Take one base backup of the postgres reachable through `pg` into `store`.
pub async fn take_backup(
    store: Arc<dyn ObjectStore>,
    pg: &tokio_postgres::Config,
    options: &TakeOptions,
    progress: Arc<Progress>,
) -> Result<TakeOutcome, TakeError> {
    let begun = Instant::now();
    progress.set_phase(Phase::Starting);
    let catalog = Catalog::new(Arc::clone(&store), &options.server);
    let client = session::connect(pg).await?;
    let facts = session::facts(&client).await?;
    if facts.version_num < 150000 {
        return Err(TakeError::Postgres(format!(
            "server version {} is not supported (PostgreSQL 15 or later)",
            facts.version_num
        )));
    }
    let id = options
        .backup_id
        .clone()
        .unwrap_or_else(|| info::backup_id_for(&chrono::Utc::now()));
    crate::catalog::check_backup_id(&id).map_err(|e| TakeError::Catalog(e.to_string()))?;
    if catalog
        .read(&id)
        .await
        .map_err(|e| TakeError::Catalog(e.to_string()))?
        .is_some()
    {
        return Err(TakeError::Exists(id));
    }
    progress.set_id(&id);
    let started = session::start(
        &client,
        &format!("pgsteward backup {id}"),
        options.fast_checkpoint,
    )
    .await?;
    let mut info = BackupInfo::new(&id);
    let set = |info: &mut BackupInfo, key: &str, value: String| {
        info.set(key, value)
            .map_err(|e| TakeError::Catalog(e.to_string()))
    };
    let begin_lsn = session::returned_lsn("pg_backup_start", &started.lsn)?;
    set(&mut info, "server_name", options.server.clone())?;
    set(&mut info, "mode", "concurrent".into())?;
    set(&mut info, "compression", "gzip".into())?;
    set(&mut info, "version", facts.version_num.to_string())?;
    set(&mut info, "systemid", facts.systemid.clone())?;
    set(&mut info, "pgdata", facts.data_directory.clone())?;
    set(&mut info, "config_file", facts.config_file.clone())?;
    set(&mut info, "hba_file", facts.hba_file.clone())?;
    set(&mut info, "ident_file", facts.ident_file.clone())?;
    set(
        &mut info,
        "data_checksums",
        if facts.data_checksums { "on" } else { "off" }.into(),
    )?;
    set(
        &mut info,
        "xlog_segment_size",
        facts.segment_size.to_string(),
    )?;
    set(&mut info, "timeline", started.timeline.to_string())?;
    set(&mut info, "begin_xlog", started.lsn.clone())?;
    set(
        &mut info,
        "begin_offset",
        (begin_lsn % facts.segment_size.max(1)).to_string(),
    )?;
    set(
        &mut info,
        "begin_wal",
        session::wal_name(started.timeline, begin_lsn, facts.segment_size, false)?,
    )?;
    info.set_time("begin_time", &started.time)
        .map_err(|e| TakeError::Catalog(e.to_string()))?;
    info.set_status(BackupStatus::Started);
    if let Err(e) = catalog.write(&info).await {
        tracing::error!(backup_id = %id, error = %e, "cannot record the backup as STARTED");
        return Err(TakeError::Catalog(e.to_string()));
    }
    tracing::info!(backup_id = %id, begin_lsn = %started.lsn, timeline = started.timeline, standby = facts.in_recovery, "base backup started");
    let logger = tokio::spawn(log_progress(Arc::clone(&progress)));
    let copied = copy_and_stop(
        &store, &catalog, &client, &facts, &started, &mut info, options, &progress,
    )
    .await;
    logger.abort();
    match copied {
        Ok(manifest) => {
            progress.set_phase(Phase::Done);
            let duration = begun.elapsed();
            tracing::info!(backup_id = %id, seconds = duration.as_secs_f64(), "base backup done");
            Ok(TakeOutcome {
                backup_id: id,
                info,
                manifest,
                duration,
            })
        }
        Err(e) => {
            progress.set_phase(Phase::Failed);
            tracing::error!(backup_id = %id, error = %e, "base backup failed");
            // Closing the session ends the backup mode on the server.
            drop(client);
            record_failure(
                &catalog,
                &mut info,
                &e.to_string(),
                options.record_failure_for,
            )
            .await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn copy_and_stop(
    store: &Arc<dyn ObjectStore>,
    catalog: &Catalog,
    client: &tokio_postgres::Client,
    facts: &session::ServerFacts,
    started: &session::Started,
    info: &mut BackupInfo,
    options: &TakeOptions,
    progress: &Arc<Progress>,
) -> Result<Manifest, TakeError> {
    let id = info.backup_id().to_owned();
    let pgdata = options.pgdata.clone();
    let major = facts.version_num / 10000;
    let scanned = tokio::task::spawn_blocking(move || {
        let (items, tablespaces) = scan::scan_pgdata(&pgdata)?;
        let mut spaces = Vec::new();
        for ts in tablespaces {
            let ts_items = scan::scan_tablespace(&ts.location, major)?;
            spaces.push((ts, ts_items));
        }
        Ok::<_, std::io::Error>((items, spaces))
    })
    .await
    .map_err(|e| TakeError::Io(format!("scan failed: {e}")))?
    .map_err(|e| TakeError::Io(e.to_string()))?;
    let (items, spaces) = scanned;
    let total: u64 = items.iter().map(Item::size).sum::<u64>()
        + spaces
            .iter()
            .flat_map(|(_, i)| i.iter())
            .map(Item::size)
            .sum::<u64>();
    progress.bytes_total.store(total, Ordering::Relaxed);
    progress.set_phase(Phase::Copying);
    let settings = StreamSettings {
        gzip_level: options.gzip_level,
        compressors: options.compressors,
        readers: options.readers,
    };
    let names = session::tablespace_names(client).await?;
    let mut archives = Vec::new();
    let mut tuples = Vec::new();
    for (ts, ts_items) in spaces {
        let name = names
            .iter()
            .find(|(oid, _)| *oid == ts.oid)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| ts.oid.to_string());
        tuples.push(TablespaceTuple {
            name,
            oid: ts.oid,
            location: ts.location.to_string_lossy().into_owned(),
        });
        let job = ArchiveJob {
            name: format!("{}.tar.gz", ts.oid),
            key: catalog.tablespace_key(&id, ts.oid, Compression::Gzip),
            oid: Some(ts.oid),
            items: ts_items,
        };
        archives.push(
            upload_archive(
                Arc::clone(store),
                job,
                settings,
                options.multipart,
                Arc::clone(progress),
                None,
                None,
            )
            .await?,
        );
    }
    info.set_tablespaces(&tuples);
    // The data directory: pg_backup_stop once every file is read, then backup_label.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (extra_tx, extra_rx) = std::sync::mpsc::channel::<Extra>();
    let job = ArchiveJob {
        name: "data.tar.gz".into(),
        key: catalog.data_key(&id, Compression::Gzip),
        oid: None,
        items,
    };
    let data = tokio::spawn(upload_archive(
        Arc::clone(store),
        job,
        settings,
        options.multipart,
        Arc::clone(progress),
        Some(done_tx),
        Some(extra_rx),
    ));
    let stopped = match done_rx.await {
        Ok(()) => {
            progress.set_phase(Phase::Stopping);
            match session::stop(client).await {
                Ok(stopped) => stopped,
                Err(e) => {
                    let _ = extra_tx.send(None);
                    let _ = data.await;
                    return Err(e);
                }
            }
        }
        Err(_) => {
            // The writer ended early: its error is the backup's.
            return Err(match data.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => TakeError::Io("the data archive ended before backup_label".into()),
                Err(e) => TakeError::Io(format!("data archive task failed: {e}")),
            });
        }
    };
    let _ = extra_tx.send(Some(vec![(
        "backup_label".to_owned(),
        stopped.label.clone().into_bytes(),
    )]));
    let data_archive = data
        .await
        .map_err(|e| TakeError::Io(format!("data archive task failed: {e}")))??;
    archives.push(data_archive);
    progress.set_phase(Phase::Finishing);
    let end_lsn = session::returned_lsn("pg_backup_stop", &stopped.lsn)?;
    let set = |info: &mut BackupInfo, key: &str, value: String| {
        info.set(key, value)
            .map_err(|e| TakeError::Catalog(e.to_string()))
    };
    set(info, "end_xlog", stopped.lsn.clone())?;
    set(
        info,
        "end_offset",
        (end_lsn % facts.segment_size.max(1)).to_string(),
    )?;
    set(
        info,
        "end_wal",
        session::wal_name(started.timeline, end_lsn, facts.segment_size, true)?,
    )?;
    info.set_time("end_time", &stopped.time)
        .map_err(|e| TakeError::Catalog(e.to_string()))?;
    info.set_backup_label(&stopped.label);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        backup_id: id.clone(),
        archives,
    };
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| TakeError::Catalog(e.to_string()))?;
    store
        .put(&Manifest::key(catalog, &id), manifest_json.into())
        .await?;
    info.set_status(BackupStatus::Done);
    catalog
        .write(info)
        .await
        .map_err(|e| TakeError::Catalog(e.to_string()))?;
    Ok(manifest)
}
