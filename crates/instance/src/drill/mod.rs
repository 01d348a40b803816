//! Restore drills: prove the latest backup and the WAL archive restore. A drill restores the
//! newest DONE backup of the instance's own archive into a scratch directory, replays every
//! archived WAL file on a private postgres (no TCP, archiving off: a drill never writes to the
//! archive) until it promotes, runs checks (`pg_amcheck` when the binaries have it and the
//! amcheck extension is available, a query in every database), records duration, result and
//! recovered LSN, and always removes the scratch directory and stops its postgres.
//!
//! - [`schedule`]: the manager's periodic drills (`archive.drill.interval`) and their status.
//! - [`cmd`]: `pgsteward drill`.

pub mod cmd;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use pgsteward_backup::info::BackupInfo;
use pgsteward_backup::restore::choose::BackupChoice;
use pgsteward_backup::restore::target::{Lsn, RecoveryTarget};
use pgsteward_backup::restore::RestoreOptions;

use crate::archiver::settings::ArchiveSettings;
use crate::config::Config;
use crate::metrics::DrillMetrics;
use crate::pgbin::PgBinaries;
use crate::recovery::{self, PrivatePostgres};
use crate::supervisor::reaper::Reaper;

/// Default bound of one drill.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What one drill found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrillReport {
    #[serde(serialize_with = "rfc3339")]
    pub started: DateTime<Utc>,
    pub duration_seconds: f64,
    pub success: bool,
    pub error: Option<String>,
    pub backup_id: Option<String>,
    pub restored_bytes: u64,
    pub recovered_lsn: Option<String>,
    /// WAL replayed after the backup: from its start LSN to `recovered_lsn`.
    pub wal_replayed_bytes: u64,
    pub timeline: Option<u32>,
    pub databases_checked: u32,
    pub amcheck: bool,
    pub scratch_dir: PathBuf,
}

impl DrillReport {
    /// Record the report in metrics and in the status.
    pub fn record(&self, metrics: &DrillMetrics, status: &mut pgsteward_api::DrillStatus) {
        let now = self.started.timestamp() as f64 + self.duration_seconds;
        metrics.runs.inc();
        metrics.duration_seconds.set(self.duration_seconds);
        status.last_run_time = Some(self.started.to_rfc3339());
        status.last_duration_seconds = Some(self.duration_seconds);
        status.last_backup_id = self.backup_id.clone();
        status.databases_checked = self.databases_checked;
        status.amcheck = self.amcheck;
        if self.success {
            metrics.last_success.set(now);
            if let Some(lsn) = self
                .recovered_lsn
                .as_deref()
                .and_then(|l| l.parse::<Lsn>().ok())
            {
                metrics.recovered_lsn.set(lsn.0 as f64);
            }
            status.last_result = Some("success".to_owned());
            status.last_error = None;
            status.last_success_time = Some(
                (self.started
                    + chrono::Duration::milliseconds((self.duration_seconds * 1000.0) as i64))
                .to_rfc3339(),
            );
            status.recovered_lsn = self.recovered_lsn.clone();
            status.wal_replayed_bytes = Some(self.wal_replayed_bytes);
        } else {
            metrics.failures.inc();
            metrics.last_failure.set(now);
            status.last_result = Some("failure".to_owned());
            status.last_error = self.error.clone();
        }
    }
}

fn rfc3339<S: serde::Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time.to_rfc3339())
}

/// Removes the scratch directory however the drill ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => tracing::debug!(dir = %self.0.display(), "drill scratch directory removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(dir = %self.0.display(), error = %e, "removing the drill scratch directory failed")
            }
        }
    }
}

/// Run one drill for `config`'s archive; never fails, the report says how it went.
pub async fn run(
    reaper: &Reaper,
    bins: &PgBinaries,
    config: &Config,
    executable: &Path,
) -> DrillReport {
    let started = Utc::now();
    let clock = Instant::now();
    let drill = &config.archive.drill;
    let base = drill.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = recovery::scratch_dir(&base, "drill");
    let mut report = DrillReport {
        started,
        duration_seconds: 0.0,
        success: false,
        error: None,
        backup_id: None,
        restored_bytes: 0,
        recovered_lsn: None,
        wal_replayed_bytes: 0,
        timeline: None,
        databases_checked: 0,
        amcheck: false,
        scratch_dir: scratch.clone(),
    };
    tracing::info!(scratch = %scratch.display(), "restore drill started");
    let timeout = drill.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let result = {
        let _cleanup = Scratch(scratch.clone());
        match tokio::time::timeout(
            timeout,
            run_inner(reaper, bins, config, executable, &scratch, &mut report),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "the drill did not finish within {timeout:?}"
            )),
        }
    };
    report.duration_seconds = clock.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            report.success = true;
            tracing::info!(
                backup = ?report.backup_id,
                recovered_lsn = ?report.recovered_lsn,
                wal_replayed_bytes = report.wal_replayed_bytes,
                databases = report.databases_checked,
                amcheck = report.amcheck,
                duration_s = format!("{:.1}", report.duration_seconds),
                "restore drill succeeded"
            );
        }
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!(backup = ?report.backup_id, error = %message, duration_s = format!("{:.1}", report.duration_seconds), "restore drill failed");
            report.error = Some(message);
        }
    }
    report
}

async fn run_inner(
    reaper: &Reaper,
    bins: &PgBinaries,
    config: &Config,
    executable: &Path,
    scratch: &Path,
    report: &mut DrillReport,
) -> Result<()> {
    let source = ArchiveSettings::from_config(config)
        .context("a restore drill needs archive.destination (the archive it checks)")?;
    let target = RecoveryTarget::end_of_archive();
    let restored = recovery::restore_files(
        &source,
        &BackupChoice::Latest,
        &target,
        scratch,
        &RestoreOptions::default(),
        true,
    )
    .await?;
    report.backup_id = Some(restored.backup.backup_id().to_owned());
    report.restored_bytes = restored.report.bytes_written;
    let settings = recovery::replay_settings(executable, scratch, &target, false);
    let replay_server =
        recovery::replay_server::ReplayServer::start(scratch, &restored.backup).await;
    let mut pg = PrivatePostgres::spawn(
        reaper,
        bins,
        scratch,
        "drill",
        config.postgres.port,
        &config.postgres.superuser,
        &settings,
    )?;
    let checked = async {
        let recovered = recovery::wait_recovered(&mut pg, &target, Duration::MAX).await?;
        report.recovered_lsn = Some(recovered.lsn.clone());
        report.wal_replayed_bytes = replayed_bytes(&restored.backup, &recovered.lsn);
        report.timeline = recovered.timeline;
        check(reaper, bins, &pg, report).await
    }
    .await;
    let stopped = pg.stop(Duration::from_secs(60)).await;
    recovery::replay_server::ReplayServer::finish(replay_server);
    checked?;
    stopped.context("stopping the drill's postgres")
}

/// The WAL a replay from `backup`'s start to `recovered` covers (0 when either LSN is unknown).
fn replayed_bytes(backup: &BackupInfo, recovered: &str) -> u64 {
    let begin = backup.begin_lsn().and_then(|l| l.parse::<Lsn>().ok());
    match (begin, recovered.parse::<Lsn>().ok()) {
        (Some(begin), Some(end)) => end.0.saturating_sub(begin.0),
        _ => 0,
    }
}

/// The checks on the recovered copy.
async fn check(
    reaper: &Reaper,
    bins: &PgBinaries,
    pg: &PrivatePostgres,
    report: &mut DrillReport,
) -> Result<()> {
    let client = pg.connect("postgres", Duration::from_secs(10)).await?;
    let databases: Vec<String> = client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
            &[],
        )
        .await
        .context("listing databases")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for database in &databases {
        let db = pg
            .connect(database, Duration::from_secs(10))
            .await
            .with_context(|| format!("connecting to database {database}"))?;
        db.query_one(
            "SELECT count(*) FROM pg_class c LEFT JOIN pg_namespace n ON n.oid = c.relnamespace",
            &[],
        )
        .await
        .with_context(|| format!("querying database {database}"))?;
        report.databases_checked += 1;
    }
    let amcheck_bin = bins.bin("pg_amcheck");
    let available = client
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'",
            &[],
        )
        .await
        .context("looking for the amcheck extension")?
        .is_some();
    if amcheck_bin.is_file() && available {
        let target = pg.target();
        let mut command = std::process::Command::new(&amcheck_bin);
        command
            .arg("--all")
            .arg("--install-missing")
            .arg("--host")
            .arg(&target.socket_dir)
            .arg("--port")
            .arg(target.port.to_string())
            .arg("--username")
            .arg(&target.superuser)
            .arg("--no-password")
            .env("LC_ALL", "C");
        let (exit, stdout, stderr) = reaper
            .output(&mut command)
            .await
            .context("running pg_amcheck")?;
        if !exit.success() {
            let text = format!("{stdout}\n{stderr}");
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            bail!(
                "pg_amcheck found problems ({exit}): {}",
                lines[lines.len().saturating_sub(10)..].join(" | ")
            );
        }
        report.amcheck = true;
    } else {
        tracing::info!(
            pg_amcheck = amcheck_bin.is_file(),
            extension = available,
            "pg_amcheck not available: the drill only queries every database"
        );
    }
    Ok(())
}
