//! The server side: a rustls acceptor from PEM files and an accept loop that hands each TLS
//! stream to hyper, serving an axum router (the manager's and the coordinator's APIs), or the
//! same router over plain HTTP without an acceptor.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;

/// Build an acceptor from the certificate chain and key files.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor> {
    let cert_pem = std::fs::read(cert_file)
        .with_context(|| format!("reading TLS certificate {}", cert_file.display()))?;
    let key_pem = std::fs::read(key_file)
        .with_context(|| format!("reading TLS key {}", key_file.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the TLS certificate PEM")?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert_file.display());
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .context("parsing the TLS key PEM")?
        .with_context(|| format!("{} holds no private key", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve `app` on `listener`: HTTPS with `acceptor`, else plain HTTP; returns only when the
/// plain server fails.
pub async fn serve_http_or_https(
    listener: tokio::net::TcpListener,
    acceptor: Option<TlsAcceptor>,
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
async fn serve(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, app: Router) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(stream),
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
