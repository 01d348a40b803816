//! Invariant 2 on the managers' side (`ha` section), with three real instances, the real
//! coordinator and (for the partition) network namespaces, on PG15 and PG18:
//! - an isolated primary (its namespace cut off the bridge) stops postgres by itself once
//!   neither the coordinator nor a peer answered for `ha.isolation_timeout`, and after the
//!   heal ends fenced (superseded) or re-admitted as a standby of the new primary;
//! - a former primary restarted while the coordinator is down keeps postgres stopped
//!   (`awaiting_role`), and starts as the same primary once the coordinator is back;
//! - a former primary restarted after a failover never runs as a writable primary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgsteward_testkit::cluster::{Cluster, ClusterOptions};
use pgsteward_testkit::{for_each_version, wait_for, PgVersion};
use serde_json::Value;

const ISOLATION: Duration = Duration::from_millis(1500);
const DEADLINE: Duration = Duration::from_secs(60);

fn options(version: PgVersion) -> ClusterOptions {
    let mut options = ClusterOptions::new(
        &pgsteward_testkit::pgsteward_bin(),
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        version,
    );
    options.ha_isolation_timeout = Some(ISOLATION);
    options
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

async fn isolated_primary_fences_itself(version: PgVersion) {
    let mut opts = options(version);
    opts.network_namespaces = true;
    let cluster = Cluster::start(opts).await;
    let a = cluster.member("a").manager.as_ref().unwrap();
    let postmaster = a.postmaster_host_pid().await.expect("a's postmaster pid");
    wait_for("a's HA checks reach everybody", DEADLINE, || async {
        let s = a.status().await;
        let ha = &s["ha"];
        (ha["coordinator_reachable"] == true && ha["reachable_peers"] == 2).then_some(())
    })
    .await;

    let network = cluster.network.as_ref().unwrap();
    let at = Instant::now();
    network.isolate(0).unwrap();
    wait_for(
        "the isolated primary to stop postgres",
        DEADLINE,
        || async { (!alive(postmaster)).then_some(()) },
    )
    .await;
    let stopped_after = at.elapsed();
    eprintln!("{version:?}: isolated primary stopped postgres after {stopped_after:?}");
    assert!(
        stopped_after >= ISOLATION,
        "stopped after {stopped_after:?}, before the isolation timeout"
    );
    let new_primary = cluster.wait_new_primary("a", DEADLINE).await;
    network.heal(0).unwrap();

    let fences = wait_for("a's self-fence counted", DEADLINE, || async {
        let metrics = cluster.member("a").instance.metrics();
        pgsteward_testkit::http::metric(&metrics, "pgsteward_ha_self_fences_total")
            .await
            .filter(|n| *n >= 1.0)
    })
    .await;
    assert!(fences >= 1.0);
    let log = cluster.member("a").manager.as_ref().unwrap().log();
    assert!(log.contains("self-fencing"), "a's log:\n{log}");
    assert!(log.contains("isolated for"), "a's log:\n{log}");
    let end: Value = wait_for(
        "a fenced (superseded) or back as a standby",
        DEADLINE,
        || async {
            let s = cluster.member_status("a").await?;
            let standby = s["replication"]["role"] == "replica" && s["postgres_up"] == true;
            let superseded = s["state"] == "fenced"
                && s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("superseded") || e.contains("rewind"));
            (standby || superseded).then_some(s)
        },
    )
    .await;
    eprintln!(
        "{version:?}: a ended {} ({}), new primary {new_primary}",
        end["state"], end["replication"]["role"]
    );
    let primaries = pgsteward_testkit::faults::primaries(&cluster).await;
    assert_eq!(primaries, vec![new_primary.as_str()]);
}

async fn former_primary_waits_for_its_role(version: PgVersion) {
    let mut opts = options(version);
    // No failover while the primary is away: this test is about the restart alone.
    opts.failure_threshold = Duration::from_secs(600);
    let mut cluster = Cluster::start(opts).await;
    cluster
        .sql("a", "CREATE TABLE kept AS SELECT 42 AS answer")
        .await
        .unwrap();
    cluster.coordinator.stop();
    {
        let a = cluster.member_mut("a").manager.as_mut().unwrap();
        a.signal(Signal::SIGTERM).await;
        assert_eq!(a.wait_exit(Duration::from_secs(60)).await, 0);
    }
    cluster.restart("a");
    let pgdata = cluster.member("a").instance.pgdata.clone();
    let waiting: Value = wait_for("a awaiting its role", DEADLINE, || async {
        let s = cluster.member_status("a").await?;
        (s["state"] == "awaiting_role"
            && s["ha"]["waiting_for"]
                .as_str()
                .is_some_and(|w| w.contains("does not answer")))
        .then_some(s)
    })
    .await;
    assert_eq!(waiting["postgres_up"], false, "{waiting}");
    assert_eq!(waiting["replication"]["role"], "primary", "{waiting}");
    // Several checks go by (250 ms apart) without postgres starting.
    let api = cluster.member("a").instance.api();
    for _ in 0..8 {
        let s = cluster.member_status("a").await.unwrap();
        assert_eq!(s["state"], "awaiting_role", "{s}");
        assert!(
            pgsteward_testkit::manager::postmaster_pid(&pgdata).is_none(),
            "postgres started without the coordinator: {s}"
        );
        let ready = pgsteward_testkit::http::get(&format!("{api}/readyz"))
            .await
            .unwrap();
        assert_eq!(ready.status, 503);
        let startup = pgsteward_testkit::http::get(&format!("{api}/startupz"))
            .await
            .unwrap();
        assert_eq!(startup.status, 200, "{}", startup.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    cluster.restart_coordinator();
    let running: Value = wait_for("a confirmed and running", DEADLINE, || async {
        let s = cluster.member_status("a").await?;
        (s["state"] == "running" && s["role"] == "primary").then_some(s)
    })
    .await;
    assert_eq!(running["replication"]["term"], 1, "{running}");
    let rows = cluster.sql("a", "SELECT answer FROM kept").await.unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("42"));
    let log = cluster.member("a").manager.as_ref().unwrap().log();
    assert!(
        log.contains("the coordinator confirms this instance"),
        "a's log:\n{log}"
    );
    assert_eq!(
        cluster
            .coordinator
            .metric("pgsteward_coordinator_failovers_total")
            .await,
        Some(0.0)
    );
}

async fn restarted_former_primary_never_writable(version: PgVersion) {
    let mut cluster = Cluster::start(options(version)).await;
    {
        let a = cluster.member("a").manager.as_ref().unwrap();
        let manager = a.pid().await;
        let postmaster = a.postmaster_host_pid().await.unwrap();
        kill(Pid::from_raw(manager), Signal::SIGKILL).unwrap();
        pgsteward_testkit::proc::signal_tree(postmaster, Signal::SIGKILL);
    }
    let new_primary = cluster.wait_new_primary("a", DEADLINE).await;
    cluster.restart("a");
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        if let Some(s) = cluster.member_status("a").await {
            let state = s["state"].as_str().unwrap_or("?").to_owned();
            assert!(
                !(s["role"] == "primary" && s["postgres_up"] == true),
                "the restarted former primary ran as a writable primary: {s}"
            );
            if seen.last() != Some(&state) {
                seen.push(state);
            }
            if s["replication"]["role"] == "replica" && s["postgres_up"] == true {
                break;
            }
            if s["state"] == "fenced"
                && s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("rewind"))
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "a neither re-admitted nor fenced; states {seen:?}; log:\n{}",
            cluster.member("a").manager.as_ref().unwrap().log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{version:?}: restarted former primary went through {seen:?}; new primary {new_primary}"
    );
    assert!(
        seen.iter().any(|s| s == "awaiting_role" || s == "fenced"),
        "{seen:?}"
    );
    let log = cluster.member("a").manager.as_ref().unwrap().log();
    assert!(
        log.contains("postgres is not started yet"),
        "a's log:\n{log}"
    );
    let primaries = pgsteward_testkit::faults::primaries(&cluster).await;
    assert_eq!(primaries, vec![new_primary.as_str()]);
}

for_each_version!(isolated_primary_fences_itself);
for_each_version!(former_primary_waits_for_its_role);
for_each_version!(restarted_former_primary_never_writable);
