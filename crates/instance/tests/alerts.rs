//! The platform reference's alert rules (`examples/prometheus/reference-alerts.yaml`,
//! written for CNPG) against a real manager with `metrics.namespace: cnpg`, evaluated by a
//! real Prometheus scraping it every second (PG15 and PG18). `promtool check rules` accepts
//! the file; every series the rules query exists (the lag is 0 on a primary, the connection
//! ratio below 0.8 at rest) and every rule is healthy and inactive. Holding connections past
//! 80% of max_connections makes PostgreSQLConnectionsHigh pending (its `for: 5m` keeps it
//! from firing within the test); fencing postgres makes PostgreSQLDown pending. The
//! reference's dashboard metric `cnpg_pg_database_size_bytes{datname}` follows the databases:
//! a new database gets a series, a dropped one loses it.
//!
//! pgsteward's own recommended rules (`examples/prometheus/pgsteward-alerts.yaml`) against a
//! manager serving HTTPS with the test CA's two-day certificate (PG15): promtool accepts them,
//! the manager's series they query exist, every rule is healthy, the certificate rule and the
//! missing-backup rule (no backup was taken) are pending, and the archive, slot, fence and
//! restart rules are inactive.
//!
//! The coordinator's rules (refusal, failover, member down) are checked against a real
//! coordinator in `crates/coordinator/tests/failover.rs`.
//!
//! Every alert of both files has its section in `docs/runbook.md`, pgsteward's rules link to
//! it (`runbook_url`), and the runbook's links between sections lead to existing headings.

mod common;

use std::path::PathBuf;

use common::*;
use pgsteward_testkit::prometheus::{check_rules, Prometheus};

async fn wait_state(prometheus: &Prometheus, alert: &str, state: &str) {
    prometheus.wait_alert(alert, state, READY).await;
}

/// Open `count` connections as the superuser and keep them.
async fn hold_connections(instance: &Instance, count: usize) -> Vec<tokio_postgres::Client> {
    let mut clients = Vec::new();
    for _ in 0..count {
        let (client, connection) = pg_config(instance)
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connection {}: {e}", clients.len() + 1));
        tokio::spawn(connection);
        clients.push(client);
    }
    clients
}

async fn reference_alerts_work_with_the_cnpg_namespace(version: PgVersion) {
    let rules = alert_rules("reference-alerts.yaml");
    let checked = check_rules(&rules);
    assert!(checked.contains("3 rules found"), "{checked}");
    let instance = Instance::new(options(version));
    let manager = instance.spawn_with(&["--set=metrics.namespace=cnpg".to_owned()]);
    manager.wait_ready(READY).await;
    let target = format!("127.0.0.1:{}", instance.metrics_port);
    let prometheus = Prometheus::start(&[target], &[rules]).await;

    let value = |expr: &'static str| {
        let prometheus = &prometheus;
        async move {
            let samples = prometheus.query(expr).await?;
            (samples.len() == 1).then(|| samples[0].1)
        }
    };
    wait_for("cnpg_collector_up scraped", READY, || async {
        (value("cnpg_collector_up").await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(value("cnpg_pg_replication_lag_seconds").await, Some(0.0));
    assert_eq!(value("cnpg_pg_settings_max_connections").await, Some(30.0));
    let ratio = value("cnpg_pg_stat_activity_count / cnpg_pg_settings_max_connections")
        .await
        .unwrap_or_else(|| panic!("no connection ratio\n{}", prometheus.log()));
    assert!(ratio > 0.0 && ratio < 0.8, "{ratio}");
    for alert in [
        "PostgreSQLDown",
        "PostgreSQLReplicationLag",
        "PostgreSQLConnectionsHigh",
    ] {
        wait_state(&prometheus, alert, "inactive").await;
    }

    // Database sizes: one series per database, gone with the database.
    let size = value("cnpg_pg_database_size_bytes{datname=\"postgres\"}")
        .await
        .unwrap_or_else(|| panic!("no size of the postgres database\n{}", prometheus.log()));
    assert!(size > 1_000_000.0, "{size}");
    exec(&instance, "CREATE DATABASE alerts_extra").await;
    wait_for("the new database's size", READY, || async {
        value("cnpg_pg_database_size_bytes{datname=\"alerts_extra\"}")
            .await
            .filter(|s| *s > 0.0)
    })
    .await;
    exec(&instance, "DROP DATABASE alerts_extra").await;
    let metrics_url = format!("{}/metrics", instance.metrics());
    wait_for("the dropped database's series to go", READY, || async {
        let text = http::get(&metrics_url).await?.body;
        (!text.contains("alerts_extra")).then_some(())
    })
    .await;

    // 25 of 30 connections held (the manager's own come on top): above 80%.
    let held = hold_connections(&instance, 25).await;
    wait_state(&prometheus, "PostgreSQLConnectionsHigh", "pending").await;
    drop(held);
    wait_state(&prometheus, "PostgreSQLConnectionsHigh", "inactive").await;

    // Postgres stopped (fenced): the collector is down.
    let (code, answer) = post(&instance, "/pg/fence", Some(TOKEN), "").await;
    assert_eq!(code, 200, "{answer}");
    wait_state(&prometheus, "PostgreSQLDown", "pending").await;
    assert_eq!(value("cnpg_pg_stat_activity_count").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_alerts_work_with_the_cnpg_namespace_pg15() {
    reference_alerts_work_with_the_cnpg_namespace(PgVersion::V15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_alerts_work_with_the_cnpg_namespace_pg18() {
    reference_alerts_work_with_the_cnpg_namespace(PgVersion::V18).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsteward_rules_are_healthy_and_see_a_short_lived_certificate() {
    let rules = alert_rules("pgsteward-alerts.yaml");
    let checked = check_rules(&rules);
    assert!(checked.contains("15 rules found"), "{checked}");
    let instance = Instance::new(options(PgVersion::V15));
    let certs = pgsteward_testkit::certs::generate_certificates(&instance.dir.mkdir("tls", 0o755))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let _manager = instance.spawn_with(&instance.https_args(&certs));
    let target = format!("127.0.0.1:{}", instance.metrics_port);
    let prometheus = Prometheus::start(&[target], &[rules]).await;
    for series in [
        "pgsteward_wal_archive_lag_seconds",
        "pgsteward_wal_archive_failures_total",
        "pgsteward_wal_archive_ready_backlog",
        "pgsteward_backup_last_success_timestamp",
        "pgsteward_ha_self_fences_total",
        "pgsteward_pending_restart",
        "pgsteward_pending_manager_restart",
        "pgsteward_api_certificate_expiry_timestamp_seconds",
        "pgsteward_drill_last_failure_timestamp",
        "pgsteward_drill_last_success_timestamp",
    ] {
        wait_for(&format!("{series} scraped"), READY, || async {
            prometheus
                .query(series)
                .await
                .filter(|samples| samples.len() == 1)
                .map(|_| ())
        })
        .await;
    }
    wait_state(&prometheus, "PgstewardCertificateExpiresSoon", "pending").await;
    for alert in [
        "PgstewardWalArchiveBehind",
        "PgstewardWalArchiveFailing",
        "PgstewardWalArchiveHole",
        "PgstewardWalArchiveHistoryMissing",
        "PgstewardWalArchiveCheckFailing",
        "PgstewardReplicationSlotInactive",
        "PgstewardRestoreDrillFailing",
        "PgstewardSelfFenced",
        "PgstewardPendingRestart",
        "PgstewardCoordinatorCertificateExpiresSoon",
        "PgstewardFailoverRefused",
        "PgstewardFailoverHappened",
        "PgstewardMemberDown",
    ] {
        wait_state(&prometheus, alert, "inactive").await;
    }
    // No base backup was ever taken here.
    wait_state(&prometheus, "PgstewardBaseBackupMissing", "pending").await;
}

/// The alert names of a rules file, with each rule's `runbook_url` annotation.
fn alerts_of(file: &str) -> Vec<(String, Option<String>)> {
    let text = std::fs::read_to_string(alert_rules(file))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            if let Some(name) = rule["alert"].as_str() {
                let runbook = rule["annotations"]["runbook_url"].as_str();
                alerts.push((name.to_owned(), runbook.map(str::to_owned)));
            }
        }
    }
    alerts
}

#[test]
fn every_alert_has_a_runbook_section() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbook.md");
    let runbook = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    // GitHub's anchors of the second-level headings: lower case, spaces as dashes.
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| {
            h.trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let reference = alerts_of("reference-alerts.yaml");
    let ours = alerts_of("pgsteward-alerts.yaml");
    assert_eq!(reference.len(), 3, "{reference:?}");
    assert_eq!(ours.len(), 15, "{ours:?}");
    for (name, _) in reference.iter().chain(&ours) {
        assert!(
            anchors.contains(&name.to_lowercase()),
            "docs/runbook.md has no section '## {name}' (sections: {anchors:?})"
        );
    }
    for (name, runbook_url) in &ours {
        assert_eq!(
            runbook_url.as_deref(),
            Some(format!("docs/runbook.md#{}", name.to_lowercase()).as_str()),
            "{name}'s runbook_url"
        );
    }
    for link in runbook.split("](#").skip(1) {
        let anchor = link.split(')').next().unwrap_or_default();
        assert!(
            anchors.iter().any(|a| a == anchor),
            "docs/runbook.md links to #{anchor}, which is no section"
        );
    }
}
