//! Restore and point-in-time recovery on the instance side, shared by the `recovery`
//! bootstrap, `pgsteward restore` and restore drills:
//!
//! 1. [`restore_files`]: choose the backup (latest, by id, or for the target), check the
//!    target against it, restore it into the empty data directory (pgsteward-backup's
//!    pipeline), drop files of the source that must not carry over (archive settings and
//!    markers, signal files), write the archive settings `wal-restore` reads and the signal
//!    file.
//! 2. [`PrivatePostgres`] + [`wait_recovered`]: replay WAL on a private postgres with the
//!    recovery parameters as `-c` settings (so they never persist in the data directory) until
//!    it promotes (or, for a standby, is consistent/paused at the target); a postgres that
//!    exits because "recovery ended before configured recovery target was reached" becomes
//!    [`RecoverError::TargetNotReached`].

pub mod bootstrap;
pub mod private_pg;
pub mod replay_server;
pub mod route;
pub mod wal_path;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::BackupInfo;
use pgsteward_backup::restore::choose::{self, BackupChoice};
use pgsteward_backup::restore::target::{RecoveryTarget, Target, TargetAction};
use pgsteward_backup::restore::{self, RestoreOptions, RestoreReport};

use crate::archiver::settings::ArchiveSettings;
use crate::config::render::shell_quote;
pub use private_pg::PrivatePostgres;

/// Files of the source's data directory that must not carry over into a restored one.
const SOURCE_ONLY: &[&str] = &[
    crate::archiver::settings::FILE,
    "pgsteward.archive-initialized",
    "recovery.signal",
    "standby.signal",
    "postmaster.pid",
    "postmaster.opts",
    // The source's role, term, fence and synchronous settings belong to the source: the
    // restored instance starts from its signal file (a primary of term 1, or a standby).
    crate::replication::role::ROLE_FILE,
    crate::replication::demote::DEMOTE_FILE,
    crate::replication::fence::FENCE_FILE,
    crate::replication::synchronous::SYNC_FILE,
];

/// Why recovery failed, in the terms an operator acts on.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("recovery ended before the configured recovery target was reached: the archive holds no WAL up to the target ({target}); choose an earlier target or wait until that WAL is archived. postgres said: {detail}")]
    TargetNotReached { target: String, detail: String },
    #[error("postgres exited during recovery ({status}): {detail}")]
    Exited { status: String, detail: String },
    #[error("recovery did not finish within {0:?}")]
    Timeout(Duration),
}

/// Where recovery ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// Promoted (read-write) or still a standby.
    pub promoted: bool,
    /// `pg_current_wal_lsn()` after promotion, `pg_last_wal_replay_lsn()` on a standby.
    pub lsn: String,
    pub timeline: Option<u32>,
    pub elapsed: Duration,
}

/// What [`restore_files`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub backup: BackupInfo,
    pub report: RestoreReport,
}

/// Open the catalog a source names.
pub async fn open_catalog(source: &ArchiveSettings) -> Result<Catalog> {
    let store = pgsteward_archive::open(&source.destination, &source.store_options())
        .await
        .with_context(|| format!("opening the backup source {}", source.destination))?;
    Ok(Catalog::new(Arc::clone(&store), &source.server_name))
}

/// Step 1: choose, check and restore the backup into `pgdata`, then prepare the directory
/// for WAL replay from `source` (signal file, archive settings whose socket the caller serves
/// with a `replay_server::ReplayServer` during the replay). With `replay`, the archive must
/// hold the backup's own WAL, and with the end of the archive as the target all WAL after it
/// without a gap (`wal_path::check`); nothing is written otherwise.
pub async fn restore_files(
    source: &ArchiveSettings,
    choice: &BackupChoice,
    target: &RecoveryTarget,
    pgdata: &Path,
    options: &RestoreOptions,
    replay: bool,
) -> Result<Restored> {
    let catalog = open_catalog(source).await?;
    let candidates = choose::choose(&catalog, choice, target).await?;
    // On the catalog's store client: no second client (TLS set-up, credentials) for it.
    let wal = source.wal_archive_on(Arc::clone(catalog.store()));
    // The newest suitable backup; when replaying, the newest that can reach the target's
    // timeline (not one an old primary took after a failover forked the timeline off its own).
    let newest_on_history = if replay && candidates.len() > 1 {
        wal_path::first_on_history(&wal, &candidates, target.timeline, source.timeout()).await?
    } else {
        None
    };
    let Some(backup) = newest_on_history.or_else(|| candidates.into_iter().next()) else {
        bail!("no backup to restore");
    };
    target
        .check_against(&backup)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if replay {
        let to_end = target.target == Target::EndOfArchive;
        wal_path::check(&wal, &backup, source.timeout(), to_end, target.timeline).await?;
    }
    tracing::info!(backup = %backup.backup_id(), source = %catalog.store().describe(), server = %source.server_name, target = %target.target, "backup chosen for restore");
    let report = restore::restore(&catalog, &backup, pgdata, options).await?;
    for name in SOURCE_ONLY {
        let path = pgdata.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(file = %path.display(), "removed a file of the source"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    let mut replay = source.clone();
    // Served by `replay_server::ReplayServer` while the replay runs; with nothing listening,
    // `wal-restore` reads the store itself.
    replay.socket = pgdata.join(".s.PGSTEWARD.replay");
    ArchiveSettings::write(pgdata, Some(&replay))?;
    std::fs::write(pgdata.join(target.signal_file()), "")
        .with_context(|| format!("writing {}", target.signal_file()))?;
    Ok(Restored { backup, report })
}

/// The settings of the private replay: restore_command through `wal-restore
/// --abort-on-error` (an error fetching a file fails the recovery; postgres would take a plain
/// failure for the end of the archive and end the recovery early, losing what follows) and the
/// target's parameters. With `mark_ready` (a restore that lives on, not a drill), archiving is
/// on without a command, so the files promotion creates (the new timeline's history file,
/// the old timeline's `.partial` segment) get `.ready` status and the manager's archiver
/// uploads them once it runs; nothing is archived by the private postgres itself.
pub fn replay_settings(
    executable: &Path,
    pgdata: &Path,
    target: &RecoveryTarget,
    mark_ready: bool,
) -> Vec<(&'static str, String)> {
    let mut settings = Vec::new();
    if mark_ready {
        settings.push(("archive_mode", "on".to_owned()));
        settings.push(("archive_command", String::new()));
    }
    settings.push((
        "restore_command",
        format!(
            "{} wal-restore --abort-on-error --pgdata {} %f %p",
            shell_quote(&executable.to_string_lossy()),
            shell_quote(&pgdata.to_string_lossy())
        ),
    ));
    settings.extend(target.parameters());
    settings
}

/// Step 2: wait until the private postgres finished recovery as `target` asks.
pub async fn wait_recovered(
    pg: &mut PrivatePostgres,
    target: &RecoveryTarget,
    timeout: Duration,
) -> Result<Recovered, RecoverError> {
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut client = None;
    loop {
        if let Some(status) = pg.exited() {
            let log = pg.log();
            if let Some(line) = log.lines().find(|l| {
                l.contains("recovery ended before configured recovery target was reached")
            }) {
                return Err(RecoverError::TargetNotReached {
                    target: target.target.to_string(),
                    detail: line.trim().to_owned(),
                });
            }
            return Err(RecoverError::Exited {
                status: status.to_string(),
                detail: pg.log_tail(8),
            });
        }
        if started.elapsed() > timeout {
            return Err(RecoverError::Timeout(timeout));
        }
        if client.is_none() {
            client = pg.connect("postgres", Duration::from_secs(2)).await.ok();
        }
        if let Some(c) = &client {
            match poll(c, target).await {
                Ok(Some(mut recovered)) => {
                    recovered.elapsed = started.elapsed();
                    return Ok(recovered);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "polling the private postgres");
                    client = None;
                }
            }
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            last_progress = Instant::now();
            let replayed = match &client {
                Some(c) => c
                    .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
                    .await
                    .ok()
                    .and_then(|r| r.get::<_, Option<String>>(0)),
                None => None,
            };
            tracing::info!(elapsed_s = started.elapsed().as_secs(), replayed_lsn = ?replayed, "WAL replay in progress");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One look at the private postgres: Some when recovery is over for `target`.
async fn poll(
    client: &tokio_postgres::Client,
    target: &RecoveryTarget,
) -> Result<Option<Recovered>> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
             CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text \
                  ELSE pg_current_wal_lsn()::text END, \
             CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END",
            &[],
        )
        .await?;
    let in_recovery: bool = row.get(0);
    let lsn: Option<String> = row.get(1);
    let pause: String = row.get(2);
    let done = match target.action {
        TargetAction::Promote => !in_recovery,
        // A standby is done once consistent (it accepts connections) and, with a target,
        // paused there.
        TargetAction::Standby => {
            in_recovery && (target.target == Target::EndOfArchive || pause == "paused")
        }
    };
    if !done {
        return Ok(None);
    }
    let facts = crate::pgconn::facts(client).await?;
    Ok(Some(Recovered {
        promoted: !in_recovery,
        lsn: lsn.unwrap_or_default(),
        timeline: facts.timeline,
        elapsed: Duration::ZERO,
    }))
}

/// Remove the replay's archive settings (the manager writes its own on start).
pub fn finish(pgdata: &Path) -> Result<()> {
    ArchiveSettings::write(pgdata, None)
}

/// A unique scratch directory below `base` for a restore that is thrown away.
pub fn scratch_dir(base: &Path, label: &str) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    base.join(format!("pgsteward-{label}-{stamp}-{}", std::process::id()))
}
