//! HTTP client of the instance managers' API: `GET /pg/status`, and the role changes
//! `POST /pg/promote {term}`, `/pg/fence`, `/pg/demote` and `/pg/follow`
//! (`{"term", "primary": {"host", "port"}}`), `/pg/synchronous` and `/pg/slots/drop`, with a
//! bearer token and a timeout each, over http or https (`tls`).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use pgsteward_api::InstanceStatus;
use serde_json::{json, Value};

/// Why a request did not give the expected answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("cannot reach the API: {0}")]
    Unreachable(String),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer: {0}")]
    Decode(String),
}

type Http = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client shared by all members (connections are pooled), rebuilt when its TLS files change
/// (`tls_watch`).
#[derive(Clone)]
pub struct Client {
    http: Arc<RwLock<Http>>,
}

impl Client {
    /// A client for `http://` and `https://` URLs; https trusts `ca_file` (PEM), or the
    /// system's roots without it, and presents `identity` to servers that ask for one.
    pub fn new(
        ca_file: Option<&std::path::Path>,
        identity: Option<&pgsteward_tls::client::ClientIdentity>,
    ) -> anyhow::Result<Self> {
        Ok(Client {
            http: Arc::new(RwLock::new(build(ca_file, identity)?)),
        })
    }

    /// Read the files again and use the new client from the next request on (a rotated CA or
    /// client certificate); on error the running client stays.
    pub fn rebuild(
        &self,
        ca_file: Option<&std::path::Path>,
        identity: Option<&pgsteward_tls::client::ClientIdentity>,
    ) -> anyhow::Result<()> {
        let http = build(ca_file, identity)?;
        *self.http.write().unwrap_or_else(PoisonError::into_inner) = http;
        Ok(())
    }

    fn current(&self) -> Http {
        self.http
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn request(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), ClientError> {
        let mut builder = hyper::Request::builder().method(method).uri(url);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|e| ClientError::Unreachable(format!("bad request for {url}: {e}")))?;
        let exchange = async {
            let response = self
                .current()
                .request(request)
                .await
                .map_err(|e| ClientError::Unreachable(format!("{e:?}")))?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable(format!("reading the body: {e}")))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout.as_millis()))?
    }

    /// `GET <base>/pg/status`.
    pub async fn status(
        &self,
        base: &str,
        timeout: Duration,
    ) -> Result<InstanceStatus, ClientError> {
        let (status, body) = self
            .request("GET", &format!("{base}/pg/status"), None, None, timeout)
            .await?;
        if status != 200 {
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// POST a role change; Ok(answer) on 2xx.
    pub async fn post(
        &self,
        base: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let (status, bytes) = self
            .request("POST", &format!("{base}{path}"), token, body, timeout)
            .await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !(200..300).contains(&status) {
            return Err(ClientError::Status { status, body: text });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `POST /pg/promote {"term": term}`.
    pub async fn promote(
        &self,
        base: &str,
        token: Option<&str>,
        term: u64,
        synchronous_standby_names: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let body = match synchronous_standby_names {
            Some(names) => json!({ "term": term, "synchronous_standby_names": names }),
            None => json!({ "term": term }),
        };
        self.post(base, "/pg/promote", token, Some(body), timeout)
            .await
    }

    /// `POST /pg/demote` with `request`: the answer carries the shutdown checkpoint's LSN and
    /// timeline.
    pub async fn demote(
        &self,
        base: &str,
        token: Option<&str>,
        request: &pgsteward_api::DemoteRequest,
        timeout: Duration,
    ) -> Result<pgsteward_api::DemoteResponse, ClientError> {
        let body = json!(request);
        let answer = self
            .post(base, "/pg/demote", token, Some(body), timeout)
            .await?;
        serde_json::from_value(answer).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /pg/synchronous {"term", "names"}`.
    pub async fn set_synchronous(
        &self,
        base: &str,
        token: Option<&str>,
        term: u64,
        names: &str,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let body = json!({ "term": term, "names": names });
        self.post(base, "/pg/synchronous", token, Some(body), timeout)
            .await
    }

    /// `POST /pg/slots/drop {"term", "slots"}`.
    pub async fn drop_slots(
        &self,
        base: &str,
        token: Option<&str>,
        request: &pgsteward_api::SlotDropRequest,
        timeout: Duration,
    ) -> Result<pgsteward_api::SlotDropResponse, ClientError> {
        let body = json!(request);
        let answer = self
            .post(base, "/pg/slots/drop", token, Some(body), timeout)
            .await?;
        serde_json::from_value(answer).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /pg/fence`.
    pub async fn fence(
        &self,
        base: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        self.post(base, "/pg/fence", token, None, timeout).await
    }

    /// `POST /pg/follow {"term", "primary": {"host", "port"}}` (manager side not merged yet:
    /// a 404 means the manager cannot be repointed by API).
    pub async fn follow(
        &self,
        base: &str,
        token: Option<&str>,
        term: u64,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let body = json!({ "term": term, "primary": { "host": host, "port": port } });
        self.post(base, "/pg/follow", token, Some(body), timeout)
            .await
    }
}

fn build(
    ca_file: Option<&std::path::Path>,
    identity: Option<&pgsteward_tls::client::ClientIdentity>,
) -> anyhow::Result<Http> {
    let connector =
        pgsteward_tls::client::connector(ca_file, identity, Duration::from_millis(500))?;
    Ok(HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(10))
        .build(connector))
}
