//! Re-reads the coordinator's TLS files when they change (a rotated certificate, as when
//! Kubernetes updates a Secret volume): the client of the managers' API (`tls.ca_file`, the
//! client certificate and key) and the acceptor of its own API (`api_tls`). Polled every
//! second by content, so symlink-swapped volumes count; a file that does not parse is logged
//! and the running client or acceptor stays until the files change again. At start and after
//! each change it sets `pgsteward_coordinator_certificate_expiry_timestamp_seconds` (the API's
//! from the certificate being served).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgsteward_tls::server::ReloadableAcceptor;

use crate::client::Client;
use crate::config::{ApiTlsConfig, Config, TlsClientConfig};
use crate::shared::Shared;

/// Show the certificates' expiry and start watching (nothing to watch: no task).
pub fn spawn(
    config: &Config,
    client: Client,
    acceptor: Option<ReloadableAcceptor>,
    shared: Arc<Shared>,
) {
    let client_tls = config.tls.clone();
    let api_tls = config.api_tls.clone().filter(|_| acceptor.is_some());
    record_expiry(&shared, client_tls.as_ref(), acceptor.as_ref());
    let files = watched_files(client_tls.as_ref(), api_tls.as_ref());
    if files.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut last = fingerprint(&files);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = fingerprint(&files);
            if now == last {
                continue;
            }
            last = now;
            if let Some(tls) = &client_tls {
                match client.rebuild(tls.ca_file.as_deref(), tls.identity().as_ref()) {
                    Ok(()) => tracing::info!("managers' API client rebuilt from the TLS files"),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "TLS files changed but do not load; the running client stays")
                    }
                }
            }
            if let (Some(tls), Some(acceptor)) = (&api_tls, &acceptor) {
                match pgsteward_tls::server::acceptor(
                    &tls.cert_file,
                    &tls.key_file,
                    tls.client_ca_file.as_deref(),
                ) {
                    Ok(new) => {
                        acceptor.replace(new);
                        tracing::info!("API certificate re-read (api_tls)");
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "api_tls files changed but do not load; the running certificate stays")
                    }
                }
            }
            record_expiry(&shared, client_tls.as_ref(), acceptor.as_ref());
        }
    });
}

/// Set the expiry gauges: the API's from the certificate its acceptor serves, the client's
/// from its file (one that does not load is logged).
fn record_expiry(
    shared: &Shared,
    client: Option<&TlsClientConfig>,
    acceptor: Option<&ReloadableAcceptor>,
) {
    let gauge = |label: &str| {
        shared
            .metrics
            .certificate_expiry
            .with_label_values(&[label])
    };
    if let Some(expiry) = acceptor.and_then(ReloadableAcceptor::certificate_expiry) {
        gauge("api").set(expiry);
    }
    if let Some(file) = client.and_then(|t| t.client_cert_file.as_deref()) {
        match pgsteward_tls::pem::expiry_of_first(file) {
            Ok(expiry) => gauge("client").set(expiry),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the client certificate's expiry")
            }
        }
    }
}

/// Every TLS file the coordinator reads.
fn watched_files(client: Option<&TlsClientConfig>, api: Option<&ApiTlsConfig>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(tls) = client {
        files.extend(tls.ca_file.clone());
        files.extend(tls.client_cert_file.clone());
        files.extend(tls.client_key_file.clone());
    }
    if let Some(tls) = api {
        files.extend([tls.cert_file.clone(), tls.key_file.clone()]);
        files.extend(tls.client_ca_file.clone());
    }
    files
}

fn fingerprint(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(f).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_every_configured_file() {
        let config: Config = serde_yaml::from_str(
            "state_file: s\n\
             tls: {ca_file: /ca, client_cert_file: /c, client_key_file: /k}\n\
             api_tls: {cert_file: /ac, key_file: /ak, client_ca_file: /aca}\n\
             members:\n- {name: a, url: 'https://x:1'}\n",
        )
        .unwrap();
        let files = watched_files(config.tls.as_ref(), config.api_tls.as_ref());
        let names: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
        assert_eq!(names, ["/ca", "/c", "/k", "/ac", "/ak", "/aca"]);
        assert!(watched_files(None, None).is_empty());
    }
}
