//! The client certificate of a TLS connection, once rustls verified it against the server's
//! client CA: handed to every request of the connection as an extension, so an authorization
//! layer can accept it instead of a bearer token, and matched against allowed names.

use rustls::pki_types::{CertificateDer, ServerName};

/// A client certificate that chained to the configured client CA (present in a request's
/// extensions only then).
#[derive(Debug, Clone)]
pub struct VerifiedClient {
    certificate: CertificateDer<'static>,
}

impl VerifiedClient {
    /// The leaf certificate of a verified chain.
    pub fn new(certificate: CertificateDer<'static>) -> Self {
        VerifiedClient { certificate }
    }

    /// Whether this client may use the mutating routes: any verified certificate when
    /// `allowed_names` is empty, else one valid for at least one of the names (a DNS name or
    /// an IP address of its subjectAltName).
    pub fn is_allowed(&self, allowed_names: &[String]) -> bool {
        if allowed_names.is_empty() {
            return true;
        }
        let Ok(cert) = webpki::EndEntityCert::try_from(&self.certificate) else {
            return false;
        };
        allowed_names.iter().any(|name| {
            ServerName::try_from(name.as_str())
                .map(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
                .unwrap_or(false)
        })
    }
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
        let client = VerifiedClient::new(CertificateDer::from(vec![1, 2, 3]));
        assert!(client.is_allowed(&[]));
        assert!(!client.is_allowed(&["localhost".to_owned()]));
    }
}
