//! Assembly of the instance status (`GET /pg/status`, `pgsteward status`) from the
//! supervisor's runtime facts and a live query of postgres.

use std::time::Duration;

use pgsteward_api::{InstanceStatus, Role};

use crate::kept_connection::{self, ReadKind};
use crate::pgconn::{self, PgFacts};
use crate::supervisor::shared::Shared;

/// Query postgres (bounded by a short timeout) and refresh the metrics it feeds.
pub async fn live_facts(shared: &Shared) -> Option<PgFacts> {
    let facts = kept_connection::read(
        shared,
        ReadKind::Status,
        Duration::from_secs(2),
        |client| async move { pgconn::facts(&client).await },
    )
    .await;
    match facts {
        Ok(facts) => {
            shared.metrics.collector_up.set(1);
            shared.metrics.postgres_up.set(1);
            shared
                .metrics
                .postmaster_start_time
                .set(facts.postmaster_start_epoch);
            shared.metrics.connections.set(facts.client_connections);
            shared.metrics.max_connections.set(facts.max_connections);
            shared
                .metrics
                .pending_restart
                .set(i64::from(!facts.pending_restart.is_empty()));
            Some(facts)
        }
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "postgres did not answer");
            shared.metrics.collector_up.set(0);
            shared.metrics.postgres_up.set(0);
            shared.metrics.connections.set(0);
            None
        }
    }
}

/// The full status.
pub async fn collect(shared: &Shared) -> InstanceStatus {
    let facts = live_facts(shared).await;
    let runtime = shared.runtime();
    let config = shared.config();
    let pending = match &facts {
        Some(f) => f.pending_restart.clone(),
        None => runtime.pending_restart.clone(),
    };
    shared
        .metrics
        .pending_restart
        .set(i64::from(!pending.is_empty()));
    InstanceStatus {
        instance_name: config.instance_name,
        state: shared.state.current(),
        role: match &facts {
            Some(f) if f.in_recovery => Role::Replica,
            Some(_) => Role::Primary,
            None => Role::Unknown,
        },
        postgres_up: facts.is_some(),
        postgres_version: facts.as_ref().map(|f| f.server_version.clone()),
        postgres_major: shared.bins.major,
        system_identifier: facts.as_ref().map(|f| f.system_identifier.clone()),
        timeline: facts.as_ref().and_then(|f| f.timeline),
        current_lsn: facts.as_ref().and_then(|f| f.current_lsn.clone()),
        postmaster_pid: runtime.postmaster_pid,
        postmaster_start_time: facts.as_ref().map(|f| f.postmaster_start_time.clone()),
        pending_restart: !pending.is_empty(),
        pending_restart_parameters: pending,
        pending_manager_restart: runtime.pending_manager_restart,
        config_hash: runtime.config_hash,
        crash_restarts: runtime.crash_restarts,
        manager_version: env!("CARGO_PKG_VERSION").to_owned(),
        last_error: runtime.last_error,
        archive: shared.archiver.get().map(|archiver| {
            let mut status = archiver.status();
            status.lag_bytes = lag_bytes(
                facts.as_ref().and_then(|f| f.current_lsn.as_deref()),
                status.last_archived_wal.as_deref(),
                archiver.segment_bytes(),
            );
            status
        }),
        backup: shared.archiver.get().map(|_| shared.backups.status()),
        replication: crate::replication::status::collect(shared).await,
        drill: shared
            .drill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        ha: shared.ha.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    }
}

/// Bytes between the end of the last archived segment and the current LSN.
fn lag_bytes(
    current_lsn: Option<&str>,
    last_archived: Option<&str>,
    segment_bytes: u64,
) -> Option<u64> {
    let current = pgsteward_archive::lsn::parse_lsn(current_lsn?)?;
    let file = pgsteward_archive::WalFile::parse(last_archived?).ok()?;
    let end = file.start_lsn(segment_bytes)? + segment_bytes;
    Some(current.saturating_sub(end))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lag_is_measured_from_the_end_of_the_last_archived_segment() {
        let seg = 16u64 << 20;
        assert_eq!(
            super::lag_bytes(Some("0/3000028"), Some("000000010000000000000002"), seg),
            Some(0x28)
        );
        assert_eq!(
            super::lag_bytes(Some("1/0"), Some("0000000100000000000000FF"), seg),
            Some(0)
        );
        assert_eq!(
            super::lag_bytes(None, Some("000000010000000000000002"), seg),
            None
        );
    }
}
