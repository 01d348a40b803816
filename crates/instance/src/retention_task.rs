//! The primary's scheduled retention: every `archive.retention_interval` (read afresh each
//! time, so a reload applies), when `archive.retention_policy` is set, postgres runs and is
//! not in recovery, the manager applies the policy to its archive's catalog with
//! barman-cloud-backup-delete's semantics, logs the summary and updates the retention
//! metrics. One task per manager, so runs never overlap; standbys never delete.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pgsteward_api::InstanceState;
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::retention::{run_retention, ApplyOptions, RetentionPolicy};

use crate::archiver::Archiver;
use crate::supervisor::shared::Shared;

/// Why a scheduled run did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotRunning(InstanceState),
    Standby,
    Unreachable(String),
}

/// Whether retention may run on an instance in `state` whose postgres reports `in_recovery`.
pub fn may_run(state: InstanceState, in_recovery: Result<bool, String>) -> Result<(), Skip> {
    if state != InstanceState::Running {
        return Err(Skip::NotRunning(state));
    }
    match in_recovery {
        Ok(false) => Ok(()),
        Ok(true) => Err(Skip::Standby),
        Err(e) => Err(Skip::Unreachable(e)),
    }
}

/// Start the schedule (a no-op without an archive).
pub fn spawn(shared: Arc<Shared>) {
    let Some(archiver) = shared.archiver.get().cloned() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let interval = shared
                .config()
                .archive
                .retention_interval
                .max(Duration::from_secs(1));
            tokio::time::sleep(interval).await;
            run_once(&shared, &archiver).await;
        }
    });
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
    let in_recovery = if shared.state.current() == InstanceState::Running {
        crate::pgconn::probe(&shared.target(), Duration::from_secs(10))
            .await
            .map(|facts| facts.in_recovery)
            .map_err(|e| format!("{e:#}"))
    } else {
        Ok(false)
    };
    if let Err(skip) = may_run(shared.state.current(), in_recovery) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_primary_deletes() {
        assert_eq!(may_run(InstanceState::Running, Ok(false)), Ok(()));
        assert_eq!(
            may_run(InstanceState::Running, Ok(true)),
            Err(Skip::Standby)
        );
        assert!(matches!(
            may_run(InstanceState::Starting, Ok(false)),
            Err(Skip::NotRunning(_))
        ));
        assert!(matches!(
            may_run(InstanceState::Running, Err("refused".into())),
            Err(Skip::Unreachable(_))
        ));
    }
}
