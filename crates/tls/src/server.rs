//! The server side: a rustls acceptor from PEM files (optionally asking for client
//! certificates signed by a client CA), replaceable while serving (certificate rotation; a
//! client certificate is checked again against the current client CA when it is used), and
//! an accept loop that hands each TLS stream to hyper, serving an axum router (the
//! manager's and the coordinator's APIs) with the connection's verified client certificate in
//! every request's extensions; or the same router over plain HTTP without an acceptor.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::{Context, Result};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
pub use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::peer::VerifiedClient;
use crate::pem::{chain_and_key, roots_from_pem};

/// A listener's TLS configuration: the acceptor, and the verifier of client certificates
/// it was built with (kept so a request on an older connection can be checked again).
pub struct ServerTls {
    acceptor: TlsAcceptor,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// When the served certificate (the chain's first) expires, seconds since the epoch; None
    /// when x509-parser cannot read what rustls accepted.
    certificate_expiry: Option<i64>,
}

impl ServerTls {
    /// Check a client's certificate chain (leaf first) against this configuration's client
    /// CA, at the current time.
    pub(crate) fn verify_client(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some(verifier) = &self.client_verifier else {
            return Err("no client CA is configured any more".to_owned());
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".to_owned());
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Build an acceptor from the certificate chain and key files. With `client_ca_file`, a
/// client may present a certificate: one signed by that CA is verified and handed to the
/// router as a [`VerifiedClient`], any other fails the handshake; a client without one
/// (a probe, a status request) is still served.
pub fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<ServerTls> {
    let (certs, key) = chain_and_key(cert_file, key_file)?;
    let certificate_expiry = match certs.first().map(crate::pem::expiry_of) {
        Some(Ok(expiry)) => Some(expiry),
        Some(Err(e)) => {
            tracing::warn!(file = %cert_file.display(), error = %format!("{e:#}"), "cannot read the TLS certificate's expiry");
            None
        }
        None => None,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let (builder, client_verifier) = match client_ca_file {
        Some(path) => {
            let roots = roots_from_pem(path).context("the client CA file")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("using {} as the client CA", path.display()))?;
            (
                builder.with_client_cert_verifier(verifier.clone()),
                Some(verifier),
            )
        }
        None => (builder.with_no_client_auth(), None),
    };
    let config = builder
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        client_verifier,
        certificate_expiry,
    })
}

/// The TLS configuration a listener uses, replaceable while it serves: a rotated certificate
/// (or another client CA) applies to the next connection; open connections keep their
/// session, but a client certificate they presented is checked again against the current
/// client CA at each authorization ([`VerifiedClient::authorize`]).
#[derive(Clone)]
pub struct ReloadableAcceptor(Arc<RwLock<Arc<ServerTls>>>);

impl std::fmt::Debug for ReloadableAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadableAcceptor")
    }
}

impl ReloadableAcceptor {
    pub fn new(tls: ServerTls) -> Self {
        ReloadableAcceptor(Arc::new(RwLock::new(Arc::new(tls))))
    }

    /// Use `tls` from the next connection on.
    pub fn replace(&self, tls: ServerTls) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tls);
    }

    /// When the certificate served now expires, seconds since the epoch (what the expiry
    /// metrics show: read from the chain the acceptor was built with, not the file again).
    pub fn certificate_expiry(&self) -> Option<i64> {
        self.current().certificate_expiry
    }

    pub(crate) fn current(&self) -> Arc<ServerTls> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Serve `app` on `listener`: HTTPS with `acceptor`, else plain HTTP; returns only when the
/// plain server fails.
pub async fn serve_http_or_https(
    listener: tokio::net::TcpListener,
    acceptor: Option<ReloadableAcceptor>,
    app: Router,
) -> std::io::Result<()> {
    match acceptor {
        Some(acceptor) => {
            serve(listener, acceptor, app).await;
            Ok(())
        }
        None => axum::serve(listener, app).await,
    }
}

/// Accept TLS connections forever.
async fn serve(listener: tokio::net::TcpListener, acceptor: ReloadableAcceptor, app: Router) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                continue;
            }
        };
        let tls = acceptor.current();
        let listener_tls = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tls.acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // rustls verified the chain during the handshake; only then is there one.
            let client = stream
                .get_ref()
                .1
                .peer_certificates()
                .filter(|chain| !chain.is_empty())
                .map(|chain| {
                    let chain = chain.iter().map(|c| c.clone().into_owned()).collect();
                    VerifiedClient::new(chain, listener_tls)
                });
            let app = app.map_request(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    if let Some(client) = &client {
                        request.extensions_mut().insert(client.clone());
                    }
                    request
                },
            );
            let service = TowerToHyperService::new(app);
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
        });
    }
}
