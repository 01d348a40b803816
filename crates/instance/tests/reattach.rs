//! Outside a PID namespace (systemd with `KillMode=process`): kill -9 of the manager leaves
//! postgres running, and a restarted manager re-attaches to the same postmaster instead of
//! starting a second one; it can then stop it cleanly.

mod common;

use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::sql_value;

async fn manager_restart_reattaches(version: PgVersion) {
    let instance = Instance::new(options(version));
    let mut first = instance.spawn();
    first.wait_ready(READY).await;
    let postmaster = first
        .postmaster_host_pid()
        .await
        .unwrap_or_else(|| panic!("no postmaster"));

    // A second manager on the same data directory is refused while the first one runs.
    let mut intruder = instance.spawn();
    assert_eq!(intruder.wait_exit(EXIT).await, 1, "{}", intruder.log());
    assert!(
        intruder.log().contains("another pgsteward already manages"),
        "{}",
        intruder.log()
    );
    assert_eq!(first.postmaster_host_pid().await, Some(postmaster));

    first.signal(Signal::SIGKILL).await;
    assert_eq!(first.wait_exit(EXIT).await, 128 + 9);
    assert!(proc::alive(postmaster), "postgres died with its manager");
    assert_eq!(
        sql_value(instance.pg_port, PASSWORD, "SELECT 42")
            .await
            .ok()
            .as_deref(),
        Some("42"),
        "postgres stopped serving without its manager"
    );

    let mut second = instance.spawn();
    second.wait_ready(READY).await;
    assert_eq!(
        second.postmaster_host_pid().await,
        Some(postmaster),
        "the manager did not re-attach"
    );
    assert!(
        second
            .log()
            .contains("re-attached to the running postmaster"),
        "{}",
        second.log()
    );
    let postmasters = proc::pids_matching(&format!("-D {}", instance.pgdata.display()));
    assert_eq!(
        postmasters,
        vec![postmaster],
        "a second postmaster was started"
    );
    assert_eq!(second.status().await["state"], "running");

    second.signal(Signal::SIGTERM).await;
    assert_eq!(second.wait_exit(EXIT).await, 0, "{}", second.log());
    assert!(!proc::alive(postmaster));
    assert_eq!(cluster_state(version, &instance.pgdata), "shut down");
}
for_each_version!(manager_restart_reattaches);
