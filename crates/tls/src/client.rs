//! The client side: a hyper connector for `http://` and `https://` URLs (the coordinator's
//! requests to the managers, the managers' HA checks), trusting a PEM CA bundle, or the
//! system's roots when none is given.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

/// The certificates of a PEM bundle, as a root store.
pub fn roots_from_pem(path: &Path) -> Result<rustls::RootCertStore> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the CA file {} (PEM)", path.display()))?;
    if certs.is_empty() {
        bail!("the CA file {} holds no certificate", path.display());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("a certificate of {} is not usable", path.display()))?;
    }
    Ok(roots)
}

/// A connector for `http://` and `https://` URLs.
pub fn connector(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let with_roots = |roots: rustls::RootCertStore| -> Result<_> {
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsConnectorBuilder::new().with_tls_config(config))
    };
    let builder = match ca_file {
        Some(path) => with_roots(roots_from_pem(path)?)?,
        None => match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(e) => {
                tracing::warn!(error = %e, "no system root certificates: https:// URLs need a CA file");
                with_roots(rustls::RootCertStore::empty())?
            }
        },
    };
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("pgsteward-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = roots_from_pem(&dir.join("absent.pem")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("reading the CA file"),
            "{missing:#}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let none = roots_from_pem(&empty).unwrap_err();
        assert!(
            format!("{none:#}").contains("holds no certificate"),
            "{none:#}"
        );
        assert!(connector(Some(&empty), Duration::from_secs(1)).is_err());
        assert!(connector(None, Duration::from_secs(1)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
