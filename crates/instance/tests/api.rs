//! The HTTP API against a real instance: every route, authentication (none, wrong, right
//! token), malformed and oversized bodies, unknown routes and methods, load-balancer checks,
//! and the metrics listener.

mod common;

use common::*;
use nix::sys::signal::Signal;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_authentication_and_errors() {
    let instance = Instance::new(options(PgVersion::V15));
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let api = instance.api();
    let get = |path: &str| {
        let url = format!("{api}{path}");
        async move {
            http::get(&url)
                .await
                .unwrap_or_else(|| panic!("no answer from {url}"))
        }
    };
    let call = |method: &'static str, path: &str, auth: Option<String>, body: String| {
        let url = format!("{api}{path}");
        async move {
            let mut headers: Vec<(&str, String)> =
                vec![("content-type", "application/json".into())];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http::request(method, &url, &refs, &body)
                .await
                .unwrap_or_else(|| panic!("no answer from {url}"))
        }
    };

    // Probes.
    for path in ["/healthz", "/startupz", "/readyz"] {
        let r = get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.json()["ok"], true);
        assert_eq!(r.json()["state"], "running");
    }
    // Load-balancer checks (Patroni convention).
    assert_eq!(get("/primary").await.status, 200);
    let head = call("HEAD", "/primary", None, String::new()).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let replica = get("/replica").await;
    assert_eq!(replica.status, 503);
    assert_eq!(replica.json()["reason"], "instance is a primary");
    assert_eq!(get("/replica?lag=16MB").await.status, 503);
    let bad_lag = get("/replica?lag=soon").await;
    assert_eq!(bad_lag.status, 400);
    assert_eq!(bad_lag.json()["error"]["code"], "bad_request");
    // Status.
    let status = get("/pg/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["role"], "primary");

    // Mutating routes: 401 without a token, 403 with a wrong one, 200 with the right one.
    for path in ["/pg/reload", "/pg/restart"] {
        let none = call("POST", path, None, String::new()).await;
        assert_eq!(none.status, 401, "{path}");
        assert_eq!(none.json()["error"]["code"], "unauthorized");
        assert_eq!(
            none.headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let not_bearer = call("POST", path, Some(format!("Basic {TOKEN}")), String::new()).await;
        assert_eq!(not_bearer.status, 401, "{path}");
        let wrong = call("POST", path, Some(bearer("wrong-token")), String::new()).await;
        assert_eq!(wrong.status, 403, "{path}");
        assert_eq!(wrong.json()["error"]["code"], "forbidden");
    }
    let reload = call("POST", "/pg/reload", Some(bearer(TOKEN)), String::new()).await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    assert_eq!(
        reload.json()["pending_restart_parameters"],
        serde_json::json!([])
    );

    // Malformed, unknown-field and oversized bodies are refused before anything happens.
    let before = manager.postmaster_host_pid().await;
    for body in [
        "{\"mode\":",
        "[1,2",
        "{\"mode\":\"sideways\"}",
        "{\"mode\":\"fast\",\"extra\":1}",
    ] {
        let r = call("POST", "/pg/restart", Some(bearer(TOKEN)), body.to_owned()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "bad_request");
    }
    let huge = format!(
        "{{\"mode\":\"fast\",\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let r = call("POST", "/pg/restart", Some(bearer(TOKEN)), huge).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    assert_eq!(
        manager.postmaster_host_pid().await,
        before,
        "a refused request restarted postgres"
    );

    // A real restart.
    let restart = call(
        "POST",
        "/pg/restart",
        Some(bearer(TOKEN)),
        "{\"mode\":\"fast\"}".into(),
    )
    .await;
    assert_eq!(restart.status, 200, "{}", restart.body);
    let body = restart.json();
    assert_ne!(body["postmaster_pid"], body["previous_postmaster_pid"]);
    assert_eq!(get("/readyz").await.status, 200);

    // Unknown routes and methods.
    let missing = get("/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    let wrong_method = call("DELETE", "/pg/status", None, String::new()).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json()["error"]["code"], "method_not_allowed");
    assert_eq!(
        call("GET", "/pg/restart", None, String::new()).await.status,
        405
    );

    // Metrics on their own listener.
    let metrics = instance.metrics();
    assert_eq!(metric(&metrics, "pgsteward_collector_up").await, Some(1.0));
    assert_eq!(metric(&metrics, "pgsteward_postgres_up").await, Some(1.0));
    assert_eq!(
        metric(&metrics, "pgsteward_manager_state{state=\"running\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "pgsteward_manager_state{state=\"starting\"}").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&metrics, "pgsteward_postgres_crash_restarts_total").await,
        Some(0.0)
    );
    assert!(metric(&metrics, "pgsteward_pg_postmaster_start_time")
        .await
        .is_some_and(|t| t > 1.6e9));
    assert_eq!(
        http::get(&format!("{metrics}/pg/status"))
            .await
            .map(|r| r.status),
        Some(404)
    );
    assert_eq!(
        http::get(&format!("{api}/metrics")).await.map(|r| r.status),
        Some(404)
    );

    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0);
    assert!(!manager.log().contains(TOKEN), "the token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_routes_are_disabled_without_a_token_file() {
    let opts = options(PgVersion::V15);
    let instance = Instance::new(opts);
    let text = std::fs::read_to_string(&instance.config_path).unwrap_or_default();
    let without: String = text
        .lines()
        .filter(|l| !l.contains("token_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    instance.dir.write("pgsteward.yaml", &without);
    let manager = instance.spawn_with(&[]);
    manager.wait_ready(READY).await;
    let r = http::request(
        "POST",
        &format!("{}/pg/reload", instance.api()),
        &[("authorization", "Bearer anything")],
        "",
    )
    .await;
    let r = r.unwrap_or_else(|| panic!("no answer"));
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("no http.token_file"));
}
