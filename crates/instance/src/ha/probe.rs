//! The HA monitor's requests: the coordinator's view of the cluster (`GET /status`, read as
//! a `ClusterView`) and the peers' liveness (`GET /healthz`: any HTTP answer proves the
//! network path; over https, a certificate that fails verification is no answer), all at
//! once, each bounded by `ha.request_timeout`.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pgsteward_api::ClusterView;

/// One round of checks.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The coordinator's view, or why it could not be read.
    pub coordinator: Result<ClusterView, String>,
    /// Peers that answered.
    pub reachable_peers: usize,
    /// The first peer error (for the isolation message).
    pub peer_error: Option<String>,
}

impl Checked {
    /// The coordinator or at least one peer answered.
    pub fn contact(&self) -> bool {
        self.coordinator.is_ok() || self.reachable_peers > 0
    }
}

/// A pooled client for `http://` and `https://` URLs (https verified against `ha.ca_file`,
/// or the system's roots).
#[derive(Clone)]
pub struct Prober {
    http: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Prober {
    pub fn new(
        connect_timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let connector = pgsteward_tls::client::connector(ca_file, None, connect_timeout)?;
        Ok(Prober {
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(10))
                .build(connector),
        })
    }

    /// Ask the coordinator and every peer, concurrently.
    pub async fn check(&self, coordinator: &str, peers: &[String], timeout: Duration) -> Checked {
        let mut tasks = tokio::task::JoinSet::new();
        for peer in peers {
            let this = self.clone();
            let peer = peer.clone();
            tasks.spawn(async move { this.reachable(&peer, timeout).await });
        }
        let coordinator = self.cluster_view(coordinator, timeout).await;
        let mut reachable_peers = 0;
        let mut peer_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => reachable_peers += 1,
                Ok(Err(e)) => {
                    peer_error.get_or_insert(e);
                }
                Err(e) => {
                    peer_error.get_or_insert(format!("peer check failed: {e}"));
                }
            }
        }
        Checked {
            coordinator,
            reachable_peers,
            peer_error,
        }
    }

    async fn get(&self, url: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
        let exchange = async {
            let response = self
                .http
                .get(uri)
                .await
                .map_err(|e| format!("{url}: {}", crate::api_client::innermost(&e)))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the answer: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{url}: no answer within {} ms", timeout.as_millis()))?
    }

    async fn cluster_view(&self, base: &str, timeout: Duration) -> Result<ClusterView, String> {
        let url = format!("{}/status", base.trim_end_matches('/'));
        let (status, body) = self.get(&url, timeout).await?;
        if status != 200 {
            return Err(format!("{url} answered HTTP {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not a coordinator status: {e}"))
    }

    async fn reachable(&self, base: &str, timeout: Duration) -> Result<(), String> {
        let url = format!("{}/healthz", base.trim_end_matches('/'));
        self.get(&url, timeout).await.map(|_| ())
    }
}
