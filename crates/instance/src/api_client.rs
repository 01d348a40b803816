//! The CLI's client of a manager's API (`pgsteward status`, `pgsteward backup`): `http://`
//! or `https://` (the manager's `http.tls`, verified against `--ca-file` or the system's
//! roots, presenting `--client-cert` when given), one request at a time, each bounded by a
//! timeout, errors that say what to check.

use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::StatusCode;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::ApiTlsArgs;

/// A manager's API at `base`.
pub struct ApiClient {
    base: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ApiClient {
    /// `base` is `http://host:port` or `https://host:port`; `tls` the CA bundle for https
    /// (None: the system's roots) and the client certificate, if any.
    pub fn new(base: &str, tls: &ApiTlsArgs) -> Result<Self> {
        let connector = pgsteward_tls::client::connector(
            tls.ca_file.as_deref(),
            tls.identity().as_ref(),
            Duration::from_secs(5),
        )?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`: the status code and the body.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<(StatusCode, String)> {
        let request = hyper::Request::get(self.url(path))
            .body(Full::new(Bytes::new()))
            .context("building the request")?;
        self.send(request, timeout).await
    }

    /// `POST path` with the bearer token (if any; a client certificate may authorize instead)
    /// and a JSON body (empty when `body` is empty).
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, String)> {
        let mut request = hyper::Request::post(self.url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .context("building the request")?;
        self.send(request, timeout).await
    }

    async fn send(
        &self,
        request: hyper::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(StatusCode, String)> {
        let url = request.uri().to_string();
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .with_context(|| format!("no answer from {url} within {} s", timeout.as_secs()))?
            .map_err(|e| anyhow::anyhow!("{}", innermost(&e)))
            .with_context(|| {
                format!("cannot reach the pgsteward API at {url} (is pgsteward running? with http.tls, use https:// and --ca-file)")
            })?;
        let code = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the response")?
            .to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The innermost cause of a client error (hyper's outer message is only "client error"; the
/// HA checks use it too).
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
