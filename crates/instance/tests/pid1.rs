//! The manager as PID 1 of a PID namespace (as in a container): orphans re-parented to it are
//! reaped, a killed postmaster is restarted, SIGTERM shuts down cleanly (exit 0), SIGQUIT
//! immediately (exit 2), and a crash loop makes it give up (exit 3).

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgsteward_testkit::sql_value;

async fn pid1_reaps_restarts_and_shuts_down(version: PgVersion) {
    let mut opts = options(version);
    opts.pid_namespace = true;
    opts.args = vec!["--set=metrics.namespace=cnpg".into()];
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let manager_pid = manager.pid().await;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{manager_pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .map(|l| l.split_whitespace().last() == Some("1")),
        Some(true),
        "manager is not PID 1 of its namespace"
    );

    // An orphaned grandchild: COPY TO PROGRAM starts a shell that backgrounds a sleeper and
    // exits once it has read what postgres writes (exiting before that made postgres's write
    // fail with EPIPE, now and then, on a loaded machine).
    let marker = "sleep 2.31";
    sql_value(
        instance.pg_port,
        PASSWORD,
        &format!("COPY (SELECT 1) TO PROGRAM 'sh -c \"({marker}) </dev/null >/dev/null 2>&1 & cat >/dev/null\"'; SELECT 1"),
    )
    .await
    .unwrap_or_else(|e| panic!("COPY TO PROGRAM: {e}"));
    let orphan = wait_for(
        "the orphan to be re-parented to the manager",
        Duration::from_secs(10),
        || async {
            proc::pids_matching(marker)
                .into_iter()
                .find(|pid| proc::stat(*pid).is_some_and(|(_, ppid)| ppid == manager_pid))
        },
    )
    .await;
    wait_for(
        "the orphan to exit and be reaped (no zombie left)",
        Duration::from_secs(15),
        || async { (!proc::exists(orphan)).then_some(()) },
    )
    .await;

    // kill -9 of the postmaster: the manager starts postgres again.
    let (_, second) = kill_postmaster_and_wait_for_new(&manager, &instance).await;
    assert!(proc::alive(second));
    manager.wait_ready(READY).await;
    assert_eq!(manager.status().await["crash_restarts"], 1);
    assert_eq!(
        metric(&instance.metrics(), "cnpg_postgres_crash_restarts_total").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&instance.metrics(), "cnpg_postgres_up").await,
        Some(1.0)
    );
    let host_view: Vec<i32> = proc::pids_matching(&format!("-D {}", instance.pgdata.display()));
    assert_eq!(host_view, vec![second], "exactly one postmaster expected");

    // SIGTERM: smart shutdown, exit 0, clean control file.
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
    assert_eq!(cluster_state(version, &instance.pgdata), "shut down");
    assert!(manager.log().contains("reaped orphaned process") || !proc::exists(orphan));

    // SIGQUIT: immediate shutdown, non-zero exit, crash recovery needed next time.
    let mut again = instance.spawn();
    again.wait_ready(READY).await;
    again.signal(Signal::SIGQUIT).await;
    assert_eq!(again.wait_exit(EXIT).await, 2, "{}", again.log());
    assert_eq!(cluster_state(version, &instance.pgdata), "in production");
}
for_each_version!(pid1_reaps_restarts_and_shuts_down);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_makes_the_manager_exit_non_zero() {
    let mut opts = options(PgVersion::V15);
    opts.pid_namespace = true;
    opts.args = vec![
        "--set=restart.max_crashes=2".into(),
        "--set=restart.initial_backoff=100ms".into(),
    ];
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let (_, second) = kill_postmaster_and_wait_for_new(&manager, &instance).await;
    kill(Pid::from_raw(second), Signal::SIGKILL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manager.wait_exit(EXIT).await, 3, "{}", manager.log());
    assert!(manager.log().contains("giving up"));
}
