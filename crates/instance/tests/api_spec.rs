//! `docs/api/openapi.yaml` and the router agree: every documented (path, method) is routed
//! (neither 404 nor 405 through the router, called without a socket), every route is
//! documented, and the file is what `cargo xtask codegen` would write.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use pgsteward::config::{Config, ConfigSources};
use pgsteward::metrics::Metrics;
use pgsteward::pgbin::PgBinaries;
use pgsteward::state::StateMachine;
use pgsteward::supervisor::shared::{RuntimeInfo, Shared};
use tower::ServiceExt;

fn spec_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.yaml")
}

fn offline_state() -> Arc<Shared> {
    let metrics = Metrics::new("pgsteward").unwrap_or_else(|e| panic!("{e}"));
    let (commands, _) = tokio::sync::mpsc::channel(1);
    let config = Config {
        pgdata: Some("/nonexistent".into()),
        ..Config::default()
    };
    Arc::new(Shared {
        state: StateMachine::new(metrics.clone()),
        metrics,
        bins: PgBinaries {
            bin_dir: "/nonexistent".into(),
            major: 15,
            version_line: String::new(),
        },
        pgdata: "/nonexistent".into(),
        os_user: "postgres".into(),
        sources: ConfigSources::default(),
        config: RwLock::new(config),
        runtime: Mutex::new(RuntimeInfo::default()),
        commands,
        token: RwLock::new(Some(b"t".to_vec())),
        started_once: AtomicBool::new(false),
        active_target: RwLock::new(None),
        executable: "/usr/bin/pgsteward".into(),
        archiver: std::sync::OnceLock::new(),
        api_tls: std::sync::OnceLock::new(),
        backups: pgsteward::backups::Backups::default(),
        drill: Mutex::new(None),
        ha: Mutex::new(None),
        reads: Default::default(),
    })
}

fn documented() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(spec_file())
        .unwrap_or_else(|e| panic!("reading openapi.yaml: {e}"));
    let spec: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing openapi.yaml: {e}"));
    let mut out = BTreeSet::new();
    if let Some(paths) = spec.get("paths").and_then(|p| p.as_mapping()) {
        for (path, item) in paths {
            for (method, _) in item.as_mapping().into_iter().flatten() {
                out.insert((
                    path.as_str().unwrap_or("").to_owned(),
                    method.as_str().unwrap_or("").to_owned(),
                ));
            }
        }
    }
    out
}

#[test]
fn spec_file_is_generated_from_code() {
    let on_disk = std::fs::read_to_string(spec_file()).unwrap_or_default();
    assert!(
        on_disk == pgsteward::http::openapi::spec_yaml(),
        "docs/api/openapi.yaml is stale: run `cargo xtask codegen`"
    );
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let from_code: BTreeSet<(String, String)> = pgsteward::http::server::route_docs()
        .iter()
        .flat_map(|doc| {
            doc.methods
                .iter()
                .map(|m| (doc.path.to_owned(), (*m).to_owned()))
        })
        .collect();
    assert_eq!(documented(), from_code);
    assert!(from_code.len() >= 12, "{from_code:?}");
}

#[tokio::test]
async fn router_serves_exactly_the_documented_routes() {
    let router = pgsteward::http::router(offline_state());
    for (path, method) in documented() {
        let method =
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
        let request = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header("authorization", "Bearer t")
            .body(Body::empty());
        let response = router
            .clone()
            .oneshot(request.unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} -> {status}"
        );
    }
    for (method, path, expected) in [
        (Method::GET, "/not/a/route", StatusCode::NOT_FOUND),
        (Method::PUT, "/pg/status", StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/pg/reload", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), expected, "{method} {path}");
    }
    // Offline: probes say 503, status still answers.
    let request = Request::builder()
        .uri("/readyz")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {})
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}
