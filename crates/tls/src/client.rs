//! The client side: a hyper connector for `http://` and `https://` URLs (the coordinator's
//! requests to the managers, the managers' HA checks, the CLIs), trusting a PEM CA bundle or
//! the system's roots, and presenting a client certificate when given one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::pem::{chain_and_key, roots_from_pem};

/// A client certificate chain and its key (PEM files), presented to servers that ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ClientIdentity {
    /// The identity when both files are named (configuration and flags name them apart).
    pub fn from_files(cert_file: Option<&Path>, key_file: Option<&Path>) -> Option<Self> {
        Some(ClientIdentity {
            cert_file: cert_file?.to_owned(),
            key_file: key_file?.to_owned(),
        })
    }
}

/// A connector for `http://` and `https://` URLs.
pub fn connector(
    ca_file: Option<&Path>,
    identity: Option<&ClientIdentity>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match ca_file {
        Some(path) => roots_from_pem(path)?,
        None => system_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => {
            let (certs, key) = chain_and_key(&identity.cert_file, &identity.key_file)
                .context("the client certificate")?;
            builder
                .with_client_auth_cert(certs, key)
                .context("the client certificate and key do not match")?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// The system's root certificates (none, with a warning, when there are none).
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(error = %error, "reading the system's root certificates");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no system root certificates: https:// URLs need a CA file");
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connector_needs_usable_files() {
        let dir = std::env::temp_dir().join(format!("pgsteward-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(connector(Some(&empty), None, Duration::from_secs(1)).is_err());
        assert!(connector(None, None, Duration::from_secs(1)).is_ok());
        let identity = ClientIdentity {
            cert_file: empty.clone(),
            key_file: empty.clone(),
        };
        let error = connector(None, Some(&identity), Duration::from_secs(1)).unwrap_err();
        assert!(
            format!("{error:#}").contains("the client certificate"),
            "{error:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
