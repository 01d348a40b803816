//! Authentication of mutating routes: a client certificate that rustls verified against
//! `http.tls.client_ca_file`, that still verifies against the current one (a reload may have
//! replaced it while the connection stayed open) and that matches `http.tls.client_names`,
//! when set; or the bearer token compared in constant time (of sha256 digests, so lengths leak
//! nothing). 401 with neither, 403 with a wrong token or when neither is configured. The token
//! never appears in logs or responses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use pgsteward_tls::bearer;
use pgsteward_tls::peer::VerifiedClient;

use super::error::ApiError;
use crate::supervisor::shared::Shared;

/// Middleware guarding the authenticated route group.
pub async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(client) = request.extensions().get::<VerifiedClient>() {
        let authorized = {
            let config = shared.config.read().unwrap_or_else(|p| p.into_inner());
            let names = config
                .http
                .tls
                .as_ref()
                .map_or(&[][..], |t| t.client_names.as_slice());
            client.authorize(names)
        };
        match authorized {
            Ok(()) => return Ok(next.run(request).await),
            Err(reason) => {
                tracing::warn!(path = %request.uri().path(), %reason, "a client certificate not accepted (http.tls.client_ca_file, http.tls.client_names); trying the bearer token")
            }
        }
    }
    let expected = shared
        .token
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(expected) = expected else {
        let client_ca = shared
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .http
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        let message = if client_ca {
            "this request needs a client certificate signed by http.tls.client_ca_file (and valid for http.tls.client_names, when set); no http.token_file is configured"
        } else {
            "mutating routes are disabled: no http.token_file or http.tls.client_ca_file is configured"
        };
        return Err(ApiError::Forbidden(message.into()));
    };
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?;
    let presented = header
        .to_str()
        .ok()
        .and_then(bearer::presented)
        .ok_or(ApiError::Unauthorized)?;
    if !bearer::matches(presented.as_bytes(), &expected) {
        tracing::warn!(path = %request.uri().path(), "rejected a request with a wrong bearer token");
        return Err(ApiError::Forbidden("invalid bearer token".into()));
    }
    Ok(next.run(request).await)
}
