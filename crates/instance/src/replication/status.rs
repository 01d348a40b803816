//! The `replication` block of the instance status, read from postgres (WAL receiver and
//! replay positions on a standby; `pg_stat_replication`, slots and
//! `synchronous_standby_names` everywhere) plus the persisted role and term, and the
//! replication metrics it feeds.

use std::time::Duration;

use anyhow::{Context, Result};
use pgsteward_api::{
    ReceiverStatus, ReplicationRole, ReplicationStatus, SlotStatus, StandbyStatus,
};
use tokio_postgres::Client;

use super::role::{self, PersistedRole};
use super::standby;
use crate::kept_connection::{self, ReadKind};
use crate::supervisor::shared::Shared;

/// Current WAL position on a primary or a standby.
const CURRENT_LSN: &str =
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END";

/// The replication block (None when the role file cannot be read; the error is logged).
/// Postgres facts are left empty when postgres does not answer.
pub async fn collect(shared: &Shared) -> Option<ReplicationStatus> {
    let state = match role::read(&shared.pgdata) {
        Ok(Some(state)) => state,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the role file");
            return None;
        }
    };
    let config = shared.config();
    let replica = state.role == PersistedRole::Replica;
    let upstream = replica
        .then(|| standby::upstream(&config, &state))
        .flatten()
        .map(|u| format!("{}:{}", u.host, u.port));
    let mut status = ReplicationStatus {
        role: match state.role {
            PersistedRole::Primary => ReplicationRole::Primary,
            PersistedRole::Replica => ReplicationRole::Replica,
        },
        term: state.term,
        slot_name: upstream
            .as_ref()
            .map(|_| standby::slot_name(&config.instance_name)),
        upstream,
        receiver: None,
        standbys: Vec::new(),
        slots: Vec::new(),
        synchronous_standby_names: None,
    };
    let base = status.clone();
    let live = kept_connection::read(shared, ReadKind::Status, Duration::from_secs(2), |client| {
        let mut live = base.clone();
        async move {
            query(&client, &mut live).await?;
            Ok(live)
        }
    })
    .await;
    match live {
        Ok(live) => status = live,
        Err(e) => tracing::debug!(error = %format!("{e:#}"), "replication facts unavailable"),
    }
    update_metrics(shared, &status);
    Some(status)
}

async fn query(client: &Client, status: &mut ReplicationStatus) -> Result<()> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')",
            &[],
        )
        .await
        .context("reading the recovery state")?;
    let in_recovery: bool = row.get(0);
    status.synchronous_standby_names = row.get(1);
    if in_recovery {
        let row = client
            .query_one(
                "SELECT r.status, r.sender_host, r.sender_port, \
                   pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
                   r.received_tli::int8, \
                   pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8, \
                   CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8 \
                        ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END \
                 FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true LIMIT 1",
                &[],
            )
            .await
            .context("reading the WAL receiver")?;
        let timeline: Option<i64> = row.get(5);
        let lag_bytes: Option<f64> = row.get(6);
        status.receiver = Some(ReceiverStatus {
            wal_receiver_status: row.get(0),
            sender_host: row.get(1),
            sender_port: row.get(2),
            received_lsn: row.get(3),
            replayed_lsn: row.get(4),
            received_timeline: timeline.and_then(|t| u32::try_from(t).ok()),
            replay_lag_bytes: lag_bytes.map(|b| b.max(0.0) as u64),
            replay_lag_seconds: row.get::<_, Option<f64>>(7).map(|s| s.max(0.0)),
        });
    }
    let rows = client
        .query(
            &format!(
                "SELECT application_name, host(client_addr), state, sync_state, \
                   sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text, \
                   extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8, \
                   extract(epoch FROM replay_lag)::float8, \
                   pg_wal_lsn_diff({CURRENT_LSN}, replay_lsn)::float8 \
                 FROM pg_stat_replication ORDER BY application_name, pid"
            ),
            &[],
        )
        .await
        .context("reading pg_stat_replication")?;
    status.standbys = rows
        .iter()
        .map(|row| StandbyStatus {
            application_name: row.get::<_, Option<String>>(0).unwrap_or_default(),
            client_addr: row.get(1),
            state: row.get(2),
            sync_state: row.get(3),
            sent_lsn: row.get(4),
            write_lsn: row.get(5),
            flush_lsn: row.get(6),
            replay_lsn: row.get(7),
            write_lag_seconds: row.get(8),
            flush_lag_seconds: row.get(9),
            replay_lag_seconds: row.get(10),
            replay_lag_bytes: row.get::<_, Option<f64>>(11).map(|b| b.max(0.0) as u64),
        })
        .collect();
    let rows = client
        .query(
            &format!(
                "SELECT slot_name::text, active, restart_lsn::text, wal_status, \
                   pg_wal_lsn_diff({CURRENT_LSN}, restart_lsn)::float8 \
                 FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name"
            ),
            &[],
        )
        .await
        .context("reading pg_replication_slots")?;
    status.slots = rows
        .iter()
        .map(|row| SlotStatus {
            slot_name: row.get(0),
            active: row.get(1),
            restart_lsn: row.get(2),
            wal_status: row.get(3),
            retained_bytes: row.get::<_, Option<f64>>(4).map(|b| b.max(0.0) as u64),
        })
        .collect();
    Ok(())
}

fn update_metrics(shared: &Shared, status: &ReplicationStatus) {
    let m = &shared.metrics.replication;
    m.term.set(i64::try_from(status.term).unwrap_or(i64::MAX));
    m.is_replica
        .set(i64::from(status.role == ReplicationRole::Replica));
    let receiver = status.receiver.as_ref();
    m.wal_receiver_up.set(i64::from(
        receiver.is_some_and(|r| r.wal_receiver_status.as_deref() == Some("streaming")),
    ));
    m.lag_bytes
        .set(receiver.and_then(|r| r.replay_lag_bytes).unwrap_or(0) as f64);
    let lag_seconds = receiver.and_then(|r| r.replay_lag_seconds).unwrap_or(0.0);
    m.lag_seconds.set(lag_seconds);
    m.lag_seconds_suffixed.set(lag_seconds);
    m.streaming_replicas.set(
        status
            .standbys
            .iter()
            .filter(|s| s.state.as_deref() == Some("streaming"))
            .count() as i64,
    );
    m.set_slots(&status.slots);
}
