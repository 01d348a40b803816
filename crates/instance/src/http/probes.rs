//! Kubernetes probes: `/healthz` (liveness: the manager works; postgres restarts are its own
//! business), `/startupz` (postgres accepted connections at least once since the manager
//! started), `/readyz` (postgres accepts connections now).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use pgsteward_api::{InstanceState, ProbeBody};
use schemars::SchemaGenerator;

use super::server::{AppState, Route, RouteDoc};

/// Answer a probe: 200 with `ok: true`, or 503.
pub fn probe_response(
    ok: bool,
    state: InstanceState,
    reason: impl Into<String>,
) -> (StatusCode, Json<ProbeBody>) {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(ProbeBody {
            ok,
            state,
            reason: reason.into(),
        }),
    )
}

fn probe_schema(g: &mut SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<ProbeBody>()
}

pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                path: "/healthz",
                methods: &["get", "head"],
                summary: "Liveness probe",
                description: "200 while the manager works (postgres restarts included); 503 once it has failed or stopped.",
                authenticated: false,
                query: &[],
                request: None,
                response: Some(probe_schema),
                errors: &[(503, "The manager failed or is stopping.")],
            },
            handler: get(healthz),
        },
        Route {
            doc: RouteDoc {
                path: "/startupz",
                methods: &["get", "head"],
                summary: "Startup probe",
                description: "200 once postgres has accepted connections since the manager started (bootstrap and crash recovery can take long).",
                authenticated: false,
                query: &[],
                request: None,
                response: Some(probe_schema),
                errors: &[(503, "Postgres has not accepted connections yet.")],
            },
            handler: get(startupz),
        },
        Route {
            doc: RouteDoc {
                path: "/readyz",
                methods: &["get", "head"],
                summary: "Readiness probe",
                description: "200 when the instance is running and postgres accepts connections now.",
                authenticated: false,
                query: &[],
                request: None,
                response: Some(probe_schema),
                errors: &[(503, "Postgres does not accept connections.")],
            },
            handler: get(readyz),
        },
    ]
}

async fn healthz(State(shared): State<AppState>) -> impl IntoResponse {
    let state = shared.state.current();
    let ok = !matches!(state, InstanceState::Failed | InstanceState::Stopped);
    probe_response(
        ok,
        state,
        if ok {
            "manager is running"
        } else {
            "manager failed or stopped"
        },
    )
}

async fn startupz(State(shared): State<AppState>) -> impl IntoResponse {
    let state = shared.state.current();
    // A manager that keeps postgres stopped on purpose (fenced, or awaiting its role) has
    // finished starting: a startup probe must not restart it in a loop.
    let waiting = matches!(state, InstanceState::AwaitingRole | InstanceState::Fenced);
    let started =
        (shared.started_once.load(Ordering::SeqCst) || waiting) && state != InstanceState::Failed;
    probe_response(
        started,
        state,
        if waiting {
            "the manager keeps postgres stopped on purpose (see /pg/status)"
        } else if started {
            "postgres started"
        } else {
            "postgres has not started yet"
        },
    )
}

async fn readyz(State(shared): State<AppState>) -> impl IntoResponse {
    let state = shared.state.current();
    if state != InstanceState::Running {
        return probe_response(false, state, format!("instance is {state}"));
    }
    match crate::status::live_facts(&shared).await {
        Some(_) => probe_response(true, state, "postgres accepts connections"),
        None => probe_response(false, state, "postgres does not accept connections"),
    }
}
