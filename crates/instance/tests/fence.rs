//! Fencing through the API (PG15 and PG18): `POST /pg/fence` stops postgres and keeps it
//! stopped (also across a manager restart) while the manager serves probes, status and
//! metrics; `POST /pg/unfence` starts it again; both are idempotent and authenticated.

mod common;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

async fn status(instance: &Instance) -> Option<Value> {
    Some(
        http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json(),
    )
}

async fn fence_stops_postgres_and_survives_a_restart(version: PgVersion) {
    let instance = Instance::new(options(version));
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let (code, _) = post(&instance, "/pg/fence", None, "").await;
    assert_eq!(code, 401);
    let (code, body) = post(&instance, "/pg/fence", Some(TOKEN), "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, serde_json::json!({"fenced": true, "changed": true}));
    let fenced = status(&instance).await.unwrap_or_default();
    assert_eq!(fenced["state"], "fenced", "{fenced}");
    assert_eq!(fenced["postgres_up"], false, "{fenced}");
    assert!(pgsteward_testkit::manager::postmaster_pid(&instance.pgdata).is_none());
    let get = |path: &'static str| {
        let url = format!("{}{path}", instance.api());
        async move { http::get(&url).await.map(|r| r.status) }
    };
    assert_eq!(get("/readyz").await, Some(503));
    assert_eq!(get("/primary").await, Some(503));
    assert_eq!(get("/healthz").await, Some(200));
    assert_eq!(
        metric(
            &instance.metrics(),
            "pgsteward_manager_state{state=\"fenced\"}"
        )
        .await,
        Some(1.0)
    );
    let (code, body) = post(&instance, "/pg/fence", Some(TOKEN), "").await;
    assert_eq!((code, body["changed"].clone()), (200, Value::Bool(false)));
    let (code, body) = post(&instance, "/pg/promote", Some(TOKEN), r#"{"term":5}"#).await;
    assert_eq!(code, 409, "{body}");

    // The fence outlives the manager.
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
    let manager = instance.spawn();
    wait_for("the restarted manager to be fenced", READY, || async {
        (status(&instance).await?["state"] == "fenced").then_some(())
    })
    .await;
    assert!(pgsteward_testkit::manager::postmaster_pid(&instance.pgdata).is_none());

    let (code, body) = post(&instance, "/pg/unfence", Some(TOKEN), "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, serde_json::json!({"fenced": false, "changed": true}));
    manager.wait_ready(READY).await;
    assert_eq!(query(&instance, "SELECT 1").await, "1");
    let (code, body) = post(&instance, "/pg/unfence", Some(TOKEN), "").await;
    assert_eq!((code, body["changed"].clone()), (200, Value::Bool(false)));
    assert!(!instance.pgdata.join("pgsteward.fenced").exists());
}
for_each_version!(fence_stops_postgres_and_survives_a_restart);
