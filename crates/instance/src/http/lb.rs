//! Load-balancer checks in the Patroni convention: `GET|HEAD /primary` answers 200 only on a
//! writable primary, `/replica` only on a streaming replica (optionally with `?lag=` as bytes
//! or with a unit: `16MB`, `1GB`), 503 otherwise, so HAProxy `httpchk` can route on them.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pgsteward_api::InstanceState;
use schemars::SchemaGenerator;
use serde::Deserialize;

use super::error::ApiError;
use super::probes::probe_response;
use super::server::{AppState, Route, RouteDoc};

fn probe_schema(g: &mut SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<pgsteward_api::ProbeBody>()
}

pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                path: "/primary",
                methods: &["get", "head"],
                summary: "Load-balancer check: writable primary",
                description: "200 only when this instance is running as a writable primary (Patroni convention).",
                authenticated: false,
                query: &[],
                request: None,
                response: Some(probe_schema),
                errors: &[(503, "Not a running primary.")],
            },
            handler: get(primary),
        },
        Route {
            doc: RouteDoc {
                path: "/replica",
                methods: &["get", "head"],
                summary: "Load-balancer check: streaming replica",
                description: "200 only when this instance is a replica streaming from a primary, with replay lag at most `lag` when given (Patroni convention).",
                authenticated: false,
                query: &[("lag", "Largest acceptable replay lag: bytes, or a number with kB, MB, GB or TB.")],
                request: None,
                response: Some(probe_schema),
                errors: &[(400, "Malformed `lag`."), (503, "Not a streaming replica, or lagging more than `lag`.")],
            },
            handler: get(replica),
        },
    ]
}

async fn primary(State(shared): State<AppState>) -> Response {
    let state = shared.state.current();
    if state != InstanceState::Running {
        return probe_response(false, state, format!("instance is {state}")).into_response();
    }
    match crate::status::live_facts(&shared).await {
        Some(f) if !f.in_recovery => {
            probe_response(true, state, "writable primary").into_response()
        }
        Some(_) => probe_response(false, state, "instance is a replica").into_response(),
        None => {
            probe_response(false, state, "postgres does not accept connections").into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
struct ReplicaQuery {
    lag: Option<String>,
}

async fn replica(
    State(shared): State<AppState>,
    query: Result<Query<ReplicaQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let max_lag = query.lag.as_deref().map(parse_size).transpose()?;
    let state = shared.state.current();
    if state != InstanceState::Running {
        return Ok(probe_response(false, state, format!("instance is {state}")).into_response());
    }
    let Some(facts) = crate::status::live_facts(&shared).await else {
        return Ok(
            probe_response(false, state, "postgres does not accept connections").into_response(),
        );
    };
    if !facts.in_recovery {
        return Ok(probe_response(false, state, "instance is a primary").into_response());
    }
    if facts.wal_receiver_status.as_deref() != Some("streaming") {
        return Ok(probe_response(false, state, "replica is not streaming").into_response());
    }
    let lag = facts.replay_lag_bytes.unwrap_or(0.0);
    if let Some(max) = max_lag {
        if lag > max as f64 {
            return Ok(probe_response(
                false,
                state,
                format!("replay lag {lag} bytes exceeds {max}"),
            )
            .into_response());
        }
    }
    Ok(probe_response(
        true,
        state,
        format!("streaming replica, replay lag {lag} bytes"),
    )
    .into_response())
}

/// Parse `1048576`, `16MB`, `16 kB`, `1GB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, ApiError> {
    let text = text.trim();
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("lag: {text:?} is not a size")))?;
    let unit = text[digits.len()..].trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "lag: unknown unit {unit:?} (use kB, MB, GB, TB)"
            )))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| ApiError::BadRequest(format!("lag: {text:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1048576").ok(), Some(1_048_576));
        assert_eq!(parse_size("16MB").ok(), Some(16 << 20));
        assert_eq!(parse_size("1 GB").ok(), Some(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999TB").is_err());
    }
}
