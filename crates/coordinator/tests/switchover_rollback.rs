//! A switchover that cannot complete is rolled back, against a three-instance cluster (PG15
//! and PG18) under acknowledged writes: the candidate's walreceiver is stopped (SIGSTOP), so
//! it still reports streaming but never receives the old primary's shutdown checkpoint. The
//! coordinator demotes the primary, waits `switchover_timeout`, and promotes the old primary
//! again with a newer term: the request fails with a 500 that says so, no acknowledged commit
//! is lost, writes resume on the old primary, and both standbys stream from it again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgsteward_testkit::cluster::{Cluster, ClusterOptions};
use pgsteward_testkit::manager::PASSWORD;
use pgsteward_testkit::writer::{ids_on, Writer};
use pgsteward_testkit::{wait_for, PgVersion};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

/// Resumes a stopped process when dropped, so a failed assertion leaves nothing stopped.
struct Stopped(Pid);

impl Stopped {
    fn stop(pid: i32) -> Self {
        kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
        Stopped(Pid::from_raw(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Wait until member `name` is a replica of `term` streaming from member `upstream`.
async fn wait_streams_from(cluster: &Cluster, name: &str, upstream: &str, term: u64) {
    let up = &cluster.member(upstream).instance;
    let address = format!("{}:{}", up.options.host, up.pg_port);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = cluster.member_status(name).await.unwrap_or(Value::Null);
        let r = &s["replication"];
        if r["role"] == "replica"
            && r["term"] == term
            && r["upstream"] == address.as_str()
            && r["receiver"]["wal_receiver_status"] == "streaming"
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} does not stream from {upstream} in term {term}: {s}\ncoordinator: {}\n{}",
            cluster.coordinator.status().await.unwrap_or(Value::Null),
            cluster.coordinator.log(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_acks(writer: &Writer, n: usize) {
    wait_for("acknowledged writes", DEADLINE, || async {
        (writer.acked() >= n).then_some(())
    })
    .await;
}

async fn switchover_is_rolled_back_when_the_candidate_cannot_catch_up(version: PgVersion) {
    let mut options = ClusterOptions::new(
        &pgsteward_testkit::pgsteward_bin(),
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        version,
    );
    options.switchover_timeout = Some(Duration::from_secs(3));
    // The old primary's shutdown waits for its walsenders to flush to their standbys; the one
    // of the stopped receiver gives up after this.
    options.manager_args = vec!["--set=postgres.parameters.wal_sender_timeout=2s".into()];
    let cluster = Cluster::start(options).await;
    let writer = Writer::start(&cluster.conninfo(), Duration::from_millis(5))
        .await
        .unwrap();
    wait_acks(&writer, 100).await;

    let receiver = cluster
        .sql("b", "SELECT pid FROM pg_stat_wal_receiver")
        .await
        .unwrap();
    let pid: i32 = receiver[0][0].as_deref().unwrap().parse().unwrap();
    let stopped = Stopped::stop(pid);
    let at = Instant::now();
    let answer = cluster.switchover("b").await.unwrap();
    drop(stopped);
    assert_eq!(
        answer.status,
        500,
        "{}\n{}",
        answer.body,
        cluster.coordinator.log()
    );
    assert!(
        answer.body.contains("abandoned") && answer.body.contains("a is primary again with term 3"),
        "{}",
        answer.body
    );

    wait_acks(&writer, writer.acked() + 100).await;
    let report = writer.stop().await;
    eprintln!(
        "{version:?}: rolled-back switchover: write pause {} ms, {} errors",
        report.longest_gap_since(at).unwrap().as_millis(),
        report.errors_since(at)
    );
    let a = &cluster.member("a").instance;
    let present = ids_on(&a.options.host, a.pg_port, PASSWORD).await.unwrap();
    let missing = report.missing(&present);
    assert!(
        missing.is_empty(),
        "{} acknowledged commits missing on a: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    wait_for(
        "the coordinator to name a primary in term 3",
        DEADLINE,
        || async {
            let s = cluster.coordinator.status().await?;
            (s["primary"] == "a" && s["term"] == 3).then_some(())
        },
    )
    .await;
    wait_streams_from(&cluster, "c", "a", 3).await;
    wait_streams_from(&cluster, "b", "a", 3).await;
}

pgsteward_testkit::for_each_version!(switchover_is_rolled_back_when_the_candidate_cannot_catch_up);
