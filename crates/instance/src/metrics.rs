//! Prometheus metrics of the manager, with a configurable namespace (`pgsteward` by default,
//! `cnpg` for CNPG-compatible names). Rendered by the separate metrics listener.

use prometheus::{Encoder, Gauge, GaugeVec, IntCounter, IntGauge, Opts, Registry, TextEncoder};

use pgsteward_api::InstanceState;

/// All metrics, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// 1 when the last collection from postgres succeeded.
    pub collector_up: IntGauge,
    /// 1 when postgres accepts connections.
    pub postgres_up: IntGauge,
    /// 1 for the current state, 0 for the others.
    pub manager_state: GaugeVec,
    /// Postmaster start time, seconds since the epoch.
    pub postmaster_start_time: Gauge,
    /// Client connections (postgres_exporter's `pg_stat_activity_count`, summed) and
    /// `max_connections` (`pg_settings_max_connections`), for connection-saturation alerts.
    pub connections: IntGauge,
    pub max_connections: IntGauge,
    /// When the API's TLS certificate expires (seconds since the epoch; 0 without http.tls).
    pub api_certificate_expiry: Gauge,
    /// Per database: its size.
    pub databases: crate::database_metrics::DatabaseMetrics,
    /// Unexpected postmaster exits the manager restarted from.
    pub crash_restarts: IntCounter,
    /// 1 when parameters wait for a restart.
    pub pending_restart: IntGauge,
    pub pending_manager_restart: IntGauge,
    /// Successful and failed configuration reloads.
    pub config_reloads: IntCounter,
    pub config_reload_failures: IntCounter,
    /// WAL archiving and restore.
    pub wal_archived: IntCounter,
    pub wal_archive_failures: IntCounter,
    pub wal_archive_conflicts: IntCounter,
    pub wal_archive_ready_backlog: IntGauge,
    pub wal_archive_lag_seconds: Gauge,
    pub wal_archive_last_success: Gauge,
    pub wal_archive_last_failure: Gauge,
    pub wal_restored: IntCounter,
    pub wal_restore_prefetch_hits: IntCounter,
    /// Base backups.
    pub backup: crate::backups::BackupMetrics,
    /// Scheduled retention runs.
    pub retention: RetentionMetrics,
    /// Role, term and replay lag (replication/metrics.rs).
    pub replication: crate::replication::metrics::ReplicationMetrics,
    /// Restore drills.
    pub drill: DrillMetrics,
    /// Scheduled archive checks.
    pub wal_check: crate::wal_check_task::WalCheckMetrics,
    /// HA checks and self-fencing.
    pub ha: crate::ha::metrics::HaMetrics,
}

/// Metrics of the scheduled retention runs.
#[derive(Clone)]
pub struct RetentionMetrics {
    /// When retention last ran to completion (seconds since the epoch).
    pub last_run: Gauge,
    pub deleted_backups: IntCounter,
    /// WAL objects deleted (history files are never deleted).
    pub deleted_wal: IntCounter,
    /// Runs that failed (store errors, unreadable catalog, invalid policy).
    pub errors: IntCounter,
}

/// Metrics of restore drills.
#[derive(Clone)]
pub struct DrillMetrics {
    pub last_success: Gauge,
    pub last_failure: Gauge,
    pub duration_seconds: Gauge,
    pub recovered_lsn: Gauge,
    pub runs: IntCounter,
    pub failures: IntCounter,
}

impl DrillMetrics {
    fn new(namespace: &str, registry: &Registry) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(namespace.to_owned());
        let drill = DrillMetrics {
            last_success: Gauge::with_opts(opts(
                "drill_last_success_timestamp",
                "When a restore drill last succeeded (seconds since the epoch)",
            ))?,
            last_failure: Gauge::with_opts(opts(
                "drill_last_failure_timestamp",
                "When a restore drill last failed (seconds since the epoch)",
            ))?,
            duration_seconds: Gauge::with_opts(opts(
                "drill_duration_seconds",
                "Duration of the last restore drill: restore, WAL replay and checks",
            ))?,
            recovered_lsn: Gauge::with_opts(opts(
                "drill_recovered_lsn",
                "The LSN (as a number) the last successful drill recovered to",
            ))?,
            runs: IntCounter::with_opts(opts("drill_runs_total", "Restore drills run"))?,
            failures: IntCounter::with_opts(opts(
                "drill_failures_total",
                "Restore drills that failed",
            ))?,
        };
        for gauge in [
            &drill.last_success,
            &drill.last_failure,
            &drill.duration_seconds,
            &drill.recovered_lsn,
        ] {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(drill.runs.clone()))?;
        registry.register(Box::new(drill.failures.clone()))?;
        Ok(drill)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Create and register every metric under `namespace`.
    pub fn new(namespace: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(namespace.to_owned());
        let collector_up = IntGauge::with_opts(opts(
            "collector_up",
            "1 if the last collection of postgres metrics succeeded, 0 otherwise",
        ))?;
        let postgres_up =
            IntGauge::with_opts(opts("postgres_up", "1 if postgres accepts connections"))?;
        let manager_state = GaugeVec::new(
            opts(
                "manager_state",
                "1 for the instance manager's current state, 0 for the others",
            ),
            &["state"],
        )?;
        let connections = IntGauge::with_opts(opts(
            "pg_stat_activity_count",
            "Client backends connected (pg_stat_activity, backend_type 'client backend'); 0 while postgres does not answer",
        ))?;
        let max_connections = IntGauge::with_opts(opts(
            "pg_settings_max_connections",
            "The max_connections setting",
        ))?;
        let api_certificate_expiry = Gauge::with_opts(opts(
            "api_certificate_expiry_timestamp_seconds",
            "When the API's TLS certificate (http.tls.cert_file, first certificate) expires, seconds since the epoch; 0 without http.tls",
        ))?;
        let postmaster_start_time = Gauge::with_opts(opts(
            "pg_postmaster_start_time",
            "Postmaster start time in seconds since the epoch",
        ))?;
        let crash_restarts = IntCounter::with_opts(opts(
            "postgres_crash_restarts_total",
            "Unexpected postmaster exits the manager restarted postgres after",
        ))?;
        let pending_restart = IntGauge::with_opts(opts(
            "pending_restart",
            "1 if changed parameters need a postgres restart",
        ))?;
        let pending_manager_restart = IntGauge::with_opts(opts(
            "pending_manager_restart",
            "1 if changed manager settings (archive, http, metrics, log, ...) need a manager restart",
        ))?;
        let config_reloads = IntCounter::with_opts(opts(
            "config_reloads_total",
            "Configuration reloads applied",
        ))?;
        let config_reload_failures = IntCounter::with_opts(opts(
            "config_reload_failures_total",
            "Configuration reloads refused or failed",
        ))?;
        let counter = |name: &str, help: &str| IntCounter::with_opts(opts(name, help));
        let wal_archived = counter(
            "wal_archived_total",
            "WAL files archived (or found already archived)",
        )?;
        let wal_archive_failures =
            counter("wal_archive_failures_total", "Failed WAL archive attempts")?;
        let wal_archive_conflicts = counter(
            "wal_archive_conflicts_total",
            "Archive attempts refused because a different object already exists",
        )?;
        let wal_archive_ready_backlog = IntGauge::with_opts(opts(
            "wal_archive_ready_backlog",
            "WAL files waiting to be archived (.ready)",
        ))?;
        let wal_archive_lag_seconds = Gauge::with_opts(opts(
            "wal_archive_lag_seconds",
            "Age of the oldest WAL file waiting to be archived",
        ))?;
        let wal_archive_last_success = Gauge::with_opts(opts(
            "wal_archive_last_success_timestamp_seconds",
            "When a WAL file was last archived",
        ))?;
        let wal_archive_last_failure = Gauge::with_opts(opts(
            "wal_archive_last_failure_timestamp_seconds",
            "When archiving a WAL file last failed",
        ))?;
        let wal_restored = counter("wal_restored_total", "WAL files restored for postgres")?;
        let wal_restore_prefetch_hits = counter(
            "wal_restore_prefetch_hits_total",
            "WAL restores served from the prefetch spool",
        )?;
        let retention = RetentionMetrics {
            last_run: Gauge::with_opts(opts(
                "retention_last_run_timestamp",
                "When the retention policy was last applied successfully (seconds since the epoch)",
            ))?,
            deleted_backups: counter(
                "retention_deleted_backups_total",
                "Base backups deleted by the retention policy",
            )?,
            deleted_wal: counter(
                "retention_deleted_wal_total",
                "WAL objects deleted by the retention policy",
            )?,
            errors: counter("retention_errors_total", "Retention runs that failed")?,
        };
        registry.register(Box::new(retention.last_run.clone()))?;
        for metric in [
            &retention.deleted_backups,
            &retention.deleted_wal,
            &retention.errors,
        ] {
            registry.register(Box::new(metric.clone()))?;
        }
        for metric in [
            &wal_archived,
            &wal_archive_failures,
            &wal_archive_conflicts,
            &wal_restored,
            &wal_restore_prefetch_hits,
        ] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(wal_archive_ready_backlog.clone()))?;
        registry.register(Box::new(wal_archive_lag_seconds.clone()))?;
        registry.register(Box::new(wal_archive_last_success.clone()))?;
        registry.register(Box::new(wal_archive_last_failure.clone()))?;
        registry.register(Box::new(collector_up.clone()))?;
        registry.register(Box::new(postgres_up.clone()))?;
        registry.register(Box::new(manager_state.clone()))?;
        registry.register(Box::new(postmaster_start_time.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(api_certificate_expiry.clone()))?;
        registry.register(Box::new(max_connections.clone()))?;
        registry.register(Box::new(crash_restarts.clone()))?;
        registry.register(Box::new(pending_restart.clone()))?;
        registry.register(Box::new(pending_manager_restart.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_reload_failures.clone()))?;
        let backup = crate::backups::BackupMetrics::new(&registry, namespace)?;
        let replication =
            crate::replication::metrics::ReplicationMetrics::register(&registry, namespace)?;
        for state in InstanceState::ALL {
            manager_state.with_label_values(&[state.as_str()]).set(0.0);
        }
        let drill = DrillMetrics::new(namespace, &registry)?;
        let wal_check = crate::wal_check_task::WalCheckMetrics::register(&registry, namespace)?;
        let databases = crate::database_metrics::DatabaseMetrics::register(&registry, namespace)?;
        let ha = crate::ha::metrics::HaMetrics::register(&registry, namespace)?;
        Ok(Metrics {
            registry,
            collector_up,
            postgres_up,
            manager_state,
            postmaster_start_time,
            connections,
            max_connections,
            api_certificate_expiry,
            databases,
            crash_restarts,
            pending_restart,
            pending_manager_restart,
            config_reloads,
            config_reload_failures,
            wal_archived,
            wal_archive_failures,
            wal_archive_conflicts,
            wal_archive_ready_backlog,
            wal_archive_lag_seconds,
            wal_archive_last_success,
            wal_archive_last_failure,
            wal_restored,
            wal_restore_prefetch_hits,
            backup,
            retention,
            replication,
            drill,
            wal_check,
            ha,
        })
    }

    /// Mark `state` as the current state.
    pub fn set_state(&self, current: InstanceState) {
        for state in InstanceState::ALL {
            let value = if state == current { 1.0 } else { 0.0 };
            self.manager_state
                .with_label_values(&[state.as_str()])
                .set(value);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

/// A registry in the Prometheus text format (an encoding error is logged).
pub fn encode(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}
