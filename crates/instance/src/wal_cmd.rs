//! The WAL commands: `wal-archive %p` (postgres's archive_command), `wal-restore %f %p`
//! (restore_command), and `wal list` for operators. The first two ask the manager over
//! its socket and do the work themselves when no manager answers; their inputs are checked
//! before anything touches storage: a WAL file name, and paths inside the data directory.
//! `wal check` is in `wal_check_cmd`, which shares `operator_target`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use pgsteward_archive::{ArchiveOutcome, RestoreOutcome, WalArchive, WalFile};
use tokio::time::Instant;

use crate::archiver::protocol::{self, CallError, Request};
use crate::archiver::settings::ArchiveSettings;
use crate::archiver::{destination, paths, standby};

fn block_on<F: std::future::Future<Output = i32>>(future: F) -> i32 {
    crate::cli::block_on("wal", crate::cli::CommandRuntime::CurrentThread, future)
}

/// `pgsteward wal-archive --pgdata DIR PATH`.
pub fn archive(pgdata: &Path, path: &Path) -> i32 {
    block_on(async {
        match archive_inner(pgdata, path).await {
            Ok(detail) => {
                eprintln!("pgsteward wal-archive: {detail}");
                0
            }
            Err(e) => {
                eprintln!("pgsteward wal-archive: ERROR: {e:#}");
                1
            }
        }
    })
}

async fn archive_inner(pgdata: &Path, path: &Path) -> Result<String> {
    let settings = ArchiveSettings::read(pgdata)?;
    let (resolved, file) = paths::wal_file(pgdata, path)?;
    let name = file.name().to_owned();
    let meta = std::fs::metadata(&resolved)
        .with_context(|| format!("{} cannot be read", resolved.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", resolved.display());
    }
    match protocol::call(
        &settings.socket,
        &Request::Archive {
            name: name.clone(),
            pgdata: Some(pgdata.to_path_buf()),
        },
        settings.timeout(),
    )
    .await
    {
        Ok(response) if response.ok => return Ok(response.detail),
        Ok(response) => bail!("{}", response.detail),
        Err(CallError::NoManager(_)) => {}
        Err(e) => eprintln!("pgsteward wal-archive: {e}; archiving directly"),
    }
    let wal = settings.open_for_archiving(pgdata).await?;
    if standby::is_standby(pgdata) {
        // No grace here (the manager that would wait it out is not answering): a segment the
        // primary stored is done, one it did not is uploaded now, into the primary's accepted
        // destination.
        if standby::left_to_primary(&wal, pgdata, &file, Duration::ZERO, settings.timeout())
            .await
            .map_err(anyhow::Error::msg)?
        {
            return Ok(format!(
                "{name} is already archived (no manager answered; standby)"
            ));
        }
    } else {
        destination::ensure_ready(pgdata, &settings, &wal).await?;
    }
    let content = tokio::fs::read(&resolved)
        .await
        .with_context(|| format!("reading {}", resolved.display()))?;
    let deadline = Instant::now() + settings.timeout();
    match wal.archive(&file, Bytes::from(content), deadline).await? {
        ArchiveOutcome::Stored { key, .. } => {
            Ok(format!("{name} archived to {key} (no manager answered)"))
        }
        ArchiveOutcome::AlreadyArchived { key } => {
            Ok(format!("{name} was already archived at {key}"))
        }
    }
}

/// Exit status of `wal-restore --abort-on-error` on an error: above 125, which postgres's
/// startup process treats as fatal (as it does a shell's "command not found"), and no code a
/// shell gives a meaning to, so postgres's log says "exited with exit code 199".
pub const ABORT_RECOVERY_EXIT: i32 = 199;

/// `pgsteward wal-restore --pgdata DIR NAME PATH`: exit 0 when restored, 1 when not found or
/// on error (postgres then tries streaming or retries); with `abort_on_error`, an error exits
/// `ABORT_RECOVERY_EXIT` so an archive recovery fails instead of ending early.
pub fn restore(pgdata: &Path, name: &str, dest: &Path, abort_on_error: bool) -> i32 {
    block_on(async {
        match restore_inner(pgdata, name, dest).await {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) if abort_on_error => {
                eprintln!("pgsteward wal-restore: ERROR: {e:#}; stopping the recovery (it must not end before the archive does)");
                ABORT_RECOVERY_EXIT
            }
            Err(e) => {
                eprintln!("pgsteward wal-restore: ERROR: {e:#}");
                1
            }
        }
    })
}

async fn restore_inner(pgdata: &Path, name: &str, dest: &Path) -> Result<bool> {
    let settings = ArchiveSettings::read(pgdata)?;
    let file = WalFile::parse(name)?;
    let dest = paths::restore_destination(pgdata, dest)?;
    let request = Request::Restore {
        name: name.to_owned(),
        dest: dest.clone(),
        pgdata: Some(pgdata.to_path_buf()),
    };
    match protocol::call(&settings.socket, &request, settings.timeout()).await {
        Ok(response) if response.ok => return Ok(response.found),
        Ok(response) => bail!("{}", response.detail),
        Err(CallError::NoManager(_)) => {}
        Err(e) => eprintln!("pgsteward wal-restore: {e}; fetching directly"),
    }
    let wal = settings.open().await?;
    let deadline = Instant::now() + settings.timeout();
    Ok(matches!(
        wal.restore_to(&file, &dest, deadline).await?,
        RestoreOutcome::Restored { .. }
    ))
}

/// Settings from `--pgdata` or from `--config`.
pub(crate) fn operator_settings(
    pgdata: Option<&Path>,
    config: Option<&Path>,
) -> Result<ArchiveSettings> {
    operator_target(pgdata, config).map(|(settings, _)| settings)
}

/// The archive settings an operator command works on (those `--pgdata` holds, or those
/// `--config` resolves), and the data directory it names (`--pgdata`, or the configuration's
/// `pgdata`).
pub(crate) fn operator_target(
    pgdata: Option<&Path>,
    config: Option<&Path>,
) -> Result<(ArchiveSettings, Option<PathBuf>)> {
    match (pgdata, config) {
        (Some(pgdata), _) => Ok((ArchiveSettings::read(pgdata)?, Some(pgdata.to_path_buf()))),
        (None, Some(file)) => {
            let sources =
                crate::config::ConfigSources::from_process(Some(file.to_path_buf()), Vec::new());
            let config = crate::config::load(&sources)?;
            let settings = ArchiveSettings::from_config(&config)
                .context("archive.destination is not set in the configuration")?;
            Ok((settings, config.pgdata))
        }
        (None, None) => bail!("give --pgdata DIR or --config FILE"),
    }
}

async fn open_for_operator(pgdata: Option<&Path>, config: Option<&Path>) -> Result<WalArchive> {
    operator_settings(pgdata, config)?.open().await
}

/// `pgsteward wal list`.
pub fn list(pgdata: Option<&Path>, config: Option<&Path>) -> i32 {
    block_on(async {
        let result = async {
            let wal = open_for_operator(pgdata, config).await?;
            let files = wal.list(Instant::now() + Duration::from_secs(300)).await?;
            use std::io::Write;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            // A closed pipe (`| head`) ends the listing quietly.
            let _ = writeln!(out, "{} ({} files)", wal.store().describe(), files.len());
            for (file, object) in &files {
                if writeln!(out, "{}\t{}\t{}", file.name(), object.size, object.key).is_err() {
                    break;
                }
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pgsteward wal list: ERROR: {e:#}");
                1
            }
        }
    })
}
