//! `POST /pg/synchronous` on a single primary (PG15 and PG18): authenticated (401), the names
//! validated (400) and the term checked (409); a 200 means postgres already runs with the
//! names (`SHOW` right after the answer); a repeated call answers `changed: false`. Names
//! persisted by an earlier call that could not reload postgres (the manager's file already
//! holds them, postgres does not) are put in effect by the next call, not mistaken for
//! applied. An empty value makes the primary asynchronous again.

mod common;

use common::*;
use serde_json::{json, Value};

/// `POST /pg/synchronous` with `body`.
async fn post_names(instance: &Instance, token: Option<&str>, body: &Value) -> (u16, Value) {
    post(instance, "/pg/synchronous", token, &body.to_string()).await
}

async fn synchronous_names_are_in_effect_when_answered(version: PgVersion) {
    let instance = Instance::new(options(version));
    let manager = instance.spawn();
    manager.wait_ready(READY).await;
    let status = manager.status().await;
    assert_eq!(status["replication"]["role"], "primary", "{status}");
    let term = status["replication"]["term"]
        .as_u64()
        .unwrap_or_else(|| panic!("no term: {status}"));

    let names = r#"ANY 1 ("nobody")"#;
    let body = json!({"term": term, "names": names});
    assert_eq!(post_names(&instance, None, &body).await.0, 401);
    let (code, answer) =
        post_names(&instance, Some(TOKEN), &json!({"term": term, "names": "*"})).await;
    assert_eq!(code, 400, "{answer}");
    let stale = json!({"term": term + 1, "names": names});
    let (code, answer) = post_names(&instance, Some(TOKEN), &stale).await;
    assert_eq!(code, 409, "{answer}");

    let (code, answer) = post_names(&instance, Some(TOKEN), &body).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["changed"], true, "{answer}");
    assert_eq!(
        query(&instance, "SHOW synchronous_standby_names").await,
        names
    );
    let (code, answer) = post_names(&instance, Some(TOKEN), &body).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["changed"], false, "{answer}");

    // Persisted, but neither rendered nor reloaded: what a call leaves behind when postgres
    // refused its connection after the names were stored.
    let pending = r#"FIRST 1 ("other")"#;
    let file = instance.pgdata.join("pgsteward.synchronous.json");
    std::fs::write(&file, json!({"term": term, "names": pending}).to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    instance.dir.chown_postgres(&file);
    assert_eq!(
        query(&instance, "SHOW synchronous_standby_names").await,
        names
    );
    let (code, answer) = post_names(
        &instance,
        Some(TOKEN),
        &json!({"term": term, "names": pending}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["changed"], true, "{answer}");
    assert_eq!(
        query(&instance, "SHOW synchronous_standby_names").await,
        pending
    );

    let (code, answer) =
        post_names(&instance, Some(TOKEN), &json!({"term": term, "names": ""})).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(query(&instance, "SHOW synchronous_standby_names").await, "");
    let status = manager.status().await;
    assert_eq!(
        status["replication"]["synchronous_standby_names"], "",
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_names_are_in_effect_when_answered_pg15() {
    synchronous_names_are_in_effect_when_answered(PgVersion::V15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_names_are_in_effect_when_answered_pg18() {
    synchronous_names_are_in_effect_when_answered(PgVersion::V18).await;
}
