//! `bootstrap.method: recovery`: the manager restores a base backup into its empty data
//! directory and replays archived WAL to the target on a private postgres before its normal
//! start, so the recovery parameters never outlive the bootstrap. A marker written before the
//! first byte is restored records the unfinished bootstrap (a failed or interrupted restore
//! or recovery leaves the directory refused until emptied).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{finish, replay_settings, restore_files, wait_recovered, PrivatePostgres};
use crate::archiver::settings::ArchiveSettings;
use crate::config::Config;
use crate::pgbin::PgBinaries;
use crate::supervisor::reaper::Reaper;
use pgsteward_backup::restore::RestoreOptions;

/// The archive settings of the recovery source: `bootstrap.recovery.source` over `archive`.
pub fn source_settings(config: &Config) -> Result<ArchiveSettings> {
    let source = &config.bootstrap.recovery.source;
    let mut with_source = config.clone();
    if let Some(destination) = &source.destination {
        with_source.archive.destination = Some(destination.clone());
    }
    if let Some(server) = &source.server_name {
        with_source.archive.server_name = Some(server.clone());
    }
    ArchiveSettings::from_config(&with_source)
        .context("bootstrap.recovery needs a source: set bootstrap.recovery.source.destination or archive.destination")
}

/// Restore and recover into `pgdata` (empty or missing).
pub async fn run(
    reaper: &Reaper,
    bins: &PgBinaries,
    config: &Config,
    pgdata: &Path,
    executable: &Path,
) -> Result<()> {
    let recovery = &config.bootstrap.recovery;
    let target = recovery
        .recovery_target()
        .map_err(|e| anyhow::anyhow!("bootstrap.recovery: {e}"))?;
    let choice = recovery
        .backup_choice()
        .map_err(|e| anyhow::anyhow!("bootstrap.recovery.source.backup: {e}"))?;
    let source = source_settings(config)?;
    // The marker goes in first: a restore interrupted at any point (even by SIGKILL) leaves
    // a directory the next start refuses instead of running postgres on half a backup.
    std::fs::write(
        pgdata.join(crate::bootstrap::MARKER),
        "recovery bootstrap started\n",
    )
    .context("writing the bootstrap marker")?;
    let options = RestoreOptions {
        parallel: recovery.parallel.max(1),
        tablespace_locations: recovery.tablespaces.clone(),
        tolerated_in_destination: vec![crate::bootstrap::MARKER.to_owned()],
        ..RestoreOptions::default()
    };
    let restored = restore_files(&source, &choice, &target, pgdata, &options, true).await?;
    let settings = replay_settings(executable, pgdata, &target, true);
    let replay_server = super::replay_server::ReplayServer::start(pgdata, &restored.backup).await;
    let mut pg = PrivatePostgres::spawn(
        reaper,
        bins,
        pgdata,
        "recovery",
        config.postgres.port,
        &config.postgres.superuser,
        &settings,
    )?;
    let recovered = wait_recovered(&mut pg, &target, recovery.timeout).await;
    let stopped = pg.stop(Duration::from_secs(120)).await;
    super::replay_server::ReplayServer::finish(replay_server);
    let recovered = recovered.context("replaying archived WAL")?;
    stopped.context("stopping the recovery postgres")?;
    finish(pgdata)?;
    if !recovered.promoted {
        // A standby that will stream once it has replayed the archive: its slot on the
        // upstream must exist (a clone creates it with pg_basebackup; a restore cannot).
        let state = crate::replication::role::load_or_init(pgdata)?;
        if let Some(upstream) = crate::replication::standby::upstream(config, &state) {
            crate::replication::rewind::ensure_slot(config, &upstream).await;
        }
    }
    std::fs::remove_file(pgdata.join(crate::bootstrap::MARKER))
        .context("removing the bootstrap marker")?;
    tracing::info!(
        backup = %restored.backup.backup_id(),
        promoted = recovered.promoted,
        lsn = %recovered.lsn,
        timeline = ?recovered.timeline,
        replay_ms = recovered.elapsed.as_millis() as u64,
        restore_ms = restored.report.elapsed.as_millis() as u64,
        "recovery bootstrap complete"
    );
    Ok(())
}
