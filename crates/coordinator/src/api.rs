//! The coordinator's HTTP API: `GET /status` (term, primary, members, last decision and its
//! reason), `GET /metrics` (Prometheus) and `POST /switchover` (501 until the managers can
//! demote and follow).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::run::Shared;

/// The router (no listener: the caller binds it).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/switchover", post(switchover))
        .with_state(shared)
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.snapshot()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

async fn switchover() -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        Json(json!({
            "error": "switchover is not available yet: it needs POST /pg/demote and \
                      POST /pg/follow on the instance managers"
        })),
    )
        .into_response()
}
