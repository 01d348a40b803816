//! The router, built from the route groups' tables by a function tests can call without a
//! socket, and the listeners (plain or TLS) of the API and of the metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use axum::Router;
use pgsteward_tls::server::ReloadableAcceptor;
use schemars::{Schema, SchemaGenerator};

use super::{admin, auth, backup, error, lb, probes, role, slots, status, synchronous};
use crate::supervisor::shared::Shared;

/// State every handler gets.
pub type AppState = Arc<Shared>;

/// Documentation of one path (used to generate `docs/api/openapi.yaml`).
#[derive(Debug, Clone)]
pub struct RouteDoc {
    pub path: &'static str,
    /// Lower-case HTTP methods served on the path.
    pub methods: &'static [&'static str],
    pub summary: &'static str,
    pub description: &'static str,
    pub authenticated: bool,
    /// `(name, description)` of query parameters.
    pub query: &'static [(&'static str, &'static str)],
    pub request: Option<fn(&mut SchemaGenerator) -> Schema>,
    /// Schema of the 200 response body.
    pub response: Option<fn(&mut SchemaGenerator) -> Schema>,
    /// Other documented statuses, with what they mean (a 2xx here replaces the 200).
    pub errors: &'static [(u16, &'static str)],
}

/// A route: its documentation and its handler.
pub struct Route {
    pub doc: RouteDoc,
    pub handler: MethodRouter<AppState>,
}

/// Every route of the API, public first.
pub fn routes() -> Vec<Route> {
    let mut all = probes::routes();
    all.extend(lb::routes());
    all.extend(status::routes());
    all.extend(admin::routes());
    all.extend(backup::routes());
    all.extend(role::routes());
    all.extend(synchronous::routes());
    all.extend(slots::routes());
    all
}

/// The documentation of every route.
pub fn route_docs() -> Vec<RouteDoc> {
    routes().into_iter().map(|r| r.doc).collect()
}

/// The API router. Probes and status are public; mutating routes require the bearer token or
/// a verified client certificate (`http.tls.client_ca_file`).
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().http.body_limit_bytes;
    let mut public = Router::new();
    let mut guarded = Router::new();
    for route in routes() {
        if route.doc.authenticated {
            guarded = guarded.route(route.doc.path, route.handler);
        } else {
            public = public.route(route.doc.path, route.handler);
        }
    }
    let guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    public
        .merge(guarded)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Show when the API's certificate, as `acceptor` serves it now, expires (one whose expiry
/// cannot be read leaves the metric at its last value; the acceptor logged why).
pub fn record_certificate_expiry(shared: &Shared, acceptor: &ReloadableAcceptor) {
    if let Some(expiry) = acceptor.certificate_expiry() {
        shared.metrics.api_certificate_expiry.set(expiry as f64);
    }
}

/// Bind and serve the API (HTTPS when `http.tls` is set). Returns the bound address.
pub async fn serve_api(state: AppState) -> Result<SocketAddr> {
    let config = state.config().http;
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API listener on {}", config.listen))?;
    let address = listener.local_addr()?;
    let acceptor = match &config.tls {
        Some(tls) => {
            let acceptor = ReloadableAcceptor::new(pgsteward_tls::server::acceptor(
                &tls.cert_file,
                &tls.key_file,
                tls.client_ca_file.as_deref(),
            )?);
            // The reload rebuilds it from the files (a rotated certificate).
            let _ = state.api_tls.set(acceptor.clone());
            record_certificate_expiry(&state, &acceptor);
            Some(acceptor)
        }
        None => None,
    };
    let scheme = if acceptor.is_some() { "HTTPS" } else { "HTTP" };
    tokio::spawn(async move {
        if let Err(e) = pgsteward_tls::server::serve_http_or_https(listener, acceptor, app).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    tracing::info!(%address, "API listening ({scheme})");
    Ok(address)
}
