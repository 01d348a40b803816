//! Faults against a three-instance cluster (PG15 and PG18) built by
//! `pgsteward_testkit::cluster`: `ANY 1` synchronous replication with `data_durability:
//! required`, a coordinator, and the acknowledged-commit writer inserting through a libpq
//! multi-host connection string (`target_session_attrs=read-write`); the scenario itself is
//! `pgsteward_testkit::faults::run`. Faults on the primary: kill -9 of the postmaster alone;
//! kill -9 of manager and postgres together; SIGSTOP of both (a hang, SIGCONT after the
//! failover); the primary's network namespace cut off its bridge (each member in its own
//! namespace, `ip netns` and veth pairs; reconnected after the failover). After each: exactly one primary, every acknowledged commit present on it,
//! writes acknowledged again within the deadline, and the old primary not a second primary
//! (fenced by the coordinator; back as a standby once re-admission exists).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use pgsteward_testkit::cluster::{Cluster, ClusterOptions};
use pgsteward_testkit::faults::{self, Fault};
use pgsteward_testkit::PgVersion;

/// RTO bound for the tests (the benchmark measures the real figures).
const RTO_BOUND: Duration = Duration::from_secs(10);

async fn fault_then_recover(version: PgVersion, fault: Fault) {
    let mut options = ClusterOptions::new(
        &pgsteward_testkit::pgsteward_bin(),
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        version,
    );
    options.network_namespaces = fault == Fault::Isolate;
    // The managers' HA checks on for the faults that leave a former primary to come back
    // (isolated, or restarted after kill -9): it must fence itself or wait for its role.
    if matches!(fault, Fault::Isolate | Fault::KillManagerAndPostgres) {
        options.ha_isolation_timeout = Some(Duration::from_millis(1500));
    }
    let mut cluster = Cluster::start(options).await;
    let outcome = match faults::run(&mut cluster, fault, Duration::from_millis(5)).await {
        Ok(o) => o,
        Err(e) => panic!(
            "{version:?} {}: {e:#}\ncoordinator log:\n{}",
            fault.name(),
            cluster.coordinator.log()
        ),
    };
    eprintln!("{version:?} {outcome:?}");
    assert_eq!(outcome.old_primary, "a");
    if fault != Fault::KillPostmaster {
        assert_ne!(outcome.new_primary, "a", "{outcome:?}");
        assert!(
            outcome.old_state.starts_with("\"fenced\"") || outcome.old_state.contains("replica"),
            "{outcome:?}"
        );
    }
    assert_eq!(
        outcome.primaries,
        vec![outcome.new_primary.as_str()],
        "exactly one primary: {outcome:?}"
    );
    assert!(
        outcome.missing.is_empty(),
        "{} acknowledged commits missing on {}: {:?}; coordinator log:\n{}",
        outcome.missing.len(),
        outcome.new_primary,
        &outcome.missing[..outcome.missing.len().min(20)],
        cluster.coordinator.log()
    );
    assert!(outcome.rto < RTO_BOUND, "{outcome:?}");
}

async fn kill_postmaster(version: PgVersion) {
    fault_then_recover(version, Fault::KillPostmaster).await
}

async fn kill_manager_and_postgres(version: PgVersion) {
    fault_then_recover(version, Fault::KillManagerAndPostgres).await
}

async fn hang(version: PgVersion) {
    fault_then_recover(version, Fault::Hang).await
}

async fn isolate(version: PgVersion) {
    fault_then_recover(version, Fault::Isolate).await
}

pgsteward_testkit::for_each_version!(kill_postmaster);
pgsteward_testkit::for_each_version!(kill_manager_and_postgres);
pgsteward_testkit::for_each_version!(hang);
pgsteward_testkit::for_each_version!(isolate);
