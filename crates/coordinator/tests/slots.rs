//! Slot of a removed member (PG15 and PG18), on the three-instance cluster of
//! `pgsteward_testkit::cluster`: the coordinator records every member's slot in its state
//! file; while `c` is down but still configured, its inactive slot on the primary is kept;
//! once the coordinator runs without `c` in its configuration, the primary drops it, and only
//! it. (Slots a demoted primary keeps are covered by `switchover.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use pgsteward_testkit::cluster::{Cluster, ClusterOptions};
use pgsteward_testkit::{wait_for, PgVersion};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

async fn removed_members_slot_is_dropped(version: PgVersion) {
    let mut cluster = Cluster::start(ClusterOptions::new(
        &pgsteward_testkit::pgsteward_bin(),
        Path::new(env!("CARGO_BIN_EXE_pgsteward-coordinator")),
        version,
    ))
    .await;
    let state_file = cluster.dir.path().join("state.json");
    let recorded = serde_json::json!({
        "a": cluster.slot_of("a"),
        "b": cluster.slot_of("b"),
        "c": cluster.slot_of("c"),
    });
    wait_for("the members' slots in the state file", DEADLINE, || async {
        let text = std::fs::read_to_string(&state_file).ok()?;
        let state: Value = serde_json::from_str(&text).ok()?;
        (state["member_slots"] == recorded).then_some(())
    })
    .await;
    cluster.wait_slots_of("a", &["b", "c"], DEADLINE).await;

    // c goes down: still a member, so its slot stays while the coordinator watches it fail.
    cluster.member_mut("c").manager = None;
    wait_for(
        "the coordinator to see c down for 3 s",
        DEADLINE,
        || async {
            let status = cluster.coordinator.status().await?;
            let members = status["members"].as_array()?;
            let c = members.iter().find(|m| m["name"] == "c")?;
            (c["unhealthy_for_ms"].as_u64()? >= 3000).then_some(())
        },
    )
    .await;
    let slots = cluster.member_status("a").await.unwrap()["replication"]["slots"].clone();
    assert_eq!(
        slots.as_array().map(|s| s.len()),
        Some(2),
        "a configured member's slot must be kept while it is down: {slots}"
    );
    assert!(
        slots
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["slot_name"] == cluster.slot_of("c").as_str() && s["active"] == false),
        "{slots}"
    );

    // c is removed from the configuration: the primary drops its slot, and only it.
    cluster.restart_coordinator_with(&["a", "b"]);
    cluster.wait_slots_of("a", &["b"], DEADLINE).await;
    wait_for("the drop counted", DEADLINE, || async {
        let dropped = cluster
            .coordinator
            .metric("pgsteward_coordinator_slots_dropped_total")
            .await?;
        (dropped == 1.0).then_some(())
    })
    .await;
    assert!(
        cluster
            .coordinator
            .log()
            .contains("stale replication slots dropped"),
        "{}",
        cluster.coordinator.log()
    );
    // b still streams through its slot.
    let b = cluster.member_status("b").await.unwrap();
    assert_eq!(
        b["replication"]["receiver"]["wal_receiver_status"], "streaming",
        "{b}"
    );
}

pgsteward_testkit::for_each_version!(removed_members_slot_is_dropped);
