//! Per-database metrics, refreshed at every scrape of `/metrics`:
//! `<ns>_pg_database_size_bytes{datname}` (CNPG's name, what the platform's dashboards show),
//! for every database that accepts connections; a dropped database's series goes away.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus::{GaugeVec, Opts, Registry};

use crate::supervisor::shared::Shared;

/// The gauges and the databases they were last set for.
#[derive(Clone)]
pub struct DatabaseMetrics {
    size_bytes: GaugeVec,
    shown: Arc<Mutex<BTreeSet<String>>>,
}

impl DatabaseMetrics {
    /// Create and register the gauges under `namespace`.
    pub fn register(registry: &Registry, namespace: &str) -> prometheus::Result<Self> {
        let size_bytes = GaugeVec::new(
            Opts::new(
                "pg_database_size_bytes",
                "Disk space a database uses (pg_database_size), per database that accepts connections",
            )
            .namespace(namespace.to_owned()),
            &["datname"],
        )?;
        registry.register(Box::new(size_bytes.clone()))?;
        Ok(DatabaseMetrics {
            size_bytes,
            shown: Arc::default(),
        })
    }

    /// Show exactly `sizes` (`(datname, bytes)`); the series of other databases are removed.
    pub fn set(&self, sizes: &[(String, i64)]) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        let now: BTreeSet<String> = sizes.iter().map(|(name, _)| name.clone()).collect();
        for gone in shown.difference(&now) {
            let _ = self.size_bytes.remove_label_values(&[gone]);
        }
        for (name, bytes) in sizes {
            self.size_bytes
                .with_label_values(&[name])
                .set(*bytes as f64);
        }
        *shown = now;
    }
}

/// Read every database's size and update the gauges; when postgres does not answer the last
/// values stay (`collector_up` says they are stale).
pub async fn refresh(shared: &Shared) {
    match sizes(shared).await {
        Ok(sizes) => shared.metrics.databases.set(&sizes),
        Err(e) => tracing::debug!(error = %format!("{e:#}"), "database sizes not refreshed"),
    }
}

async fn sizes(shared: &Shared) -> Result<Vec<(String, i64)>> {
    crate::kept_connection::read(
        shared,
        crate::kept_connection::ReadKind::Sizes,
        Duration::from_secs(2),
        |client| async move {
            let rows = client
                .query(
                    "SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datallowconn ORDER BY datname",
                    &[],
                )
                .await
                .context("reading database sizes")?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode;

    #[test]
    fn a_dropped_database_loses_its_series() {
        let registry = Registry::new();
        let metrics = DatabaseMetrics::register(&registry, "t").unwrap();
        metrics.set(&[("app".into(), 100), ("postgres".into(), 50)]);
        let text = encode(&registry);
        assert!(
            text.contains("t_pg_database_size_bytes{datname=\"app\"} 100"),
            "{text}"
        );
        metrics.set(&[("postgres".into(), 60)]);
        let text = encode(&registry);
        assert!(!text.contains("datname=\"app\""), "{text}");
        assert!(
            text.contains("t_pg_database_size_bytes{datname=\"postgres\"} 60"),
            "{text}"
        );
    }
}
