//! Replication metrics, named so that with the `cnpg` namespace they match CloudNativePG's
//! (`cnpg_pg_replication_lag`, `_in_recovery`, `_is_wal_receiver_up`,
//! `_streaming_replicas`), plus the replay lag in bytes and the term.

use prometheus::{Gauge, IntGauge, Opts, Registry};

/// Gauges refreshed with every status or metrics collection.
#[derive(Clone)]
pub struct ReplicationMetrics {
    /// 1 on a standby (persisted role replica), 0 on a primary.
    pub is_replica: IntGauge,
    /// The persisted term.
    pub term: IntGauge,
    /// 1 when the WAL receiver streams.
    pub wal_receiver_up: IntGauge,
    /// Replay lag of this standby, seconds and bytes.
    pub lag_seconds: Gauge,
    pub lag_bytes: Gauge,
    /// Standbys streaming from this instance.
    pub streaming_replicas: IntGauge,
}

impl ReplicationMetrics {
    /// Create and register the gauges under `namespace`.
    pub fn register(registry: &Registry, namespace: &str) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(namespace.to_owned());
        let metrics = ReplicationMetrics {
            is_replica: IntGauge::with_opts(opts(
                "pg_replication_in_recovery",
                "1 if the instance is a standby (persisted role), 0 on a primary",
            ))?,
            term: IntGauge::with_opts(opts(
                "replication_term",
                "Term the instance was promoted in (primary) or the highest it knows of",
            ))?,
            wal_receiver_up: IntGauge::with_opts(opts(
                "pg_replication_is_wal_receiver_up",
                "1 if the WAL receiver is streaming",
            ))?,
            lag_seconds: Gauge::with_opts(opts(
                "pg_replication_lag",
                "Replay lag of this standby in seconds (0 when all received WAL is replayed)",
            ))?,
            lag_bytes: Gauge::with_opts(opts(
                "pg_replication_lag_bytes",
                "WAL bytes received by this standby but not replayed yet",
            ))?,
            streaming_replicas: IntGauge::with_opts(opts(
                "pg_replication_streaming_replicas",
                "Standbys streaming from this instance",
            ))?,
        };
        for gauge in [
            &metrics.is_replica,
            &metrics.term,
            &metrics.wal_receiver_up,
            &metrics.streaming_replicas,
        ] {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(metrics.lag_seconds.clone()))?;
        registry.register(Box::new(metrics.lag_bytes.clone()))?;
        Ok(metrics)
    }
}
