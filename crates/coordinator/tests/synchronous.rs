//! Synchronous standby names applied by the coordinator (PG15 and PG18, three members from
//! `pgsteward_testkit::cluster`, `ANY 1` with `data_durability: required`): the primary gets
//! the healthy standbys' names; with both standbys gone it gets the placeholder and a commit
//! waits; when one standby is back its name is applied and the commit completes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use pgsteward_testkit::cluster::{Cluster, ClusterOptions};
use pgsteward_testkit::{wait_for, PgVersion};

const DEADLINE: Duration = Duration::from_secs(60);

/// Wait until the primary `a` runs with synchronous standby names satisfying `check`.
async fn wait_names(cluster: &Cluster, what: &str, check: impl Fn(&str) -> bool) -> String {
    wait_for(what, DEADLINE, || async {
        let s = cluster.member_status("a").await?;
        let names = s["replication"]["synchronous_standby_names"]
            .as_str()?
            .to_owned();
        check(&names).then_some(names)
    })
    .await
}

async fn required_names_follow_the_standbys(version: PgVersion) {
    let mut cluster = Cluster::start(ClusterOptions::new(
        &pgsteward_testkit::pgsteward_bin(),
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        version,
    ))
    .await;
    let b_name = format!("test-{}", cluster.member("b").instance.pg_port);
    let c_name = format!("test-{}", cluster.member("c").instance.pg_port);
    let names = wait_names(&cluster, "the standbys' names on the primary", |n| {
        n.starts_with("ANY 1 (") && n.contains(&b_name) && n.contains(&c_name)
    })
    .await;
    let coordinator = cluster.coordinator.status().await.unwrap();
    assert_eq!(coordinator["synchronous_standby_names"], names.as_str());
    // Persisted, so a restarted primary keeps it.
    let persisted = std::fs::read_to_string(
        cluster
            .member("a")
            .instance
            .pgdata
            .join("pgsteward.synchronous.json"),
    )
    .unwrap();
    assert!(persisted.contains(&b_name), "{persisted}");

    cluster
        .sql("a", "CREATE TABLE sync_probe (i int)")
        .await
        .unwrap();
    // Both standbys gone: the placeholder, and commits wait.
    cluster.member_mut("b").manager = None;
    cluster.member_mut("c").manager = None;
    wait_names(&cluster, "the placeholder on the primary", |n| {
        n.contains("pgsteward_no_standby")
    })
    .await;
    let port = cluster.member("a").instance.pg_port;
    let mut insert = tokio::spawn(async move {
        pgsteward_testkit::sql(
            port,
            "postgres",
            pgsteward_testkit::manager::PASSWORD,
            "postgres",
            "INSERT INTO sync_probe VALUES (1)",
        )
        .await
    });
    // A negative check needs a window: the commit must still wait after 3 s.
    let early = tokio::time::timeout(Duration::from_secs(3), &mut insert).await;
    assert!(
        early.is_err(),
        "a commit completed with no standby under data_durability: required: {early:?}"
    );
    // One standby back: its name is applied and the waiting commit completes.
    cluster.restart("b");
    wait_names(&cluster, "b's name on the primary again", |n| {
        n.contains(&b_name)
    })
    .await;
    let done = tokio::time::timeout(DEADLINE, &mut insert).await;
    assert!(
        matches!(done, Ok(Ok(Ok(_)))),
        "the waiting commit did not complete: {done:?}"
    );
}

pgsteward_testkit::for_each_version!(required_names_follow_the_standbys);
