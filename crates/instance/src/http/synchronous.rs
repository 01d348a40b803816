//! Authenticated `POST /pg/synchronous`: the coordinator sets the primary's
//! `synchronous_standby_names` (term-checked, validated, persisted; see
//! `replication::synchronous`).

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use pgsteward_api::{SynchronousRequest, SynchronousResponse};

use super::error::ApiError;
use super::extract::ApiJson;
use super::role::role_change_error;
use super::server::{AppState, Route, RouteDoc};
use crate::replication::synchronous;

const ERRORS: &[(u16, &str)] = &[
    (
        400,
        "Malformed body, or names that are not ANY/FIRST k (\"name\", ...) with plain names.",
    ),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (
        409,
        "This instance is a standby, or the term is not the one it is primary of.",
    ),
    (413, "Body too large."),
    (500, "Writing the setting or reloading postgres failed."),
];

pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            path: "/pg/synchronous",
            methods: &["post"],
            summary: "Set the synchronous standby names",
            description: "Sets synchronous_standby_names on the primary of the given term (the coordinator computes it from the healthy standbys): validated, persisted in the data directory so a restarted primary keeps it, rendered into the manager's include file and reloaded; the answer is 200 only once postgres runs with the names (a call that could not reload, for instance while postgres starts, fails and its retry completes it). Idempotent (changed=false when already in effect). An empty value makes replication asynchronous.",
            authenticated: true,
            query: &[],
            request: Some(|g| g.subschema_for::<SynchronousRequest>()),
            response: Some(|g| g.subschema_for::<SynchronousResponse>()),
            errors: ERRORS,
        },
        handler: post(set_synchronous),
    }]
}

/// The body as received, every field optional so that a missing one is a 400 naming it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    term: Option<u64>,
    names: Option<String>,
}

async fn set_synchronous(
    State(shared): State<AppState>,
    ApiJson(body): ApiJson<Body>,
) -> Result<Json<SynchronousResponse>, ApiError> {
    let (Some(term), Some(names)) = (body.term, body.names) else {
        return Err(ApiError::BadRequest(
            "the body must carry the term and the names: {\"term\": N, \"names\": \"ANY 1 (\\\"b\\\")\"}".into(),
        ));
    };
    tracing::info!(term, names = %names, "synchronous standby names requested through the API");
    synchronous::apply(shared, term, &names)
        .await
        .map(Json)
        .map_err(role_change_error)
}
