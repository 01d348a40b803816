//! Authenticated role-change routes: `POST /pg/promote` (term-checked, idempotent for a retry
//! of the same term), `POST /pg/fence` and `POST /pg/unfence` (postgres stopped and kept
//! stopped, persisted, while the manager serves). Demote and follow are planned (issue 5).

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use std::time::Duration;

use pgsteward_api::{FenceResponse, PromoteRequest, PromoteResponse};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::extract::ApiJson;
use super::server::{AppState, Route, RouteDoc};
use crate::replication::promote::{self, PromoteError};
use crate::supervisor::shared::{CommandError, SupervisorCommand};

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

const FENCE_ERRORS: &[(u16, &str)] = &[
    (400, "Malformed body (it must be empty or {})."),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (409, "The manager is shutting down."),
    (413, "Body too large."),
    (500, "The fence marker could not be written or removed."),
];

pub fn routes() -> Vec<Route> {
    let mut routes = vec![Route {
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
    }];
    routes.push(Route {
        doc: RouteDoc {
            path: "/pg/fence",
            methods: &["post"],
            summary: "Fence the instance",
            description: "Stops postgres (fast shutdown) and keeps it stopped, across manager restarts, until POST /pg/unfence. The manager keeps serving; state becomes fenced, /readyz and /primary answer 503. Idempotent (changed=false when already fenced).",
            authenticated: true,
            query: &[],
            request: None,
            response: Some(|g| g.subschema_for::<FenceResponse>()),
            errors: FENCE_ERRORS,
        },
        handler: post(fence),
    });
    routes.push(Route {
        doc: RouteDoc {
            path: "/pg/unfence",
            methods: &["post"],
            summary: "Unfence the instance",
            description: "Removes the fence and starts postgres (answers at once; wait for /readyz). Idempotent (changed=false when not fenced).",
            authenticated: true,
            query: &[],
            request: None,
            response: Some(|g| g.subschema_for::<FenceResponse>()),
            errors: FENCE_ERRORS,
        },
        handler: post(unfence),
    });
    routes
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

async fn fence(
    State(shared): State<AppState>,
    ApiJson(_body): ApiJson<EmptyBody>,
) -> Result<Json<FenceResponse>, ApiError> {
    tracing::info!("fence requested through the API");
    let (tx, rx) = oneshot::channel();
    let limit = shared.config().shutdown.stop_delay + Duration::from_secs(60);
    send(&shared, SupervisorCommand::Fence { reply: tx }, rx, limit).await
}

async fn unfence(
    State(shared): State<AppState>,
    ApiJson(_body): ApiJson<EmptyBody>,
) -> Result<Json<FenceResponse>, ApiError> {
    tracing::info!("unfence requested through the API");
    let (tx, rx) = oneshot::channel();
    send(
        &shared,
        SupervisorCommand::Unfence { reply: tx },
        rx,
        Duration::from_secs(60),
    )
    .await
}

async fn send(
    shared: &AppState,
    command: SupervisorCommand,
    reply: oneshot::Receiver<Result<FenceResponse, CommandError>>,
    limit: Duration,
) -> Result<Json<FenceResponse>, ApiError> {
    shared
        .commands
        .send(command)
        .await
        .map_err(|_| ApiError::Conflict("the manager is shutting down".into()))?;
    match tokio::time::timeout(limit, reply).await {
        Ok(Ok(result)) => result.map(Json).map_err(ApiError::from),
        Ok(Err(_)) => Err(ApiError::Conflict("the manager is shutting down".into())),
        Err(_) => Err(ApiError::Internal(format!(
            "no answer within {} s",
            limit.as_secs()
        ))),
    }
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
