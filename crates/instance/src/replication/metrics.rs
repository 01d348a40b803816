//! Replication metrics, named so that with the `cnpg` namespace they match CloudNativePG's
//! (`cnpg_pg_replication_lag`, `_in_recovery`, `_is_wal_receiver_up`,
//! `_streaming_replicas`), the lag also with the `_seconds` suffix alert rules use, plus the replay lag in bytes, the term, and per physical slot the
//! WAL it retains and whether it is in use (an inactive slot keeps WAL without bound).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use pgsteward_api::SlotStatus;
use prometheus::{Gauge, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Gauges refreshed with every status or metrics collection.
#[derive(Clone)]
pub struct ReplicationMetrics {
    /// 1 on a standby (persisted role replica), 0 on a primary.
    pub is_replica: IntGauge,
    /// The persisted term.
    pub term: IntGauge,
    /// 1 when the WAL receiver streams.
    pub wal_receiver_up: IntGauge,
    /// Replay lag of this standby, seconds and bytes; the seconds also as
    /// `pg_replication_lag_seconds` (Prometheus' unit suffix, what alert rules written for
    /// CNPG often query) beside CNPG's own `pg_replication_lag`.
    pub lag_seconds: Gauge,
    pub lag_seconds_suffixed: Gauge,
    pub lag_bytes: Gauge,
    /// Standbys streaming from this instance.
    pub streaming_replicas: IntGauge,
    /// Per physical slot (`slot_name`): WAL bytes it retains, and 1 while a standby uses it.
    slot_retained_bytes: GaugeVec,
    slot_active: IntGaugeVec,
    /// The slots the gauges were last set for, so a dropped slot's series go away.
    slots_shown: Arc<Mutex<BTreeSet<String>>>,
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
            lag_seconds_suffixed: Gauge::with_opts(opts(
                "pg_replication_lag_seconds",
                "Replay lag of this standby in seconds (the same value as pg_replication_lag)",
            ))?,
            lag_bytes: Gauge::with_opts(opts(
                "pg_replication_lag_bytes",
                "WAL bytes received by this standby but not replayed yet",
            ))?,
            streaming_replicas: IntGauge::with_opts(opts(
                "pg_replication_streaming_replicas",
                "Standbys streaming from this instance",
            ))?,
            slot_retained_bytes: GaugeVec::new(
                opts(
                    "pg_replication_slot_retained_bytes",
                    "WAL bytes a physical replication slot keeps (current position - restart_lsn)",
                ),
                &["slot_name"],
            )?,
            slot_active: IntGaugeVec::new(
                opts(
                    "pg_replication_slot_active",
                    "1 if a standby uses the physical replication slot, 0 if it is inactive",
                ),
                &["slot_name"],
            )?,
            slots_shown: Arc::default(),
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
        registry.register(Box::new(metrics.lag_seconds_suffixed.clone()))?;
        registry.register(Box::new(metrics.lag_bytes.clone()))?;
        registry.register(Box::new(metrics.slot_retained_bytes.clone()))?;
        registry.register(Box::new(metrics.slot_active.clone()))?;
        Ok(metrics)
    }

    /// Show exactly `slots` (the series of slots no longer listed are removed).
    pub fn set_slots(&self, slots: &[SlotStatus]) {
        let mut shown = self.slots_shown.lock().unwrap_or_else(|p| p.into_inner());
        let now: BTreeSet<String> = slots.iter().map(|s| s.slot_name.clone()).collect();
        for gone in shown.difference(&now) {
            let _ = self.slot_retained_bytes.remove_label_values(&[gone]);
            let _ = self.slot_active.remove_label_values(&[gone]);
        }
        for slot in slots {
            let name = [slot.slot_name.as_str()];
            self.slot_retained_bytes
                .with_label_values(&name)
                .set(slot.retained_bytes.unwrap_or(0) as f64);
            self.slot_active
                .with_label_values(&name)
                .set(i64::from(slot.active));
        }
        *shown = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode;

    fn slot(name: &str, active: bool, retained: u64) -> SlotStatus {
        SlotStatus {
            slot_name: name.into(),
            active,
            restart_lsn: None,
            wal_status: None,
            retained_bytes: Some(retained),
        }
    }

    #[test]
    fn slot_series_follow_the_slots() {
        let registry = Registry::new();
        let metrics = ReplicationMetrics::register(&registry, "t").unwrap();
        metrics.set_slots(&[slot("b", true, 10), slot("c", false, 5 << 30)]);
        let text = encode(&registry);
        assert!(
            text.contains("t_pg_replication_slot_retained_bytes{slot_name=\"c\"} 5368709120"),
            "{text}"
        );
        assert!(
            text.contains("t_pg_replication_slot_active{slot_name=\"c\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("t_pg_replication_slot_active{slot_name=\"b\"} 1"),
            "{text}"
        );
        metrics.set_slots(&[slot("b", true, 20)]);
        let text = encode(&registry);
        assert!(!text.contains("slot_name=\"c\""), "{text}");
        assert!(
            text.contains("t_pg_replication_slot_retained_bytes{slot_name=\"b\"} 20"),
            "{text}"
        );
    }
}
