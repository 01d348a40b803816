//! Credentials of the S3 store: the access key pair read from two files (re-read when the
//! SDK's cache expires them, so rotated secrets take effect), and the set of secrets seen so
//! far, which every error message is scrubbed of.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;

/// How long credentials read from files are used before the files are read again.
const FILE_CREDENTIALS_TTL: Duration = Duration::from_secs(5 * 60);

/// Credential strings seen so far, removed from every error message.
#[derive(Clone, Default)]
pub(super) struct Secrets(Arc<Mutex<Vec<String>>>);

impl Secrets {
    pub(super) fn remember(&self, values: &[&str]) {
        let Ok(mut known) = self.0.lock() else { return };
        for value in values {
            // Very short values would mangle messages (and are no secret worth the name).
            if value.len() >= 4 && !known.iter().any(|k| k == value) {
                known.push((*value).to_owned());
            }
        }
        // Bounded: rotations add a pair each; keep the most recent ones.
        let excess = known.len().saturating_sub(16);
        known.drain(..excess);
    }

    pub(super) fn redact(&self, message: String) -> String {
        let Ok(known) = self.0.lock() else {
            return "(error message withheld: credential list unavailable)".to_owned();
        };
        known.iter().fold(message, |m, secret| {
            m.replace(secret.as_str(), "<redacted>")
        })
    }
}

/// Credentials read from two files (first line of each, trimmed), re-read when the SDK's cache
/// expires them.
pub(super) struct FileCredentials {
    pub(super) access_key_id_file: PathBuf,
    pub(super) secret_access_key_file: PathBuf,
    pub(super) secrets: Secrets,
}

impl fmt::Debug for FileCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCredentials")
            .field("access_key_id_file", &self.access_key_id_file)
            .field("secret_access_key_file", &self.secret_access_key_file)
            .finish_non_exhaustive()
    }
}

/// The first line of `path`, trimmed; never logs the content.
pub(super) async fn read_first_line(path: &Path, what: &str) -> Result<String, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("reading the {what} file {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(line.to_owned())
}

impl FileCredentials {
    pub(super) async fn load(&self) -> Result<Credentials, String> {
        let id = read_first_line(&self.access_key_id_file, "access key id").await?;
        let secret = read_first_line(&self.secret_access_key_file, "secret access key").await?;
        self.secrets.remember(&[&id, &secret]);
        Ok(Credentials::new(
            id,
            secret,
            None,
            Some(SystemTime::now() + FILE_CREDENTIALS_TTL),
            "pgsteward-credential-files",
        ))
    }
}

impl ProvideCredentials for FileCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        // A file that is unreadable right now (a secret volume being swapped) is worth retrying.
        future::ProvideCredentials::new(async move {
            self.load().await.map_err(CredentialsError::provider_error)
        })
    }
}
