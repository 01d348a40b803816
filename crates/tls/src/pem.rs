//! Reading PEM files: a CA bundle as a root store (what a client trusts for servers, what a
//! server trusts for client certificates), and a certificate chain with its private key (a
//! server's certificate, a client's certificate).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// When the first certificate of a PEM file expires (its notAfter), in seconds since the epoch:
/// what the expiry metrics show, so an alert fires before a rotation that did not happen
/// breaks the API.
pub fn expiry_of_first(cert_file: &Path) -> Result<i64> {
    let pem = std::fs::read(cert_file)
        .with_context(|| format!("reading the TLS certificate {}", cert_file.display()))?;
    let first = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .with_context(|| format!("{} holds no certificate", cert_file.display()))?
        .with_context(|| format!("parsing the TLS certificate {} (PEM)", cert_file.display()))?;
    expiry_of(&first).with_context(|| cert_file.display().to_string())
}

/// When a certificate expires (its notAfter), in seconds since the epoch.
pub fn expiry_of(cert: &CertificateDer<'_>) -> Result<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// A certificate chain (leaf first) and its private key.
pub fn chain_and_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_pem = std::fs::read(cert_file)
        .with_context(|| format!("reading the TLS certificate {}", cert_file.display()))?;
    let key_pem = std::fs::read(key_file)
        .with_context(|| format!("reading the TLS key {}", key_file.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the TLS certificate {} (PEM)", cert_file.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert_file.display());
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("parsing the TLS key {} (PEM)", key_file.display()))?
        .with_context(|| format!("{} holds no private key", key_file.display()))?;
    Ok((certs, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_must_hold_what_they_are_for() {
        let dir = std::env::temp_dir().join(format!("pgsteward-tls-pem-{}", std::process::id()));
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
        let chain = chain_and_key(&empty, &empty).unwrap_err();
        assert!(
            format!("{chain:#}").contains("holds no certificate"),
            "{chain:#}"
        );
        let absent_key = chain_and_key(&empty, &dir.join("absent.key")).unwrap_err();
        assert!(
            format!("{absent_key:#}").contains("reading the TLS key"),
            "{absent_key:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
