//! Bearer-token authentication of mutating routes: constant-time comparison (of sha256
//! digests, so lengths leak nothing), 401 without a token, 403 with a wrong one, 403 for every
//! request when no token is configured. The token never appears in logs or responses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::supervisor::shared::Shared;

/// Compare a presented token with the expected one in constant time.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

/// Middleware guarding the authenticated route group.
pub async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let expected = shared
        .token
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(expected) = expected else {
        return Err(ApiError::Forbidden(
            "mutating routes are disabled: no http.token_file is configured".into(),
        ));
    };
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?;
    let presented = header
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or(ApiError::Unauthorized)?;
    if !token_matches(presented.trim().as_bytes(), &expected) {
        tracing::warn!(path = %request.uri().path(), "rejected a request with a wrong bearer token");
        return Err(ApiError::Forbidden("invalid bearer token".into()));
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secret2", b"secret"));
        assert!(!token_matches(b"", b""));
    }
}
