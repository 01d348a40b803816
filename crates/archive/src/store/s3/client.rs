//! The SDK configuration of an S3 store: region chain, endpoint checks, timeouts and retries,
//! checksum mode, credentials from files or the default chain, and an HTTPS client trusting a
//! private CA (`ca_file`).

use std::time::Duration;

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};

use super::credentials::{FileCredentials, Secrets};
use crate::store::{ChecksumMode, StoreError, StoreOptions};

/// Region used when neither the options, the environment nor the AWS profile name one.
pub const DEFAULT_REGION: &str = "us-east-1";
/// TCP (and TLS) connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one attempt of one operation (request sent to response headers received).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per operation inside the SDK (the first and at most 2 retries).
const SDK_MAX_ATTEMPTS: u32 = 3;

/// Build an SDK configuration for `options`; errors name the problem, never a secret.
pub(super) async fn sdk_config(
    options: &StoreOptions,
    secrets: &Secrets,
) -> Result<aws_config::SdkConfig, StoreError> {
    let region = RegionProviderChain::first_try(
        options
            .region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .map(Region::new),
    )
    .or_else(EnvironmentVariableRegionProvider::new())
    .or_else(ProfileFileRegionProvider::new())
    .or_else(Region::new(DEFAULT_REGION));
    let (request_checksums, response_checksums) = match options.checksums {
        ChecksumMode::WhenSupported => (
            RequestChecksumCalculation::WhenSupported,
            ResponseChecksumValidation::WhenSupported,
        ),
        ChecksumMode::WhenRequired => (
            RequestChecksumCalculation::WhenRequired,
            ResponseChecksumValidation::WhenRequired,
        ),
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(SDK_MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .request_checksum_calculation(request_checksums)
        .response_checksum_validation(response_checksums);
    if let Some(endpoint) = options
        .endpoint_url
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        let parsed = url::Url::parse(endpoint).map_err(|e| {
            StoreError::Config(format!(
                "endpoint URL {:?} is invalid: {e}",
                redact_url(endpoint)
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(StoreError::Config(format!(
                "endpoint URL {:?} must start with http:// or https://",
                redact_url(endpoint)
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(StoreError::Config(
                "the endpoint URL must not contain credentials; use access_key_id_file/secret_access_key_file".into(),
            ));
        }
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(ca_file) = &options.ca_file {
        loader = loader.http_client(https_client_trusting(ca_file)?);
    }
    match (&options.access_key_id_file, &options.secret_access_key_file) {
        (Some(id_file), Some(secret_file)) => {
            let provider = FileCredentials {
                access_key_id_file: id_file.clone(),
                secret_access_key_file: secret_file.clone(),
                secrets: secrets.clone(),
            };
            // Fail at startup, not at the first upload, when the files are unusable.
            provider.load().await.map_err(StoreError::Config)?;
            loader = loader.credentials_provider(SharedCredentialsProvider::new(provider));
        }
        (None, None) => {} // The default chain: environment, profile, web identity, instance profile.
        (Some(_), None) => {
            return Err(StoreError::Config(
                "access_key_id_file is set but secret_access_key_file is not: set both or neither"
                    .into(),
            ))
        }
        (None, Some(_)) => {
            return Err(StoreError::Config(
                "secret_access_key_file is set but access_key_id_file is not: set both or neither"
                    .into(),
            ))
        }
    }
    Ok(loader.load().await)
}

/// An HTTPS client that trusts the system's roots and the CA certificates in `ca_file`.
pub(super) fn https_client_trusting(
    ca_file: &std::path::Path,
) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, StoreError> {
    use aws_smithy_http_client::tls;
    let pem = std::fs::read(ca_file)
        .map_err(|e| StoreError::Config(format!("ca_file {}: {e}", ca_file.display())))?;
    let mut certificates = 0;
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        item.map_err(|e| {
            StoreError::Config(format!("ca_file {}: invalid PEM: {e}", ca_file.display()))
        })?;
        certificates += 1;
    }
    if certificates == 0 {
        return Err(StoreError::Config(format!(
            "ca_file {} holds no PEM certificate",
            ca_file.display()
        )));
    }
    let context = tls::TlsContext::builder()
        .with_trust_store(
            tls::TrustStore::empty()
                .with_native_roots(true)
                .with_pem_certificate(pem),
        )
        .build()
        .map_err(|e| StoreError::Config(format!("ca_file {}: {e}", ca_file.display())))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
}

/// An endpoint URL without anything that could be userinfo, for error messages.
pub(super) fn redact_url(endpoint: &str) -> String {
    match endpoint.split_once('@') {
        Some((_, host)) => format!("<redacted>@{host}"),
        None => endpoint.to_owned(),
    }
}
