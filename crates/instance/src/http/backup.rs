//! `POST /pg/backup`: start a base backup in the background (authenticated like
//! `/pg/restart`); 202 with the backup id, 409 while one runs or when postgres is not running,
//! 412 without an archive destination. Progress and outcome are in `GET /pg/status`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use pgsteward_api::{BackupAccepted, BackupRequest};

use super::error::ApiError;
use super::extract::ApiJson;
use super::server::{AppState, Route, RouteDoc};
use crate::backups::StartError;

const ERRORS: &[(u16, &str)] = &[
    (
        202,
        "Accepted: the backup runs in the background; follow it in GET /pg/status.",
    ),
    (400, "Malformed body."),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (
        409,
        "A backup is already running, or postgres is not running.",
    ),
    (412, "No archive.destination is configured."),
    (413, "Body too large."),
];

pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            path: "/pg/backup",
            methods: &["post"],
            summary: "Take a base backup",
            description: "Starts an online base backup into the archive destination (barman-cloud catalog) and answers 202 Accepted with its id at once; follow it in `backup` of GET /pg/status. One backup at a time.",
            authenticated: true,
            query: &[],
            request: Some(|g| g.subschema_for::<BackupRequest>()),
            response: Some(|g| g.subschema_for::<BackupAccepted>()),
            errors: ERRORS,
        },
        handler: post(start_backup),
    }]
}

async fn start_backup(
    State(shared): State<AppState>,
    ApiJson(request): ApiJson<BackupRequest>,
) -> Result<(StatusCode, Json<BackupAccepted>), ApiError> {
    match crate::backups::start(&shared, request.immediate_checkpoint).await {
        Ok(backup_id) => Ok((StatusCode::ACCEPTED, Json(BackupAccepted { backup_id }))),
        Err(e @ (StartError::Running(_) | StartError::NotRunning)) => {
            Err(ApiError::Conflict(e.to_string()))
        }
        Err(e @ StartError::NotConfigured) => Err(ApiError::InvalidConfiguration(e.to_string())),
    }
}
