//! Switchover and re-admission against a three-instance cluster (PG15 and PG18) built by
//! `pgsteward_testkit::cluster` (`ANY 1` synchronous replication, `data_durability: required`),
//! with the acknowledged-commit writer inserting through a libpq multi-host connection string.
//! Switchover under writes: no acknowledged commit lost, the old primary streams from the new
//! one, the term goes up, the coordinator drops the old primary's slots of its former
//! standbys (and the new primary has the slots of its standbys); refusals (unknown member 404, the primary itself 409, no token 401, a
//! wrong token 403); and a switchover back. Refusals of a candidate whose walreceiver is
//! stopped (SIGSTOP; it still reports streaming): with 40+ MiB written meanwhile, by the lag
//! guard (409, no new term); stopped right before the request, by the primary, which waits
//! `switchover_confirm_timeout` for it to confirm the CHECKPOINT and does not shut down (409,
//! writes never stop). Roll-back, with that confirmation off: the stopped candidate never
//! receives the shutdown checkpoint; after
//! `switchover_timeout` the old primary is promoted back with a newer term, the request fails
//! saying so, no acknowledged commit is lost and both standbys stream from it again.
//! Re-admission: after a failover (the primary's manager and postgres killed with SIGKILL), the
//! old primary's restarted manager is told to follow the new primary and streams from it, and
//! its slots of its former standbys are dropped.
//! Backups through the coordinator: `prefer-standby` runs on a streaming standby, `primary` on
//! the primary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgsteward_testkit::cluster::{Cluster, ClusterOptions};
use pgsteward_testkit::writer::{Report, Writer};
use pgsteward_testkit::{wait_for, PgVersion};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

async fn cluster(version: PgVersion) -> Cluster {
    Cluster::start(ClusterOptions::new(
        &pgsteward_testkit::pgsteward_bin(),
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        version,
    ))
    .await
}

/// Wait until member `name` is a replica of `term` streaming from member `upstream`.
async fn wait_streams_from(cluster: &Cluster, name: &str, upstream: &str, term: u64) -> Value {
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
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name} does not stream from {upstream} ({address}) in term {term}: {s}\ncoordinator: {}\n{}\n{name}'s log (tail):\n{}",
            cluster.coordinator.status().await.unwrap_or(Value::Null),
            cluster.coordinator.log(),
            log_tail(cluster, name)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_tail(cluster: &Cluster, name: &str) -> String {
    let log = cluster
        .member(name)
        .manager
        .as_ref()
        .map(|m| m.log())
        .unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

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

async fn wait_acks(writer: &Writer, n: usize) {
    wait_for("acknowledged writes", DEADLINE, || async {
        (writer.acked() >= n).then_some(())
    })
    .await;
}

async fn switchover_under_writes(version: PgVersion) {
    let cluster = cluster(version).await;
    let writer = Writer::start(&cluster.conninfo(), Duration::from_millis(5))
        .await
        .unwrap();
    wait_acks(&writer, 100).await;

    // Refusals first: nothing changes.
    let unknown = cluster.switchover("nobody").await.unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let itself = cluster.switchover("a").await.unwrap();
    assert_eq!(itself.status, 409, "{}", itself.body);
    assert!(
        itself.body.contains("already is the primary"),
        "{}",
        itself.body
    );
    let anonymous = cluster.switchover_with("b", None).await.unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let wrong = cluster.switchover_with("b", Some("wrong")).await.unwrap();
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert_eq!(cluster.primary().await.as_deref(), Some("a"));

    let at = Instant::now();
    let answer = cluster.switchover("b").await.unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}\n{}",
        answer.body,
        cluster.coordinator.log()
    );
    let body = answer.json();
    assert_eq!(body["from"], "a");
    assert_eq!(body["to"], "b");
    assert_eq!(body["term"], 2);
    wait_acks(&writer, writer.acked() + 100).await;
    let report = writer.stop().await;
    let pause = report.longest_gap_since(at).unwrap();
    eprintln!(
        "{version:?}: switchover a -> b: write pause {} ms, switchover {} ms, {} errors",
        pause.as_millis(),
        body["elapsed_ms"],
        report.errors_since(at)
    );
    assert_nothing_lost_on(&cluster, "b", &report).await;
    wait_streams_from(&cluster, "a", "b", 2).await;
    wait_streams_from(&cluster, "c", "b", 2).await;
    wait_for("the coordinator to name b primary", DEADLINE, || async {
        let s = cluster.coordinator.status().await?;
        (s["primary"] == "b" && s["term"] == 2).then_some(())
    })
    .await;
    assert_eq!(
        cluster
            .coordinator
            .metric("pgsteward_coordinator_switchovers_total")
            .await,
        Some(1.0)
    );
    // a kept the slots of its former standbys; the coordinator has them dropped. b has the
    // slots a and c created when they followed it.
    cluster.wait_slots_of("a", &[], DEADLINE).await;
    cluster.wait_slots_of("b", &["a", "c"], DEADLINE).await;
    assert_eq!(
        cluster
            .coordinator
            .metric("pgsteward_coordinator_slots_dropped_total")
            .await,
        Some(2.0)
    );

    // And back.
    let back = cluster.switchover("a").await.unwrap();
    assert_eq!(
        back.status,
        200,
        "{}\n{}",
        back.body,
        cluster.coordinator.log()
    );
    assert_eq!(back.json()["term"], 3);
    wait_streams_from(&cluster, "b", "a", 3).await;
    wait_streams_from(&cluster, "c", "a", 3).await;
    cluster.wait_slots_of("b", &[], DEADLINE).await;
    cluster.wait_slots_of("a", &["b", "c"], DEADLINE).await;
}

/// Options of the stalled-candidate tests: a 3 s `switchover_timeout`, and a 2 s
/// `wal_sender_timeout` (the old primary's shutdown waits for its walsenders to flush to their
/// standbys; the one of a stopped receiver gives up after this).
fn stalled_options(version: PgVersion, confirm_timeout: Duration) -> ClusterOptions {
    let mut options = ClusterOptions::new(
        &pgsteward_testkit::pgsteward_bin(),
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        version,
    );
    options.switchover_timeout = Some(Duration::from_secs(3));
    options.switchover_confirm_timeout = Some(confirm_timeout);
    options.manager_args = vec!["--set=postgres.parameters.wal_sender_timeout=2s".into()];
    options
}

/// `POST /switchover {"to"}` answers `status` with a body containing each of `needles`.
async fn switchover_answers(cluster: &Cluster, to: &str, status: u16, needles: &[&str]) {
    let answer = cluster.switchover(to).await.unwrap();
    assert_eq!(
        answer.status,
        status,
        "{}\n{}",
        answer.body,
        cluster.coordinator.log()
    );
    assert!(
        needles.iter().all(|n| answer.body.contains(n)),
        "{}",
        answer.body
    );
}

/// A switchover to `b` with its WAL receiver stopped (SIGSTOP) for the request, answering
/// `status` with each of `needles`; when it was requested.
async fn switchover_to_stalled_b(cluster: &Cluster, status: u16, needles: &[&str]) -> Instant {
    let stopped = Stopped::stop(wal_receiver_pid(cluster, "b").await);
    let at = Instant::now();
    switchover_answers(cluster, "b", status, needles).await;
    drop(stopped);
    at
}

/// After 100 more acknowledged writes, stop `writer`, print its longest pause since `at`, and
/// check that no acknowledged commit is missing on `a`; the writer's errors since `at`.
async fn finish_writes(cluster: &Cluster, writer: Writer, at: Instant, what: &str) -> usize {
    wait_acks(&writer, writer.acked() + 100).await;
    let report = writer.stop().await;
    let errors = report.errors_since(at);
    eprintln!(
        "{:?}: {what}: write pause {} ms, {errors} errors",
        cluster.options.version,
        report.longest_gap_since(at).unwrap().as_millis(),
    );
    assert_nothing_lost_on(cluster, "a", &report).await;
    errors
}

/// Every commit `report`'s writer saw acknowledged is on member `name`.
async fn assert_nothing_lost_on(cluster: &Cluster, name: &str, report: &Report) {
    let missing = cluster.missing_acks(name, report).await.unwrap();
    assert!(
        missing.is_empty(),
        "{} acknowledged commits missing on {name}: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

async fn switchover_refuses_a_lagging_or_stalled_candidate(version: PgVersion) {
    let cluster = Cluster::start(stalled_options(version, Duration::from_secs(1))).await;
    let writer = Writer::start(&cluster.conninfo(), Duration::from_millis(5))
        .await
        .unwrap();
    wait_acks(&writer, 100).await;

    // Far behind (more than switchover_max_lag_bytes, 16 MiB by default): refused before
    // anything is demoted, so writes go on and the term stays.
    let stopped = Stopped::stop(wal_receiver_pid(&cluster, "b").await);
    cluster
        .sql(
            "a",
            "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS t FROM generate_series(1, 200000) g",
        )
        .await
        .unwrap();
    switchover_answers(
        &cluster,
        "b",
        409,
        &["behind a", "switchover_max_lag_bytes"],
    )
    .await;
    let s = cluster.coordinator.status().await.unwrap();
    assert!(s["primary"] == "a" && s["term"] == 1, "{s}");
    drop(stopped);
    wait_caught_up(&cluster, "b").await;

    // Close enough, but not receiving: the primary waits for it to confirm its CHECKPOINT
    // (switchover_confirm_timeout) and refuses to shut down, so writes never stop.
    let at = switchover_to_stalled_b(
        &cluster,
        409,
        &[
            "a refused the demotion, nothing changed",
            "has not confirmed the WAL up to",
            "this instance stays primary",
        ],
    )
    .await;
    let errors = finish_writes(
        &cluster,
        writer,
        at,
        "switchover refused (stalled candidate)",
    )
    .await;
    assert_eq!(errors, 0);
    // The refused attempt used up term 2; a stays primary of term 1 and b streams from it again.
    let s = cluster.coordinator.status().await.unwrap();
    assert!(s["primary"] == "a" && s["term"] == 2, "{s}");
    let a = cluster.member_status("a").await.unwrap();
    assert!(
        a["replication"]["role"] == "primary" && a["replication"]["term"] == 1,
        "{a}"
    );
    wait_streams_from(&cluster, "b", "a", 1).await;
}

async fn switchover_is_rolled_back_when_the_candidate_cannot_catch_up(version: PgVersion) {
    // Without the confirmation the stalled candidate is only found out after the shutdown.
    let cluster = Cluster::start(stalled_options(version, Duration::ZERO)).await;
    let writer = Writer::start(&cluster.conninfo(), Duration::from_millis(5))
        .await
        .unwrap();
    wait_acks(&writer, 100).await;

    let at = switchover_to_stalled_b(
        &cluster,
        500,
        &["abandoned", "a is primary again with term 3"],
    )
    .await;
    finish_writes(&cluster, writer, at, "rolled-back switchover").await;
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

/// Wait until `name` has received everything the primary `a` has written so far.
async fn wait_caught_up(cluster: &Cluster, name: &str) {
    let written = cluster
        .sql("a", "SELECT pg_current_wal_lsn()::text")
        .await
        .unwrap();
    let written = written[0][0].clone().unwrap();
    wait_for(
        "a standby to catch up after its WAL receiver resumed",
        DEADLINE,
        || async {
            let rows = cluster
                .sql(
                    name,
                    &format!("SELECT pg_last_wal_receive_lsn() >= '{written}'::pg_lsn"),
                )
                .await
                .ok()?;
            (rows.first()?.first()?.as_deref() == Some("t")).then_some(())
        },
    )
    .await;
}

/// The pid of `name`'s WAL receiver, once it has one.
async fn wal_receiver_pid(cluster: &Cluster, name: &str) -> i32 {
    wait_for("a WAL receiver", DEADLINE, || async {
        let rows = cluster
            .sql(
                name,
                "SELECT pid FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            )
            .await
            .ok()?;
        rows.first()?.first()?.as_deref()?.parse().ok()
    })
    .await
}

async fn old_primary_is_readmitted(version: PgVersion) {
    let mut cluster = cluster(version).await;
    let a = cluster.member("a").manager.as_ref().unwrap();
    let manager = a.pid().await;
    let postmaster = a.postmaster_host_pid().await.unwrap();
    kill(Pid::from_raw(manager), Signal::SIGKILL).unwrap();
    pgsteward_testkit::proc::signal_tree(postmaster, Signal::SIGKILL);
    let new = cluster.wait_new_primary("a", DEADLINE).await;
    // The manager comes back on the old primary's data directory; the coordinator fences it
    // if it starts as a primary of term 1, then tells it to follow.
    cluster.restart("a");
    wait_streams_from(&cluster, "a", &new, 2).await;
    // Its slots of b and c went with its primary role.
    cluster.wait_slots_of("a", &[], DEADLINE).await;
    let s = cluster.coordinator.status().await.unwrap();
    assert!(
        s["readmissions"]["a"]["attempts"].as_u64().unwrap_or(0) >= 1,
        "{s}\n{}",
        cluster.coordinator.log()
    );
    assert!(
        cluster
            .coordinator
            .metric("pgsteward_coordinator_readmissions_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    // The re-admitted standby replays what the new primary writes.
    cluster
        .sql(
            &new,
            "CREATE TABLE after_readmission (i int); INSERT INTO after_readmission VALUES (7)",
        )
        .await
        .unwrap();
    wait_for("the row on the re-admitted standby", DEADLINE, || async {
        let rows = cluster
            .sql("a", "SELECT i::text FROM after_readmission")
            .await
            .ok()?;
        (rows.first()?.first()?.as_deref() == Some("7")).then_some(())
    })
    .await;
}

async fn post_backup(cluster: &Cluster, body: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    let r = pgsteward_testkit::http::request(
        "POST",
        &cluster.coordinator.url("/backup"),
        &headers,
        body,
    )
    .await
    .unwrap();
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

/// Wait until member `name`'s last backup is `id` and succeeded (on timeout: its status and
/// the tail of its manager's log).
async fn wait_backup_done(cluster: &Cluster, name: &str, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = cluster.member_status(name).await;
        if let Some(s) = &s {
            let last = &s["backup"]["last"];
            if last["backup_id"] == id {
                assert_eq!(last["succeeded"], true, "{s}");
                return;
            }
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "backup {id} on {name} not done within 120 s; status {s:?}; log tail:\n{}",
                log_tail(cluster, name)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn backup_prefers_a_standby(version: PgVersion) {
    use pgsteward_testkit::cluster::COORDINATOR_TOKEN;
    let cluster = cluster(version).await;
    let (status, _) = post_backup(&cluster, "{\"target\":\"prefer-standby\"}", None).await;
    assert_eq!(status, 401);
    let (status, body) = post_backup(
        &cluster,
        "{\"target\":\"prefer-standby\",\"immediate_checkpoint\":true}",
        Some(COORDINATOR_TOKEN),
    )
    .await;
    assert_eq!(status, 202, "{body}\n{}", cluster.coordinator.log());
    let member = body["member"].as_str().unwrap().to_owned();
    assert!(member == "b" || member == "c", "{body}");
    assert_eq!(body["role"], "replica");
    let id = body["answer"]["backup_id"].as_str().unwrap().to_owned();
    wait_backup_done(&cluster, &member, &id).await;

    let (status, body) = post_backup(
        &cluster,
        "{\"target\":\"primary\"}",
        Some(COORDINATOR_TOKEN),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["member"], "a");
    let id = body["answer"]["backup_id"].as_str().unwrap().to_owned();
    wait_backup_done(&cluster, "a", &id).await;
    let (status, _) = post_backup(
        &cluster,
        "{\"target\":\"somewhere\"}",
        Some(COORDINATOR_TOKEN),
    )
    .await;
    assert_eq!(status, 400);
}

pgsteward_testkit::for_each_version!(switchover_under_writes);
pgsteward_testkit::for_each_version!(switchover_refuses_a_lagging_or_stalled_candidate);
pgsteward_testkit::for_each_version!(switchover_is_rolled_back_when_the_candidate_cannot_catch_up);
pgsteward_testkit::for_each_version!(old_primary_is_readmitted);
pgsteward_testkit::for_each_version!(backup_prefers_a_standby);
