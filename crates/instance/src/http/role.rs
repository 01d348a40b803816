//! Authenticated role-change routes: `POST /pg/promote` (term-checked, idempotent for a retry
//! of the same term), `POST /pg/fence` and `POST /pg/unfence` (postgres stopped and kept
//! stopped, persisted, while the manager serves), `POST /pg/demote` and `POST /pg/follow`
//! (term-checked, idempotent; see `replication::demote` and `replication::follow`).

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use std::time::Duration;

use pgsteward_api::{
    ConfirmStandby, DemoteRequest, DemoteResponse, FenceResponse, FollowResponse, PromoteRequest,
    PromoteResponse, RoleChangeRequest,
};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::extract::ApiJson;
use super::server::{AppState, Route, RouteDoc};
use crate::replication::promote::{self, PromoteError};
use crate::replication::role::Upstream;
use crate::replication::{demote, follow, RoleChangeError};
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

const DEMOTE_ERRORS: &[(u16, &str)] = &[
    (400, "Malformed body (term and primary {host, port} are required)."),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (
        409,
        "A term smaller than the current one (the message names it), already a standby (use /pg/follow), the standby named in confirm_standby did not confirm in time (the instance stays primary), or the manager is shutting down.",
    ),
    (413, "Body too large."),
    (500, "The demotion failed (the message says what happened)."),
];

const FOLLOW_ERRORS: &[(u16, &str)] = &[
    (400, "Malformed body (term and primary {host, port} are required)."),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (
        409,
        "A term smaller than the current one (the message names it), a primary asked to follow in its own term, or the manager is shutting down.",
    ),
    (413, "Body too large."),
    (
        500,
        "pg_rewind failed and the instance is now fenced (replication.rewind_failure = fence), or the re-clone failed too; the message and /pg/status last_error say so.",
    ),
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
    routes.push(Route {
        doc: RouteDoc {
            path: "/pg/demote",
            methods: &["post"],
            summary: "Demote this primary to a standby",
            description: "Makes a primary a standby of the given primary in the given term (not smaller than the current term): CHECKPOINT, fast shutdown (so connected standbys receive everything up to the shutdown checkpoint), replica role, term and upstream persisted, restart as standby (answers once postgres is starting; wait for /pg/status). The answer carries the shutdown checkpoint location. A retry (already a standby of that primary in that term) answers 200 with changed=false and the same location. With confirm_standby, the standby of that application_name must confirm (flush_lsn) the WAL written up to the CHECKPOINT within timeout_ms before anything is shut down, else 409 and the instance stays primary.",
            authenticated: true,
            query: &[],
            request: Some(|g| g.subschema_for::<DemoteRequest>()),
            response: Some(|g| g.subschema_for::<DemoteResponse>()),
            errors: DEMOTE_ERRORS,
        },
        handler: post(demote_handler),
    });
    routes.push(Route {
        doc: RouteDoc {
            path: "/pg/follow",
            methods: &["post"],
            summary: "Repoint to a new primary",
            description: "Makes this instance (a standby, or a former primary, fenced or not) a standby of the given primary in the given term: stops postgres, runs pg_rewind against the new primary (with --restore-target-wal when an archive is configured; nothing is rewound when the histories did not diverge), persists the replica role, term and upstream, creates this instance's slot on the new primary and starts as standby. When pg_rewind fails, replication.rewind_failure decides: fence (500, the instance stays fenced and says why) or reclone (pg_basebackup from the new primary). A retry on a running standby of that primary in that term answers 200 with action=none.",
            authenticated: true,
            query: &[],
            request: Some(|g| g.subschema_for::<RoleChangeRequest>()),
            response: Some(|g| g.subschema_for::<FollowResponse>()),
            errors: FOLLOW_ERRORS,
        },
        handler: post(follow_handler),
    });
    routes
}

/// The body as received, with every field optional so that a missing one is a 400 naming it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleChangeBody {
    term: Option<u64>,
    primary: Option<pgsteward_api::UpstreamAddress>,
}

/// The term and new primary of a demote or follow body; 400 when either is missing or empty.
fn role_change(
    term: Option<u64>,
    primary: Option<pgsteward_api::UpstreamAddress>,
) -> Result<(u64, Upstream), ApiError> {
    match (term, primary) {
        (Some(term), Some(primary)) if !primary.host.is_empty() && primary.port != 0 => Ok((
            term,
            Upstream {
                host: primary.host,
                port: primary.port,
            },
        )),
        _ => Err(ApiError::BadRequest(
            "the body must carry the term and the new primary: {\"term\": N, \"primary\": {\"host\": H, \"port\": P}}".into(),
        )),
    }
}

pub(super) fn role_change_error(e: RoleChangeError) -> ApiError {
    match e {
        RoleChangeError::Conflict(message) => ApiError::Conflict(message),
        RoleChangeError::Invalid(message) => ApiError::BadRequest(message),
        RoleChangeError::Failed(message) => ApiError::Internal(message),
    }
}

/// `RoleChangeBody` plus the demotion's optional standby confirmation (a body of its own:
/// `deny_unknown_fields` keeps `confirm_standby` out of `/pg/follow`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoteBody {
    term: Option<u64>,
    primary: Option<pgsteward_api::UpstreamAddress>,
    #[serde(default)]
    confirm_standby: Option<ConfirmStandby>,
}

async fn demote_handler(
    State(shared): State<AppState>,
    ApiJson(body): ApiJson<DemoteBody>,
) -> Result<Json<DemoteResponse>, ApiError> {
    let confirm = body.confirm_standby;
    if confirm
        .as_ref()
        .is_some_and(|c| c.application_name.is_empty())
    {
        return Err(ApiError::BadRequest(
            "confirm_standby.application_name must not be empty".into(),
        ));
    }
    let (term, upstream) = role_change(body.term, body.primary)?;
    tracing::info!(term, upstream_host = %upstream.host, upstream_port = upstream.port, confirm_standby = ?confirm.as_ref().map(|c| &c.application_name), "demotion requested through the API");
    demote::demote(shared, term, upstream, confirm)
        .await
        .map(Json)
        .map_err(role_change_error)
}

async fn follow_handler(
    State(shared): State<AppState>,
    ApiJson(body): ApiJson<RoleChangeBody>,
) -> Result<Json<FollowResponse>, ApiError> {
    let (term, upstream) = role_change(body.term, body.primary)?;
    tracing::info!(term, upstream_host = %upstream.host, upstream_port = upstream.port, "follow requested through the API");
    follow::follow(shared, term, upstream)
        .await
        .map(Json)
        .map_err(role_change_error)
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
    #[serde(default)]
    synchronous_standby_names: Option<String>,
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
    let request = PromoteRequest {
        term,
        synchronous_standby_names: body.synchronous_standby_names,
    };
    tracing::info!(term = request.term, synchronous_standby_names = ?request.synchronous_standby_names, "promotion requested through the API");
    match promote::promote(
        &shared,
        request.term,
        request.synchronous_standby_names.as_deref(),
    )
    .await
    {
        Ok(response) => Ok(Json(response)),
        Err(PromoteError::Invalid(message)) => Err(ApiError::BadRequest(message)),
        Err(PromoteError::Conflict { message, .. }) => Err(ApiError::Conflict(message)),
        Err(PromoteError::Failed(message)) => Err(ApiError::Internal(message)),
    }
}
