//! What an S3 SDK error means for the caller: `Kind` (transient, integrity, not found,
//! permanent) from service codes, HTTP statuses and error sources, with a readable chain.

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Keys of S3 server errors that are worth retrying.
pub(super) const TRANSIENT_CODES: &[&str] = &[
    "ConditionalRequestConflict",
    "InternalError",
    "OperationAborted",
    "RequestLimitExceeded",
    "RequestTimeTooSkewed",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
];

/// Keys of S3 server errors saying the body did not match the checksum sent with it.
pub(super) const INTEGRITY_CODES: &[&str] = &[
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "XAmzContentChecksumMismatch",
];

/// What an SDK error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    NotFound,
    Transient,
    Permanent,
    Integrity,
    /// A condition (`If-None-Match`, `If-Match`) did not hold.
    PreconditionFailed,
    /// The server does not implement what the request asked for (a header it does not
    /// support): not worth retrying.
    NotImplemented,
}

pub(super) fn is_transient_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// Classify an SDK error and describe it (not yet redacted).
pub(super) fn classify<E>(err: &SdkError<E, HttpResponse>) -> (Kind, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code();
            let message = service.err().message();
            let text = match (code, message) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                (None, _) => format!("HTTP {status}"),
            };
            let kind = match code {
                Some(code) if INTEGRITY_CODES.contains(&code) => Kind::Integrity,
                Some("NoSuchKey") | Some("NotFound") => Kind::NotFound,
                // A 404 from HEAD has no body and therefore no code.
                None if status == 404 => Kind::NotFound,
                Some("PreconditionFailed") => Kind::PreconditionFailed,
                None if status == 412 => Kind::PreconditionFailed,
                Some("NotImplemented") => Kind::NotImplemented,
                None if status == 501 => Kind::NotImplemented,
                Some(code) if TRANSIENT_CODES.contains(&code) => Kind::Transient,
                _ if is_transient_status(status) => Kind::Transient,
                _ => Kind::Permanent,
            };
            (kind, text)
        }
        SdkError::ResponseError(response) => {
            // The response could not be parsed: a truncated body is worth another try, a proxy's
            // error page is not (unless it is a 5xx).
            let status = response.raw().status().as_u16();
            let kind = if is_transient_status(status) || (200..300).contains(&status) {
                Kind::Transient
            } else {
                Kind::Permanent
            };
            (
                kind,
                format!("unexpected response (HTTP {status}): {}", chain(err)),
            )
        }
        SdkError::TimeoutError(_) => (Kind::Transient, chain(err)),
        SdkError::DispatchFailure(dispatch) => {
            let kind = if dispatch.is_io() || dispatch.is_timeout() {
                Kind::Transient
            } else if dispatch.is_user() {
                Kind::Permanent
            } else {
                credentials_kind(err).unwrap_or(Kind::Transient)
            };
            (kind, chain(err))
        }
        SdkError::ConstructionFailure(_) => {
            (credentials_kind(err).unwrap_or(Kind::Permanent), chain(err))
        }
        // SdkError is non-exhaustive.
        _ => (Kind::Transient, chain(err)),
    }
}

/// An error and its sources, `a: b: c` (a level whose text its parent already ends with is
/// skipped).
pub(super) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// When the error comes from loading credentials: whether trying again could help.
fn credentials_kind(err: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(creds) = e.downcast_ref::<CredentialsError>() {
            return Some(match creds {
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) => {
                    Kind::Transient
                }
                _ => Kind::Permanent,
            });
        }
        current = e.source();
    }
    None
}

/// Whether an error while reading a response body is a checksum mismatch found by the SDK.
pub(super) fn is_checksum_mismatch(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.to_string()
            .to_ascii_lowercase()
            .contains("checksum mismatch")
        {
            return true;
        }
        current = e.source();
    }
    false
}
