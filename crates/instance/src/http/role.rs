//! Authenticated role-change routes: `POST /pg/promote` (term-checked, idempotent for a retry
//! of the same term). Demote, follow and fence are planned (issue 5).

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use pgsteward_api::{PromoteRequest, PromoteResponse};

use super::error::ApiError;
use super::extract::ApiJson;
use super::server::{AppState, Route, RouteDoc};
use crate::replication::promote::{self, PromoteError};

const PROMOTE_ERRORS: &[(u16, &str)] = &[
    (400, "Malformed body (the term is required)."),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (
        409,
        "Already a primary of another term, a term not greater than the current one (the message names the current term), or postgres not running.",
    ),
    (413, "Body too large."),
    (500, "The promotion or the checkpoint after it failed."),
];

pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            path: "/pg/promote",
            methods: &["post"],
            summary: "Promote this standby",
            description: "Promotes a standby to primary of the given term (greater than its current term): records the term, runs pg_promote (waiting for it), a CHECKPOINT, and persists the primary role. A retry with the term the instance was promoted in answers 200 with promoted=false.",
            authenticated: true,
            query: &[],
            request: Some(|g| g.subschema_for::<PromoteRequest>()),
            response: Some(|g| g.subschema_for::<PromoteResponse>()),
            errors: PROMOTE_ERRORS,
        },
        handler: post(promote_handler),
    }]
}

/// The body as received: `PromoteRequest` with the term optional, so that a missing term is
/// a 400 naming it (the extractor maps an empty body to the default).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    term: Option<u64>,
}

async fn promote_handler(
    State(shared): State<AppState>,
    ApiJson(body): ApiJson<PromoteBody>,
) -> Result<Json<PromoteResponse>, ApiError> {
    let Some(term) = body.term else {
        return Err(ApiError::BadRequest(
            "the body must carry the new term: {\"term\": N}".into(),
        ));
    };
    let request = PromoteRequest { term };
    tracing::info!(term = request.term, "promotion requested through the API");
    match promote::promote(&shared, request.term).await {
        Ok(response) => Ok(Json(response)),
        Err(PromoteError::Conflict { message, .. }) => Err(ApiError::Conflict(message)),
        Err(PromoteError::Failed(message)) => Err(ApiError::Internal(message)),
    }
}
