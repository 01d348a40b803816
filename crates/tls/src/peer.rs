//! The client certificate of a TLS connection, once rustls verified it against the server's
//! client CA: handed to every request of the connection as an extension, so an authorization
//! layer can accept it instead of a bearer token, checked again against the current client CA
//! (rotations happen while connections stay open), and matched against allowed names.

use rustls::pki_types::{CertificateDer, ServerName};

use crate::server::ReloadableAcceptor;

/// A client certificate chain that chained to the configured client CA when its connection
/// was opened (present in a request's extensions only then), with the listener it came
/// through, so it can be checked again against the listener's current client CA.
#[derive(Debug, Clone)]
pub struct VerifiedClient {
    /// Leaf first.
    chain: Vec<CertificateDer<'static>>,
    listener: ReloadableAcceptor,
}

impl VerifiedClient {
    /// A chain rustls verified on a connection of `listener`; `chain` is not empty.
    pub fn new(chain: Vec<CertificateDer<'static>>, listener: ReloadableAcceptor) -> Self {
        VerifiedClient { chain, listener }
    }

    /// Whether this client may use the mutating routes now: its chain verifies against the
    /// listener's client CA as it is now, at the current time (a keep-alive connection
    /// outlives certificate rotations, so a client CA removed or replaced since the handshake,
    /// or a certificate expired since, must stop authorizing its requests), and it is valid
    /// for one of `allowed_names` (any name when empty). Err says why not, for the log.
    pub fn authorize(&self, allowed_names: &[String]) -> Result<(), String> {
        self.listener
            .current()
            .verify_client(&self.chain)
            .map_err(|e| {
                format!("the client certificate does not verify against the current client CA: {e}")
            })?;
        if self
            .chain
            .first()
            .is_some_and(|leaf| valid_for_any(leaf, allowed_names))
        {
            Ok(())
        } else {
            Err("the client certificate is valid for none of the allowed client names".to_owned())
        }
    }
}

/// Any certificate when `allowed_names` is empty, else one valid for at least one of the names
/// (a DNS name or an IP address of its subjectAltName).
fn valid_for_any(leaf: &CertificateDer<'_>, allowed_names: &[String]) -> bool {
    if allowed_names.is_empty() {
        return true;
    }
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    allowed_names.iter().any(|name| {
        ServerName::try_from(name.as_str())
            .map(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
            .unwrap_or(false)
    })
}

/// Check a list of allowed client names (each a DNS name or an IP address).
pub fn validate_allowed_names(names: &[String]) -> Result<(), String> {
    for name in names {
        if ServerName::try_from(name.as_str()).is_err() {
            return Err(format!(
                "{name:?} is not a DNS name or an IP address (client names are matched against a certificate's subjectAltName)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_names_or_addresses() {
        let ok = ["coordinator.db.svc".to_owned(), "10.0.0.7".to_owned()];
        assert!(validate_allowed_names(&ok).is_ok());
        let bad = ["not a name".to_owned()];
        assert!(validate_allowed_names(&bad)
            .unwrap_err()
            .contains("not a DNS name"));
    }

    #[test]
    fn garbage_is_never_allowed_by_name() {
        let garbage = CertificateDer::from(vec![1, 2, 3]);
        assert!(valid_for_any(&garbage, &[]));
        assert!(!valid_for_any(&garbage, &["localhost".to_owned()]));
    }
}
