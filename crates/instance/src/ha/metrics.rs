//! Metrics of the HA monitor: contact with the coordinator and the peers, self-fences.

use prometheus::{Gauge, IntCounter, IntGauge, Opts, Registry};

/// Gauges and counters of `crate::ha`.
#[derive(Clone)]
pub struct HaMetrics {
    /// 1 when the coordinator answered the latest check.
    pub coordinator_reachable: IntGauge,
    /// Peers that answered the latest check.
    pub reachable_peers: IntGauge,
    /// Seconds since the coordinator or a peer last answered.
    pub seconds_since_contact: Gauge,
    /// Times the manager stopped its primary (isolated or superseded).
    pub self_fences: IntCounter,
}

impl HaMetrics {
    /// Create and register under `namespace`.
    pub fn register(registry: &Registry, namespace: &str) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(namespace.to_owned());
        let metrics = HaMetrics {
            coordinator_reachable: IntGauge::with_opts(opts(
                "ha_coordinator_reachable",
                "1 if the coordinator answered the latest HA check",
            ))?,
            reachable_peers: IntGauge::with_opts(opts(
                "ha_reachable_peers",
                "Peers (other members' managers) that answered the latest HA check",
            ))?,
            seconds_since_contact: Gauge::with_opts(opts(
                "ha_seconds_since_contact",
                "Seconds since the coordinator or a peer last answered",
            ))?,
            self_fences: IntCounter::with_opts(opts(
                "ha_self_fences_total",
                "Times the manager stopped its primary because it was isolated or superseded",
            ))?,
        };
        registry.register(Box::new(metrics.coordinator_reachable.clone()))?;
        registry.register(Box::new(metrics.reachable_peers.clone()))?;
        registry.register(Box::new(metrics.seconds_since_contact.clone()))?;
        registry.register(Box::new(metrics.self_fences.clone()))?;
        Ok(metrics)
    }
}
