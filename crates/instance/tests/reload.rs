//! Configuration reload: a reloadable change applies without a restart, a restart-only change
//! shows `pending_restart`, an invalid file is refused whole (412) and changes nothing, and a
//! restart applies what was pending.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::sql_value;

async fn reload_applies_and_reports_pending_restart(version: PgVersion) {
    let instance = Instance::new(options(version));
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let postmaster = manager.postmaster_host_pid().await;
    let port = instance.pg_port;
    let first_hash = manager.status().await["config_hash"].clone();

    // Reloadable: picked up from the file change alone, no restart.
    instance.write_config("    work_mem: 12MB\n");
    wait_for(
        "work_mem = 12MB after the file changed",
        Duration::from_secs(30),
        || async {
            (sql_value(port, PASSWORD, "SHOW work_mem").await.ok()? == "12MB").then_some(())
        },
    )
    .await;
    let status = manager.status().await;
    assert_eq!(status["pending_restart"], false, "{status}");
    assert_ne!(status["config_hash"], first_hash);
    assert_eq!(
        manager.postmaster_host_pid().await,
        postmaster,
        "a reloadable change restarted postgres"
    );

    // Restart-only: pending_restart in status and metrics; SIGHUP triggers the reload.
    instance.write_config("    work_mem: 12MB\n    max_prepared_transactions: \"7\"\n");
    manager.signal(Signal::SIGHUP).await;
    let status = wait_for("pending_restart", Duration::from_secs(30), || async {
        let status = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        (status["pending_restart"] == true).then_some(status)
    })
    .await;
    assert_eq!(
        status["pending_restart_parameters"],
        serde_json::json!(["max_prepared_transactions"])
    );
    assert_eq!(
        metric(&instance.metrics(), "pgsteward_pending_restart").await,
        Some(1.0)
    );
    assert_eq!(
        sql_value(port, PASSWORD, "SHOW max_prepared_transactions")
            .await
            .ok()
            .as_deref(),
        Some("0")
    );

    // A manager setting (here `log`) keeps its running value and says the manager must restart.
    instance.write_config("    work_mem: 12MB\n    max_prepared_transactions: \"7\"\n");
    let mut text = std::fs::read_to_string(&instance.config_path).unwrap_or_default();
    text.push_str("log:\n  level: debug\n");
    std::fs::write(&instance.config_path, text).unwrap_or_else(|e| panic!("{e}"));
    let r = http::request(
        "POST",
        &format!("{}/pg/reload", instance.api()),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await
    .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["pending_manager_restart"],
        serde_json::json!(["log"])
    );
    let status = manager.status().await;
    assert_eq!(
        status["pending_manager_restart"],
        serde_json::json!(["log"])
    );
    assert_eq!(
        metric(&instance.metrics(), "pgsteward_pending_manager_restart").await,
        Some(1.0)
    );

    // Invalid: refused whole with 412, nothing rendered, old values stay.
    let hash_before = manager.status().await["config_hash"].clone();
    let rendered_before =
        std::fs::read_to_string(instance.pgdata.join("pgsteward.conf")).unwrap_or_default();
    instance.write_config("    work_mem: 99MB\n    archive_command: /bin/true\n");
    let r = http::request(
        "POST",
        &format!("{}/pg/reload", instance.api()),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await
    .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(r.status, 412, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "invalid_configuration");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("archive_command"),
        "{}",
        r.body
    );
    assert_eq!(
        std::fs::read_to_string(instance.pgdata.join("pgsteward.conf")).unwrap_or_default(),
        rendered_before
    );
    assert_eq!(manager.status().await["config_hash"], hash_before);
    assert_eq!(
        sql_value(port, PASSWORD, "SHOW work_mem")
            .await
            .ok()
            .as_deref(),
        Some("12MB")
    );
    assert!(metric(
        &instance.metrics(),
        "pgsteward_config_reload_failures_total"
    )
    .await
    .is_some_and(|n| n >= 1.0));

    // Valid again, then a restart applies the pending parameter.
    instance.write_config("    work_mem: 12MB\n    max_prepared_transactions: \"7\"\n");
    let r = http::request(
        "POST",
        &format!("{}/pg/restart", instance.api()),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await
    .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        sql_value(port, PASSWORD, "SHOW max_prepared_transactions")
            .await
            .ok()
            .as_deref(),
        Some("7")
    );
    let status = manager.status().await;
    assert_eq!(status["pending_restart"], false, "{status}");
    assert_ne!(manager.postmaster_host_pid().await, postmaster);

    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
}
for_each_version!(reload_applies_and_reports_pending_restart);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_pending_restarts_automatically() {
    let mut opts = options(PgVersion::V15);
    opts.args = vec!["--set=postgres.restart_on_pending=true".into()];
    let instance = Instance::new(opts);
    let manager = instance.spawn();
    manager.wait_ready(READY).await;
    let postmaster = manager.postmaster_host_pid().await;
    instance.write_config("    max_prepared_transactions: \"3\"\n");
    wait_for("the automatic restart", READY, || async {
        (sql_value(instance.pg_port, PASSWORD, "SHOW max_prepared_transactions")
            .await
            .ok()?
            == "3")
            .then_some(())
    })
    .await;
    assert_ne!(manager.postmaster_host_pid().await, postmaster);
}
