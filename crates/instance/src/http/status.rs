//! `GET /pg/status`: the instance status JSON.

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use pgsteward_api::InstanceStatus;

use super::server::{AppState, Route, RouteDoc};

pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            path: "/pg/status",
                        methods: &["get", "head"],
            summary: "Instance status",
            description: "Role, state, versions, identifiers, WAL position, pending restart, configuration hash. Answers even when postgres is down (postgres fields are then null).",
            authenticated: false,
            query: &[],
            request: None,
            response: Some(|g| g.subschema_for::<InstanceStatus>()),
            errors: &[],
        },
        handler: get(status),
    }]
}

async fn status(State(shared): State<AppState>) -> Json<InstanceStatus> {
    Json(crate::status::collect(&shared).await)
}
