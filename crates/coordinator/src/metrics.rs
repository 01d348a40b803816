//! The coordinator's Prometheus metrics: current term, failovers, refusals, member up, stale
//! replication slots dropped, the latency of one poll-and-decide round, when its TLS
//! certificates expire, and configuration reloads.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// All metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    pub term: IntGauge,
    pub failovers: IntCounter,
    pub refusals: IntCounter,
    pub switchovers: IntCounter,
    pub readmissions: IntCounter,
    pub readmission_failures: IntCounter,
    pub member_up: IntGaugeVec,
    pub slots_dropped: IntCounter,
    pub decision_seconds: Histogram,
    /// `certificate`: `api` (api_tls) or `client` (tls.client_cert_file).
    pub certificate_expiry: IntGaugeVec,
    /// SIGHUPs whose configuration file did not load.
    pub config_reload_failures: IntCounter,
    /// 1 while the configuration file has changes that apply only at a restart.
    pub config_pending_restart: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let term = IntGauge::new("pgsteward_coordinator_term", "Current term")?;
        let failovers = IntCounter::new(
            "pgsteward_coordinator_failovers_total",
            "Promotions ordered by this coordinator",
        )?;
        let refusals = IntCounter::new(
            "pgsteward_coordinator_refusals_total",
            "Rounds where the primary had failed but no replica could be promoted",
        )?;
        let switchovers = IntCounter::new(
            "pgsteward_coordinator_switchovers_total",
            "Switchovers completed by this coordinator",
        )?;
        let readmissions = IntCounter::new(
            "pgsteward_coordinator_readmissions_total",
            "Members told to follow the current primary (former primaries, stale replicas)",
        )?;
        let readmission_failures = IntCounter::new(
            "pgsteward_coordinator_readmission_failures_total",
            "Re-admission attempts that failed (retried with backoff)",
        )?;
        let member_up = IntGaugeVec::new(
            Opts::new(
                "pgsteward_coordinator_member_up",
                "1 when the member's manager answered and postgres is up",
            ),
            &["member"],
        )?;
        let slots_dropped = IntCounter::new(
            "pgsteward_coordinator_slots_dropped_total",
            "Stale replication slots dropped on members (a demoted primary's, a removed member's)",
        )?;
        let decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "pgsteward_coordinator_decision_seconds",
                "Time to poll every member and decide",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "pgsteward_coordinator_certificate_expiry_timestamp_seconds",
                "When a TLS certificate of the coordinator expires, seconds since the epoch (api: api_tls.cert_file; client: tls.client_cert_file)",
            ),
            &["certificate"],
        )?;
        let config_reload_failures = IntCounter::new(
            "pgsteward_coordinator_config_reload_failures_total",
            "SIGHUPs whose configuration file did not load (the running configuration stayed)",
        )?;
        let config_pending_restart = IntGauge::new(
            "pgsteward_coordinator_config_pending_restart",
            "1 while the configuration file has changes that apply only at a restart (GET /status: pending_restart)",
        )?;
        registry.register(Box::new(config_reload_failures.clone()))?;
        registry.register(Box::new(config_pending_restart.clone()))?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        registry.register(Box::new(term.clone()))?;
        registry.register(Box::new(failovers.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(member_up.clone()))?;
        registry.register(Box::new(switchovers.clone()))?;
        registry.register(Box::new(readmissions.clone()))?;
        registry.register(Box::new(readmission_failures.clone()))?;
        registry.register(Box::new(slots_dropped.clone()))?;
        registry.register(Box::new(decision_seconds.clone()))?;
        Ok(Metrics {
            registry,
            term,
            failovers,
            refusals,
            switchovers,
            readmissions,
            readmission_failures,
            member_up,
            slots_dropped,
            decision_seconds,
            certificate_expiry,
            config_reload_failures,
            config_pending_restart,
        })
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
