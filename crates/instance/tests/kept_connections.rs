//! The manager's reads (status, probes, load-balancer checks, `/metrics`) reuse kept
//! sessions instead of connecting for each read; a terminated session is replaced on the next
//! read without an error showing; a read past its deadline drops its session instead of
//! queueing the next reads behind it; and a kept session never holds up a smart shutdown. Real
//! PostgreSQL 15 and 18.

mod common;

use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::sql;

/// The first column of every row of `query` on pg_stat_activity, as the superuser.
async fn activity(port: u16, query: &str) -> Vec<String> {
    let rows = sql(port, "postgres", PASSWORD, "postgres", query)
        .await
        .unwrap_or_else(|e| panic!("pg_stat_activity: {e:#}"));
    rows.into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
}

/// The manager's client sessions, as `pid@backend_start`, in order.
async fn manager_sessions(port: u16) -> Vec<String> {
    activity(
        port,
        "SELECT pid::text || '@' || backend_start::text FROM pg_stat_activity \
         WHERE application_name = 'pgsteward' AND backend_type = 'client backend' ORDER BY 1",
    )
    .await
}

/// One round of every kind of read the manager serves, each checked for a live answer.
async fn read_everything(instance: &Instance, manager: &pgsteward_testkit::manager::Manager) {
    let status = manager.status().await;
    assert_eq!(status["postgres_up"], true, "{status}");
    assert_eq!(status["role"], "primary", "{status}");
    assert_eq!(status["replication"]["role"], "primary", "{status}");
    for path in ["/readyz", "/primary"] {
        let response = http::get(&format!("{}{path}", instance.api()))
            .await
            .unwrap_or_else(|| panic!("{path} did not answer"));
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }
    let scrape = http::get(&format!("{}/metrics", instance.metrics()))
        .await
        .unwrap_or_else(|| panic!("/metrics did not answer"));
    assert!(
        scrape.body.contains("pgsteward_collector_up 1"),
        "{}",
        scrape.body
    );
    assert!(
        scrape
            .body
            .contains("pgsteward_pg_database_size_bytes{datname=\"postgres\"}"),
        "{}",
        scrape.body
    );
}

async fn reads_keep_their_sessions(version: PgVersion) {
    let instance = Instance::new(options(version));
    // A smart shutdown held up by a session would wait this long before going fast.
    let mut manager = instance.spawn_with(&[
        "--set=shutdown.smart_shutdown_timeout=300s".into(),
        "--set=shutdown.stop_delay=330s".into(),
    ]);
    manager.wait_ready(READY).await;

    read_everything(&instance, &manager).await;
    let kept = manager_sessions(instance.pg_port).await;
    assert!(
        (1..=2).contains(&kept.len()),
        "one session for status reads and one for database sizes expected: {kept:?}"
    );
    for _ in 0..10 {
        read_everything(&instance, &manager).await;
    }
    assert_eq!(
        manager_sessions(instance.pg_port).await,
        kept,
        "the reads opened new sessions"
    );

    // An administrator ends the manager's sessions: the next reads answer in full, on new
    // sessions.
    sql(
        instance.pg_port,
        "postgres",
        PASSWORD,
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgsteward'",
    )
    .await
    .unwrap_or_else(|e| panic!("terminating the manager's sessions: {e:#}"));
    read_everything(&instance, &manager).await;
    let replaced = manager_sessions(instance.pg_port).await;
    assert!(
        !replaced.is_empty(),
        "no session kept after the termination"
    );
    assert!(
        replaced.iter().all(|s| !kept.contains(s)),
        "a terminated session is still listed: {kept:?} then {replaced:?}"
    );

    // SIGTERM with sessions kept: a smart shutdown that finishes long before its timeout.
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
    let log = manager.log();
    assert!(
        !log.contains("escalating"),
        "the smart shutdown escalated: {log}"
    );
    assert_eq!(cluster_state(version, &instance.pgdata), "shut down");
}
for_each_version!(reads_keep_their_sessions);

/// `pg_ctl stop -m smart` run by hand (outside the manager) while the manager keeps its
/// sessions: postgres stops, because the manager drops them once `postmaster.pid` says
/// `stopping`.
async fn a_smart_stop_by_hand_is_not_held(version: PgVersion) {
    let instance = Instance::new(options(version));
    let manager = instance.spawn();
    manager.wait_ready(READY).await;
    read_everything(&instance, &manager).await;
    assert!(!manager_sessions(instance.pg_port).await.is_empty());

    let output = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(version.bin_dir().join("pg_ctl"))
        .args(["stop", "-m", "smart", "-t", "30", "-D"])
        .arg(&instance.pgdata)
        .output()
        .unwrap_or_else(|e| panic!("pg_ctl: {e}"));
    assert!(
        output.status.success(),
        "pg_ctl stop -m smart: {}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        manager.log()
    );
}
for_each_version!(a_smart_stop_by_hand_is_not_held);

/// The backend pid of the manager's session that last read the database sizes.
async fn sizes_session(port: u16) -> Option<i32> {
    activity(
        port,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgsteward' \
         AND query LIKE '%pg_database_size%' ORDER BY backend_start DESC LIMIT 1",
    )
    .await
    .first()
    .and_then(|pid| pid.parse().ok())
}

/// A read that outlives its deadline on a kept session: the scrape still answers, the session
/// is dropped (the next scrape reads the sizes on a new one instead of queueing behind the
/// hung one), and the hung backend ends once it runs again. The backend is made to hang by
/// stopping it with SIGSTOP.
async fn a_hung_read_drops_its_session(version: PgVersion) {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;

    let instance = Instance::new(options(version));
    let manager = instance.spawn();
    manager.wait_ready(READY).await;
    read_everything(&instance, &manager).await;
    let hung = sizes_session(instance.pg_port)
        .await
        .unwrap_or_else(|| panic!("no session read the database sizes"));

    kill(Pid::from_raw(hung), Signal::SIGSTOP).unwrap_or_else(|e| panic!("SIGSTOP {hung}: {e}"));
    // Whatever happens below, the stopped backend must run again (or postgres never stops).
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
        }
    }
    let resume = Resume(hung);

    // The sizes read on the stopped backend passes its deadline; the scrape answers anyway,
    // with the last sizes, and the probes and status are not held up by it.
    let scrape = http::get(&format!("{}/metrics", instance.metrics()))
        .await
        .unwrap_or_else(|| panic!("/metrics did not answer with a hung sizes read"));
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    let status = manager.status().await;
    assert_eq!(status["postgres_up"], true, "{status}");

    // The next scrape reads the sizes on a new session.
    read_everything(&instance, &manager).await;
    let replacement = sizes_session(instance.pg_port)
        .await
        .unwrap_or_else(|| panic!("no session read the database sizes after the hang"));
    assert_ne!(
        replacement,
        hung,
        "the next scrape used the hung session again\n{}",
        manager.log()
    );

    // Running again, the hung backend finds its query cancelled and its client gone, and ends.
    drop(resume);
    wait_for(
        "the backend of the hung read to end once it runs again",
        EXIT,
        || async {
            let query = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {hung}");
            (activity(instance.pg_port, &query).await == ["0"]).then_some(())
        },
    )
    .await;
}
for_each_version!(a_hung_read_drops_its_session);
