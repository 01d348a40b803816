//! The metrics listener (separate from the API): `GET /metrics` refreshes what it reads from
//! postgres and renders the Prometheus text format.

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::error;
use crate::supervisor::shared::Shared;

/// The metrics router.
pub fn router(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if crate::status::live_facts(&shared).await.is_some() {
        crate::database_metrics::refresh(&shared).await;
    }
    shared.backups.refresh_metrics(&shared.metrics.backup);
    let _ = crate::replication::status::collect(&shared).await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        shared.metrics.render(),
    )
}

/// Bind and serve the metrics listener.
pub async fn serve(state: Arc<Shared>) -> Result<std::net::SocketAddr> {
    let listen = state.config().metrics.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener on {listen}"))?;
    let address = listener.local_addr()?;
    let app = router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(%address, "metrics listening");
    Ok(address)
}
