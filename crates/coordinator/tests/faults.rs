//! Faults against a three-instance cluster (PG15 and PG18) built by
//! `pgsteward_testkit::cluster`: `ANY 1` synchronous replication with `data_durability:
//! required`, a coordinator, and the acknowledged-commit writer inserting through a libpq
//! multi-host connection string (`target_session_attrs=read-write`). Faults on the primary:
//! kill -9 of the postmaster alone; kill -9 of manager and postmaster together; SIGSTOP of
//! both (a hang, SIGCONT after the failover). After each: exactly one primary, writes
//! acknowledged again, every acknowledged commit present on the primary, and the old primary
//! not a second primary (fenced by the coordinator, or back as a standby).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgsteward_testkit::cluster::{Cluster, ClusterOptions, NAMES};
use pgsteward_testkit::manager::PASSWORD;
use pgsteward_testkit::proc::signal_tree;
use pgsteward_testkit::writer::{ids_on, Writer};
use pgsteward_testkit::{wait_for, PgVersion};

/// Failover deadline: failure threshold, promotion and reconnect, with room for a loaded CI.
const RECOVERY: Duration = Duration::from_secs(30);

/// The pgsteward binary next to this test's target directory (`cargo build -p pgsteward`
/// first), or `PGSTEWARD_BIN`.
fn pgsteward_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PGSTEWARD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("pgsteward"))
        .unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p pgsteward` first (or set PGSTEWARD_BIN)",
        path.display()
    );
    path
}

async fn cluster(version: PgVersion) -> Cluster {
    Cluster::start(ClusterOptions::new(
        &pgsteward_bin(),
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        version,
    ))
    .await
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillPostmaster,
    KillManagerAndPostmaster,
    Hang,
}

/// Members whose postgres answers `pg_is_in_recovery() = false`.
async fn primaries(cluster: &Cluster) -> Vec<&'static str> {
    let mut found = Vec::new();
    for name in NAMES {
        let query = cluster.sql(name, "SELECT pg_is_in_recovery()::text");
        if let Ok(Ok(rows)) = tokio::time::timeout(Duration::from_secs(3), query).await {
            if rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .as_deref()
                == Some("false")
            {
                found.push(name);
            }
        }
    }
    found
}

/// Wait until the writer has `n` acknowledgements; on timeout, fail with its last errors.
async fn wait_acks(writer: &Writer, n: usize) {
    let deadline = Instant::now() + RECOVERY;
    while writer.acked() < n {
        if Instant::now() > deadline {
            let report = writer.report();
            let last: Vec<&String> = report.errors.iter().rev().take(5).map(|(_, e)| e).collect();
            panic!(
                "{} of {n} writes acknowledged after {RECOVERY:?}; last errors: {last:#?}",
                report.acks.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fault_then_recover(version: PgVersion, fault: Fault) {
    let mut cluster = cluster(version).await;
    let writer = Writer::start(&cluster.conninfo(), Duration::from_millis(5))
        .await
        .unwrap();
    wait_acks(&writer, 100).await;

    let old = cluster.primary().await.unwrap();
    assert_eq!(old, "a");
    let manager = cluster.member(&old).manager.as_ref().unwrap();
    let manager_pid = Pid::from_raw(manager.pid().await);
    let postmaster = Pid::from_raw(manager.postmaster_host_pid().await.unwrap());
    let at = Instant::now();
    match fault {
        Fault::KillPostmaster => kill(postmaster, Signal::SIGKILL).unwrap(),
        // "postgres" is the postmaster and all its children: backends and walsenders would
        // otherwise go on serving existing connections (each is its own process group).
        Fault::KillManagerAndPostmaster => {
            kill(manager_pid, Signal::SIGKILL).unwrap();
            signal_tree(postmaster.as_raw(), Signal::SIGKILL);
        }
        Fault::Hang => {
            kill(manager_pid, Signal::SIGSTOP).unwrap();
            signal_tree(postmaster.as_raw(), Signal::SIGSTOP);
        }
    }
    let first = wait_for("a write acknowledged after the fault", RECOVERY, || async {
        writer.first_ack_after(at)
    })
    .await;
    let primary = match fault {
        // The manager restarts a crashed postmaster; whichever member is primary afterwards
        // must hold every acknowledged write.
        Fault::KillPostmaster => {
            wait_for("a primary", RECOVERY, || async { cluster.primary().await }).await
        }
        _ => cluster.wait_new_primary(&old, RECOVERY).await,
    };
    let mut resumed = None;
    if let Fault::Hang = fault {
        signal_tree(postmaster.as_raw(), Signal::SIGCONT);
        kill(manager_pid, Signal::SIGCONT).unwrap();
        resumed = Some(Instant::now());
    }
    if let Fault::KillManagerAndPostmaster = fault {
        cluster.restart(&old);
    }
    // A few more acknowledged writes on the new primary, then stop.
    wait_acks(&writer, writer.acked() + 20).await;
    let report = writer.stop().await;
    let rto = report.rto(at).unwrap();
    eprintln!(
        "{version:?} {fault:?}: primary {old} -> {primary}, RTO {} ms (first ack {} ms after \
         the fault), {} acknowledged, {} errors",
        rto.as_millis(),
        first.at.duration_since(at).as_millis(),
        report.acks.len(),
        report.errors.len()
    );

    // Exactly one primary, and the old one is not a second one (fenced or a standby).
    if !matches!(fault, Fault::KillPostmaster) {
        let settled = wait_for("the old primary fenced or a standby", RECOVERY, || async {
            let s = cluster.member_status(&old).await?;
            let fenced = s["state"] == "fenced";
            let standby = s["replication"]["role"] == "replica" && s["postgres_up"] == true;
            (fenced || standby).then_some(s)
        })
        .await;
        eprintln!(
            "old primary {old}: state {}, role {}",
            settled["state"], settled["replication"]["role"]
        );
    }
    let found = primaries(&cluster).await;
    assert_eq!(found, vec![primary.as_str()], "exactly one primary");

    let present = ids_on(cluster.member(&primary).instance.pg_port, PASSWORD)
        .await
        .unwrap();
    let missing = report.missing(&present);
    for ack in report
        .acks
        .iter()
        .filter(|a| missing.contains(&a.id))
        .take(5)
    {
        eprintln!(
            "missing id {} timeline {}: sent {:?} after the fault, acknowledged {:?} after \
             (resumed {:?} after)",
            ack.id,
            ack.timeline,
            ack.sent.saturating_duration_since(at),
            ack.at.saturating_duration_since(at),
            resumed.map(|r| r.saturating_duration_since(at)),
        );
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged commits missing on {primary}: {:?}; coordinator log:\n{}",
        missing.len(),
        &missing[..missing.len().min(20)],
        cluster.coordinator.log()
    );
    assert!(
        rto < RECOVERY,
        "RTO {rto:?}; coordinator log:\n{}",
        cluster.coordinator.log()
    );
}

async fn kill_postmaster(version: PgVersion) {
    fault_then_recover(version, Fault::KillPostmaster).await
}

async fn kill_manager_and_postmaster(version: PgVersion) {
    fault_then_recover(version, Fault::KillManagerAndPostmaster).await
}

async fn hang(version: PgVersion) {
    fault_then_recover(version, Fault::Hang).await
}

macro_rules! for_each_version {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg15() {
                super::$name(PgVersion::V15).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg18() {
                super::$name(PgVersion::V18).await
            }
        }
    };
}

for_each_version!(kill_postmaster);
for_each_version!(kill_manager_and_postmaster);
for_each_version!(hang);
