//! The coordinator against two real managers on loopback (PG15 and PG18): a primary and a
//! replica cloned with pg_basebackup. The primary's manager and postmaster are killed with
//! SIGKILL. With `data_durability: required`, `ANY 1` and a third member that never
//! answers, the coordinator refuses to promote and says why; restarted without that member
//! it promotes the replica with term 2 within the failure threshold plus a few seconds,
//! persists the term, writes succeed on the new primary, and its status and metrics show
//! it. Without `api_token_file` the mutating switchover route answers 403. A real Prometheus
//! scraping the coordinator fires `PgstewardFailoverRefused` at the refusal (the never-answering
//! member's `PgstewardMemberDown` pending) and `PgstewardFailoverHappened` after the promotion.
//! A hung primary (manager and postmaster stopped with SIGSTOP) is failed over while the
//! coordinator watches; when it resumes as a primary of the old term it is fenced, then
//! re-admitted as a standby of the new primary. A primary whose postgres is down while its
//! manager answers (crash-restart backoff) is fenced, then the replica is promoted and the old
//! primary re-admitted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgsteward_testkit::coordinator::Coordinator;
use pgsteward_testkit::fsutil::ScratchDir;
use pgsteward_testkit::manager::{Instance, PASSWORD};
use pgsteward_testkit::prometheus::Prometheus;
use pgsteward_testkit::{free_port, http, wait_for, ManagerOptions, PgVersion};
use serde_json::Value;

const READY: Duration = Duration::from_secs(90);
const THRESHOLD: Duration = Duration::from_secs(2);
/// Bound for an alert's state to follow the metrics (scrape and evaluation every second).
const ALERT: Duration = Duration::from_secs(30);

/// pgsteward's recommended alert rules.
fn alert_rules() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/prometheus/pgsteward-alerts.yaml")
}

fn replica_of(version: PgVersion, primary_port: u16) -> Instance {
    let mut replica = Instance::new(ManagerOptions::new(
        &pgsteward_testkit::pgsteward_bin().display().to_string(),
        version,
    ));
    let password_file = replica.dir.join("superuser.pw");
    replica.options.args = vec![
        "--set=bootstrap.method=basebackup".into(),
        "--set=bootstrap.basebackup.host=127.0.0.1".into(),
        format!("--set=bootstrap.basebackup.port={primary_port}"),
        format!(
            "--set=bootstrap.basebackup.password_file={}",
            password_file.display()
        ),
    ];
    replica
}

fn start_coordinator(dir: &ScratchDir, name: &str, yaml: &str) -> Coordinator {
    Coordinator::start(
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        dir.path(),
        name,
        yaml,
    )
}

fn member(name: &str, instance: &Instance) -> String {
    format!(
        "- name: {name}\n  url: {}\n  token_file: {}\n  postgres: 127.0.0.1:{}\n",
        instance.api(),
        instance.dir.join("api.token").display(),
        instance.pg_port
    )
}

async fn exec(port: u16, statement: &str) -> anyhow::Result<()> {
    pgsteward_testkit::sql(port, "postgres", PASSWORD, "postgres", statement)
        .await
        .map(|_| ())
}

async fn refuse_then_fail_over(version: PgVersion) {
    let primary = Instance::new(ManagerOptions::new(
        &pgsteward_testkit::pgsteward_bin().display().to_string(),
        version,
    ));
    let primary_manager = primary.spawn();
    primary_manager.wait_ready(READY).await;
    exec(primary.pg_port, "CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    exec(
        primary.pg_port,
        "INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .unwrap();
    let replica = replica_of(version, primary.pg_port);
    let replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;

    let dir = ScratchDir::new();
    let state_file = dir.join("coordinator-state.json");
    let common = format!(
        "state_file: {}\npoll_interval: 250ms\nrequest_timeout: 500ms\nfailure_threshold: {}ms\n\
         synchronous:\n  method: any\n  number: 1\n  data_durability: required\n",
        state_file.display(),
        THRESHOLD.as_millis()
    );
    let ghost = format!("- name: ghost\n  url: http://127.0.0.1:{}\n", free_port());
    let members = format!("{}{}", member("a", &primary), member("b", &replica));
    let mut coordinator = start_coordinator(
        &dir,
        "with-ghost",
        &format!("{common}members:\n{members}{ghost}"),
    );
    // A real Prometheus evaluates the coordinator's recommended alerts on its metrics.
    let coordinator_port = coordinator.port;
    let prometheus =
        Prometheus::start(&[format!("127.0.0.1:{coordinator_port}")], &[alert_rules()]).await;
    let status = wait_for(
        "the coordinator to see a healthy primary and replica",
        READY,
        || async {
            let s = coordinator.status().await?;
            let members = s["members"].as_array()?;
            let healthy = |n: &str| {
                members
                    .iter()
                    .any(|m| m["name"] == n && m["healthy"] == true)
            };
            let names = format!("ANY 1 (\"test-{}\")", replica.pg_port);
            (s["primary"] == "a"
                && healthy("a")
                && healthy("b")
                && s["synchronous_standby_names"] == names.as_str())
            .then_some(s)
        },
    )
    .await;
    assert_eq!(status["term"], 1, "{status}");
    assert_eq!(
        status["last_decision"]["decision"]["action"]["kind"],
        "none"
    );
    let switchover = http::request(
        "POST",
        &coordinator.url("/switchover"),
        &[],
        "{\"to\":\"b\"}",
    )
    .await
    .unwrap();
    assert_eq!(switchover.status, 403, "{}", switchover.body);
    assert!(
        switchover.body.contains("api_token_file"),
        "{}",
        switchover.body
    );

    // kill -9 the primary's manager, then its postmaster.
    let postmaster = primary_manager.postmaster_host_pid().await.unwrap();
    primary_manager.signal(Signal::SIGKILL).await;
    kill(Pid::from_raw(postmaster), Signal::SIGKILL).unwrap();
    let killed = Instant::now();

    let refusal = wait_for(
        "the coordinator to refuse",
        Duration::from_secs(30),
        || async {
            let s = coordinator.status().await?;
            (s["last_action"]["decision"]["action"]["kind"] == "refuse").then_some(s)
        },
    )
    .await;
    let reason = refusal["last_action"]["decision"]["action"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains(
            "ANY 1 of 2 standbys needs the positions of at least 2 standbys, only 1 visible (b)"
        ),
        "{reason}"
    );
    assert!(reason.contains("primary a unhealthy"), "{reason}");
    assert!(
        killed.elapsed() >= THRESHOLD,
        "refused before the threshold"
    );
    assert!(
        coordinator
            .metric("pgsteward_coordinator_refusals_total")
            .await
            >= Some(1.0)
    );
    let log = coordinator.log();
    assert!(
        log.contains(r#""decision":"refuse""#) && log.contains(r#""inputs":"#),
        "{log}"
    );
    // The refusal pages; the ghost member is down (pending: its rule waits 2 minutes).
    prometheus
        .wait_alert("PgstewardFailoverRefused", "firing", ALERT)
        .await;
    prometheus
        .wait_alert("PgstewardMemberDown", "pending", ALERT)
        .await;
    assert_eq!(
        prometheus
            .alert_state("PgstewardFailoverHappened")
            .await
            .as_deref(),
        Some("inactive")
    );
    // Nothing was promoted.
    let replica_status = replica_manager.status().await;
    assert_eq!(replica_status["replication"]["role"], "replica");
    assert_eq!(replica_status["replication"]["term"], 1);
    // The state file holds the members' slots by now, but no term.
    let state: serde_json::Value = std::fs::read_to_string(&state_file)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    assert_eq!(
        state["term"].as_u64().unwrap_or(0),
        0,
        "a refusal must not hand out a term: {state}"
    );
    coordinator.stop();

    // Without the ghost, the replica's position is enough: promote it with term 2.
    let restarted = Instant::now();
    // On the same port, so that Prometheus keeps scraping it.
    let coordinator = Coordinator::start_at(
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        dir.path(),
        "two",
        &format!("{common}members:\n{members}"),
        "127.0.0.1",
        coordinator_port,
    );
    let status = wait_for("the failover", Duration::from_secs(60), || async {
        let s = coordinator.status().await?;
        (s["primary"] == "b" && s["term"] == 2).then_some(s)
    })
    .await;
    let took = restarted.elapsed();
    eprintln!(
        "failover {}ms after the coordinator started (threshold {}ms)",
        took.as_millis(),
        THRESHOLD.as_millis()
    );
    assert!(
        took < THRESHOLD + Duration::from_secs(5),
        "failover took {took:?}; log:\n{}",
        coordinator.log()
    );
    let action = &status["last_action"];
    assert_eq!(action["decision"]["action"]["kind"], "failover", "{status}");
    assert_eq!(action["decision"]["action"]["candidate"], "b");
    assert_eq!(action["decision"]["action"]["term"], 2);
    assert!(
        action["outcome"]
            .as_str()
            .unwrap()
            .starts_with("promoted b with term 2"),
        "{status}"
    );
    let replica_status = replica_manager.status().await;
    assert_eq!(
        replica_status["replication"]["role"], "primary",
        "{replica_status}"
    );
    assert_eq!(replica_status["replication"]["term"], 2);
    assert_eq!(replica_status["timeline"], 2);
    // b is alone under `required`: it was promoted with the placeholder standby name, so a
    // normal commit waits for a standby (tests/synchronous.rs); this one commits locally.
    assert!(
        replica_status["replication"]["synchronous_standby_names"]
            .as_str()
            .is_some_and(|n| n.contains("pgsteward_no_standby")),
        "{replica_status}"
    );
    exec(
        replica.pg_port,
        "SET synchronous_commit = local; INSERT INTO t VALUES (101)",
    )
    .await
    .unwrap();
    let count = pgsteward_testkit::sql_value(replica.pg_port, PASSWORD, "SELECT count(*) FROM t")
        .await
        .unwrap();
    assert_eq!(count, "101");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(state["term"], 2);
    assert_eq!(state["primary"], "b");
    assert_eq!(
        coordinator.metric("pgsteward_coordinator_term").await,
        Some(2.0)
    );
    assert_eq!(
        coordinator
            .metric("pgsteward_coordinator_failovers_total")
            .await,
        Some(1.0)
    );
    assert_eq!(
        coordinator
            .metric("pgsteward_coordinator_member_up{member=\"a\"}")
            .await,
        Some(0.0)
    );
    // The new primary stays put: no second promotion.
    let later = wait_for("a few more rounds", Duration::from_secs(10), || async {
        let s = coordinator.status().await?;
        (s["last_decision"]["decision"]["action"]["reason"] == "primary b is healthy").then_some(s)
    })
    .await;
    assert_eq!(later["failovers"], 1, "{later}");
    assert_eq!(later["term"], 2, "{later}");
    // The failover shows in Prometheus; the refusal rule stops once rounds stop refusing
    // (its 10-minute window keeps it firing within this test, which is what paging wants).
    prometheus
        .wait_alert("PgstewardFailoverHappened", "firing", ALERT)
        .await;
}

async fn hang_fails_over_then_fences_the_stale_primary(version: PgVersion) {
    let primary = Instance::new(ManagerOptions::new(
        &pgsteward_testkit::pgsteward_bin().display().to_string(),
        version,
    ));
    let primary_manager = primary.spawn();
    primary_manager.wait_ready(READY).await;
    exec(primary.pg_port, "CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let replica = replica_of(version, primary.pg_port);
    let replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;

    let dir = ScratchDir::new();
    let state_file = dir.join("state.json");
    // A term handed out by an earlier coordinator run: never reused.
    std::fs::write(&state_file, r#"{"term": 4, "primary": null}"#).unwrap();
    let coordinator = start_coordinator(
        &dir,
        "async",
        &format!(
            "state_file: {}\npoll_interval: 250ms\nrequest_timeout: 500ms\n\
             failure_threshold: {}ms\nmembers:\n{}{}",
            state_file.display(),
            THRESHOLD.as_millis(),
            member("a", &primary),
            member("b", &replica)
        ),
    );
    wait_for("the coordinator to see the primary", READY, || async {
        let s = coordinator.status().await?;
        let members = s["members"].as_array()?;
        (s["primary"] == "a" && members.iter().all(|m| m["healthy"] == true)).then_some(())
    })
    .await;
    exec(
        primary.pg_port,
        "INSERT INTO t SELECT generate_series(1, 50)",
    )
    .await
    .unwrap();
    wait_for("rows on the replica", READY, || async {
        let n = pgsteward_testkit::sql_value(replica.pg_port, PASSWORD, "SELECT count(*) FROM t")
            .await
            .ok()?;
        (n == "50").then_some(())
    })
    .await;

    let manager_pid = Pid::from_raw(primary_manager.pid().await);
    let postmaster = Pid::from_raw(primary_manager.postmaster_host_pid().await.unwrap());
    kill(manager_pid, Signal::SIGSTOP).unwrap();
    kill(postmaster, Signal::SIGSTOP).unwrap();
    let hung = Instant::now();
    let status = wait_for("the failover", Duration::from_secs(60), || async {
        let s = coordinator.status().await?;
        (s["primary"] == "b").then_some(s)
    })
    .await;
    let took = hung.elapsed();
    eprintln!(
        "hang: promoted {}ms after SIGSTOP (threshold {}ms)",
        took.as_millis(),
        THRESHOLD.as_millis()
    );
    assert!(took < THRESHOLD + Duration::from_secs(3), "took {took:?}");
    assert_eq!(status["term"], 5, "{status}");
    let replica_status = replica_manager.status().await;
    assert_eq!(replica_status["replication"]["term"], 5, "{replica_status}");
    exec(replica.pg_port, "INSERT INTO t VALUES (51)")
        .await
        .unwrap();

    // The old primary resumes, still a primary of term 1: fenced, then re-admitted as a
    // standby of the new primary (it never writes as a second primary).
    kill(postmaster, Signal::SIGCONT).unwrap();
    kill(manager_pid, Signal::SIGCONT).unwrap();
    // Without an archive, pg_rewind may miss recycled WAL of the old timeline: then the
    // instance stays fenced and says why (replication.rewind_failure = fence).
    let settled = wait_fenced_or_readmitted(&primary, &replica, 5).await;
    assert_stale_primary_settled(&settled, &replica, 5);
    let s = coordinator.status().await.unwrap();
    assert_eq!(
        s["last_action"]["decision"]["action"]["kind"], "fence",
        "{s}"
    );
    assert_eq!(
        s["last_action"]["decision"]["action"]["members"][0], "a",
        "{s}"
    );
    assert_eq!(s["primary"], "b", "{s}");
    assert_eq!(s["failovers"], 1, "{s}");
}

async fn postgres_down_fences_then_promotes(version: PgVersion) {
    let mut options = ManagerOptions::new(
        &pgsteward_testkit::pgsteward_bin().display().to_string(),
        version,
    );
    // The manager waits a minute before restarting a crashed postmaster.
    options.args = vec!["--set=restart.initial_backoff=60s".into()];
    let primary = Instance::new(options);
    let primary_manager = primary.spawn();
    primary_manager.wait_ready(READY).await;
    exec(primary.pg_port, "CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let replica = replica_of(version, primary.pg_port);
    let replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;
    let dir = ScratchDir::new();
    let coordinator = start_coordinator(
        &dir,
        "pgdown",
        &format!(
            "state_file: {}\npoll_interval: 250ms\nrequest_timeout: 500ms\n\
             failure_threshold: {}ms\nmembers:\n{}{}",
            dir.join("state.json").display(),
            THRESHOLD.as_millis(),
            member("a", &primary),
            member("b", &replica)
        ),
    );
    wait_for("the coordinator to see the primary", READY, || async {
        let s = coordinator.status().await?;
        let members = s["members"].as_array()?;
        (s["primary"] == "a" && members.iter().all(|m| m["healthy"] == true)).then_some(())
    })
    .await;
    let postmaster = primary_manager.postmaster_host_pid().await.unwrap();
    kill(Pid::from_raw(postmaster), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let status = wait_for("the failover", Duration::from_secs(60), || async {
        let s = coordinator.status().await?;
        (s["primary"] == "b").then_some(s)
    })
    .await;
    let took = killed.elapsed();
    eprintln!(
        "postgres down: promoted {}ms after the kill",
        took.as_millis()
    );
    assert!(took < THRESHOLD + Duration::from_secs(3), "took {took:?}");
    let action = &status["last_action"];
    assert_eq!(action["decision"]["action"]["fence"][0], "a", "{status}");
    let outcome = action["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("promoted b with term 2") && outcome.contains("; fenced a"),
        "{outcome}"
    );
    assert!(
        action["decision"]["action"]["reason"]
            .as_str()
            .unwrap()
            .contains("postgres down"),
        "{status}"
    );
    let settled = wait_fenced_or_readmitted(&primary, &replica, 2).await;
    assert_stale_primary_settled(&settled, &replica, 2);
    let new = replica_manager.status().await;
    assert_eq!(new["replication"]["role"], "primary", "{new}");
    exec(replica.pg_port, "INSERT INTO t VALUES (1)")
        .await
        .unwrap();
}

/// Wait until the old primary is fenced or re-admitted (see `wait_readmitted`); its status.
/// A stale primary that `wait_fenced_or_readmitted` found fenced is fenced as the old
/// primary, or already told to follow the new one with `term` (the re-admission under way,
/// postgres not yet started as a standby), or refused a rewind.
fn assert_stale_primary_settled(settled: &Value, new: &Instance, term: u64) {
    if settled["state"] != "fenced" {
        return;
    }
    let r = &settled["replication"];
    let readmitting = r["role"] == "replica"
        && r["term"] == term
        && r["upstream"] == format!("127.0.0.1:{}", new.pg_port).as_str();
    assert!(
        r["role"] == "primary"
            || readmitting
            || settled["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("rewind_failure")),
        "{settled}"
    );
}

async fn wait_fenced_or_readmitted(old: &Instance, new: &Instance, term: u64) -> Value {
    let upstream = format!("127.0.0.1:{}", new.pg_port);
    wait_for(
        "the stale primary fenced or re-admitted",
        Duration::from_secs(90),
        || async {
            let s = http::get(&format!("{}/pg/status", old.api())).await?.json();
            let r = &s["replication"];
            let readmitted = r["role"] == "replica"
                && r["term"] == term
                && r["upstream"] == upstream.as_str()
                && s["postgres_up"] == true;
            (readmitted || s["state"] == "fenced").then_some(s)
        },
    )
    .await
}

pgsteward_testkit::for_each_version!(refuse_then_fail_over);
pgsteward_testkit::for_each_version!(hang_fails_over_then_fences_the_stale_primary);
pgsteward_testkit::for_each_version!(postgres_down_fences_then_promotes);
