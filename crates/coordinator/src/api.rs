//! The coordinator's HTTP API: `GET /status` (term, primary, members, last decision and its
//! reason, re-admissions, last switchover), `GET /metrics` (Prometheus), and the mutating
//! `POST /switchover {"to": NAME}` and `POST /backup {"target": "primary" | "prefer-standby"}`
//! (a client certificate verified against `api_tls.client_ca_file` and valid for
//! `api_tls.client_names` when set, or the bearer token from `api_token_file`; 401 without
//! either, 403 with a wrong token or when neither is configured), run by the loop between
//! two rounds.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use pgsteward_tls::bearer;
use pgsteward_tls::peer::VerifiedClient;
use serde_json::json;

use crate::backup::BackupRequest;
use crate::shared::{Command, Shared};
use crate::switchover::SwitchoverRequest;

/// The router (no listener: the caller binds it).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/switchover", post(switchover))
        .route("/backup", post(backup))
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

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The client certificate a request's connection presented, if rustls verified one.
type Client = Option<Extension<VerifiedClient>>;

/// None when the request carries an accepted client certificate or the configured token,
/// else the error answer.
fn unauthorized(shared: &Shared, headers: &HeaderMap, client: &Client) -> Option<Response> {
    let client_names = shared.api_client_names();
    if let (Some(Extension(client)), Some(names)) = (client, &client_names) {
        match client.authorize(names) {
            Ok(()) => return None,
            Err(reason) => tracing::warn!(
                %reason,
                "a client certificate not accepted (api_tls.client_ca_file, api_tls.client_names); trying the API token"
            ),
        }
    }
    let Some(api_token) = &shared.api_token else {
        let message = if client_names.is_some() {
            "this request needs a client certificate signed by api_tls.client_ca_file (and valid for api_tls.client_names, when set); no api_token_file is configured"
        } else {
            "mutating routes are disabled: set api_token_file or api_tls.client_ca_file in the coordinator configuration"
        };
        return Some(error(StatusCode::FORBIDDEN, message));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer::presented);
    match given {
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "a bearer token or a client certificate is required",
        )),
        // The file is read only for a request that presents a token.
        Some(token) if !bearer::matches(token.as_bytes(), api_token.current().as_bytes()) => {
            tracing::warn!("rejected a request with a wrong API token");
            Some(error(StatusCode::FORBIDDEN, "wrong token"))
        }
        Some(_) => None,
    }
}

async fn switchover(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    client: Client,
    body: Result<Json<SwitchoverRequest>, JsonRejection>,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &client) {
        return denied;
    }
    let request = match body {
        Ok(Json(request)) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"to\": NAME}}: {e}"),
            )
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = Command::Switchover {
        to: request.to,
        reply,
    };
    if shared.commands.try_send(command).is_err() {
        return error(
            StatusCode::CONFLICT,
            "another switchover is queued or running",
        );
    }
    match answer.await {
        Ok(Ok(done)) => Json(done).into_response(),
        Ok(Err(e)) => error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator loop stopped before answering",
        ),
    }
}

async fn backup(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    client: Client,
    body: Result<Json<BackupRequest>, JsonRejection>,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &client) {
        return denied;
    }
    let request = match body {
        Ok(Json(request)) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"target\": \"primary\" | \"prefer-standby\"}}: {e}"),
            )
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if shared
        .commands
        .try_send(Command::Backup { request, reply })
        .is_err()
    {
        return error(StatusCode::CONFLICT, "the coordinator is busy; retry");
    }
    match answer.await {
        Ok(Ok(started)) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        Ok(Err((status, message))) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator loop stopped before answering",
        ),
    }
}
