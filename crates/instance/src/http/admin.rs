//! Authenticated mutating routes: `POST /pg/restart` and `POST /pg/reload`. Each sends a
//! command to the supervisor loop and answers when it is done.

use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use pgsteward_api::{ReloadResponse, RestartRequest, RestartResponse};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::extract::ApiJson;
use super::server::{AppState, Route, RouteDoc};
use crate::supervisor::shared::SupervisorCommand;

const AUTH_ERRORS_RESTART: &[(u16, &str)] = &[
    (400, "Malformed body."),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (
        409,
        "The instance is not running (starting, restarting, stopping).",
    ),
    (413, "Body too large."),
    (500, "Postgres did not come back."),
];

const AUTH_ERRORS_RELOAD: &[(u16, &str)] = &[
    (400, "Malformed body."),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (409, "The instance is stopping."),
    (
        412,
        "The configuration on disk is invalid; nothing was changed.",
    ),
    (413, "Body too large."),
];

pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                path: "/pg/restart",
                methods: &["post"],
                summary: "Restart postgres",
                description: "Stops postgres (fast by default), starts it again and answers once it accepts connections.",
                authenticated: true,
                query: &[],
                request: Some(|g| g.subschema_for::<RestartRequest>()),
                response: Some(|g| g.subschema_for::<RestartResponse>()),
                errors: AUTH_ERRORS_RESTART,
            },
            handler: post(restart),
        },
        Route {
            doc: RouteDoc {
                path: "/pg/reload",
                methods: &["post"],
                summary: "Reload the configuration",
                description: "Re-reads the configuration file and environment, re-renders the managed files, reloads postgres and reports parameters pending a restart.",
                authenticated: true,
                query: &[],
                request: None,
                response: Some(|g| g.subschema_for::<ReloadResponse>()),
                errors: AUTH_ERRORS_RELOAD,
            },
            handler: post(reload),
        },
    ]
}

async fn send<T>(
    shared: &AppState,
    command: SupervisorCommand,
    reply: oneshot::Receiver<Result<T, crate::supervisor::shared::CommandError>>,
    limit: Duration,
) -> Result<T, ApiError> {
    shared
        .commands
        .send(command)
        .await
        .map_err(|_| ApiError::Conflict("the manager is shutting down".into()))?;
    match tokio::time::timeout(limit, reply).await {
        Ok(Ok(result)) => result.map_err(ApiError::from),
        Ok(Err(_)) => Err(ApiError::Conflict("the manager is shutting down".into())),
        Err(_) => Err(ApiError::Internal(format!(
            "no answer within {} s",
            limit.as_secs()
        ))),
    }
}

async fn restart(
    State(shared): State<AppState>,
    ApiJson(request): ApiJson<RestartRequest>,
) -> Result<Json<RestartResponse>, ApiError> {
    let (tx, rx) = oneshot::channel();
    let limit = shared.config().shutdown.stop_delay + Duration::from_secs(600);
    tracing::info!(mode = ?request.mode, "restart requested through the API");
    let response = send(
        &shared,
        SupervisorCommand::Restart {
            mode: request.mode,
            reply: tx,
        },
        rx,
        limit,
    )
    .await?;
    Ok(Json(response))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {}

async fn reload(
    State(shared): State<AppState>,
    ApiJson(_request): ApiJson<ReloadRequest>,
) -> Result<Json<ReloadResponse>, ApiError> {
    let (tx, rx) = oneshot::channel();
    tracing::info!("reload requested through the API");
    let response = send(
        &shared,
        SupervisorCommand::Reload { reply: Some(tx) },
        rx,
        Duration::from_secs(60),
    )
    .await?;
    Ok(Json(response))
}
