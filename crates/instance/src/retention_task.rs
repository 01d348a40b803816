//! The primary's scheduled retention: every `archive.retention_interval` (read afresh each
//! time, so a reload applies), when `archive.retention_policy` is set, postgres runs and is
//! not in recovery, the manager applies the policy to its archive's catalog with
//! barman-cloud-backup-delete's semantics, logs the summary and updates the retention
//! metrics. Scheduled by `primary_schedule`: runs never overlap; standbys never delete.

use std::sync::Arc;

use chrono::Utc;
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::retention::{run_retention, ApplyOptions, RetentionPolicy};

use crate::archiver::Archiver;
use crate::primary_schedule;
use crate::supervisor::shared::Shared;

/// Start the schedule (a no-op without an archive).
pub fn spawn(shared: Arc<Shared>) {
    primary_schedule::every(
        shared,
        |config| config.archive.retention_interval,
        |shared, archiver| async move { run_once(&shared, &archiver).await },
    );
}

async fn run_once(shared: &Shared, archiver: &Archiver) {
    let config = shared.config();
    let metrics = &shared.metrics.retention;
    let Some(text) = config.archive.retention_policy.as_deref() else {
        return;
    };
    let policy = match RetentionPolicy::parse(text) {
        Ok(policy) => policy,
        Err(e) => {
            metrics.errors.inc();
            tracing::error!(error = %e, "retention not applied");
            return;
        }
    };
    if let Err(skip) = primary_schedule::primary_now(shared).await {
        tracing::debug!(?skip, "retention skipped");
        return;
    }
    let catalog = Catalog::new(
        archiver.wal().store().clone(),
        &archiver.settings().server_name,
    );
    let started = std::time::Instant::now();
    match run_retention(
        &catalog,
        &policy,
        Utc::now(),
        config.archive.minimum_redundancy,
        ApplyOptions::default(),
    )
    .await
    {
        Ok((_, summary)) => {
            metrics
                .deleted_backups
                .inc_by(summary.deleted_backups.len() as u64);
            metrics.deleted_wal.inc_by(summary.wal_objects as u64);
            metrics
                .last_run
                .set(Utc::now().timestamp_millis() as f64 / 1000.0);
            tracing::info!(
                policy = %policy,
                deleted_backups = ?summary.deleted_backups,
                backup_objects = summary.backup_objects,
                wal_objects = summary.wal_objects,
                bytes = summary.bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "retention applied"
            );
        }
        Err(e) => {
            metrics.errors.inc();
            tracing::error!(policy = %policy, error = %e, "retention failed");
        }
    }
}
