//! Authenticated `POST /pg/slots/drop`: the coordinator drops the physical replication slots
//! nobody streams from any more (term-checked, inactive slots only; see `replication::slots`).

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use pgsteward_api::{SlotDropRequest, SlotDropResponse};

use super::error::ApiError;
use super::extract::ApiJson;
use super::role::role_change_error;
use super::server::{AppState, Route, RouteDoc};
use crate::replication::slots;

const ERRORS: &[(u16, &str)] = &[
    (
        400,
        "Malformed body, no slot named, more than 64, or a name that is not a slot name.",
    ),
    (401, "Missing bearer token."),
    (
        403,
        "Wrong token, or mutating routes disabled (no token configured).",
    ),
    (
        409,
        "The term is not this instance's term, a role change is in progress, or postgres is not reachable: nothing dropped.",
    ),
    (413, "Body too large."),
    (
        500,
        "Reading or dropping a slot failed (the message names the slots dropped before).",
    ),
];

pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            path: "/pg/slots/drop",
            methods: &["post"],
            summary: "Drop inactive replication slots",
            description: "Drops the named physical replication slots that no WAL sender uses, on the instance of the given term (the coordinator names the slots of former standbys on a demoted primary and those of removed members). A slot in use is kept and listed as active; a name with no physical slot is listed as missing. Every requested name appears in exactly one list.",
            authenticated: true,
            query: &[],
            request: Some(|g| g.subschema_for::<SlotDropRequest>()),
            response: Some(|g| g.subschema_for::<SlotDropResponse>()),
            errors: ERRORS,
        },
        handler: post(drop_slots),
    }]
}

/// The body as received, every field optional so that a missing one is a 400 naming it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    term: Option<u64>,
    slots: Option<Vec<String>>,
}

async fn drop_slots(
    State(shared): State<AppState>,
    ApiJson(body): ApiJson<Body>,
) -> Result<Json<SlotDropResponse>, ApiError> {
    let (Some(term), Some(names)) = (body.term, body.slots) else {
        return Err(ApiError::BadRequest(
            "the body must carry the term and the slots: {\"term\": N, \"slots\": [\"pg_2\"]}"
                .into(),
        ));
    };
    tracing::info!(term, slots = ?names, "dropping inactive replication slots requested through the API");
    match slots::drop_inactive(shared, term, &names).await {
        Ok(answer) => Ok(Json(answer)),
        Err(e) => {
            tracing::error!(term, slots = ?names, error = %e, "dropping replication slots refused or failed");
            Err(role_change_error(e))
        }
    }
}
