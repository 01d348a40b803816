//! S3 store (aws-sdk-s3): one client per destination with its connection pool, bounded
//! timeouts (connect 5 s, 60 s per attempt, at most 2 SDK retries; callers add a deadline
//! through `retry::with_retry`), credentials from files (re-read every few minutes, so rotated
//! Kubernetes secrets take effect) or the default AWS chain, optional SSE, and server-verified
//! uploads: CRC-32 (`x-amz-checksum-crc32`) by default or SHA-256 (`checksum_algorithm`),
//! `Content-MD5` with `checksums: when_required` for older S3-compatible servers. SDK errors are mapped onto
//! `StoreError` kinds (network, timeouts, throttling, 5xx → Transient; digest mismatches →
//! Integrity; the rest → Permanent) with credentials redacted from every message.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

mod checksum;
mod client;
mod credentials;
mod errors;
mod multipart;
mod range;

use client::sdk_config;
pub use client::DEFAULT_REGION;
use credentials::Secrets;
use errors::{chain, classify, is_checksum_mismatch, Kind};

use super::{
    check_key, ChecksumAlgorithm, ChecksumMode, MultipartOptions, MultipartWriter, ObjectMeta,
    ObjectStore, PutNew, ServerSideEncryption, StoreError, StoreOptions,
};

/// An S3 bucket and prefix (cheap to clone: the client is shared).
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Without leading or trailing slashes; empty for the bucket's root.
    prefix: String,
    checksums: ChecksumMode,
    checksum_algorithm: ChecksumAlgorithm,
    sse: ServerSideEncryption,
    kms_key_id: Option<String>,
    /// Hash request bodies into the SigV4 signature: over plain HTTP, and for older servers
    /// (`checksums: when_required`). Over HTTPS, TLS protects the body in transit and the
    /// server checks it against the (signed) checksum header sent with it, so hashing it again
    /// for the signature (`UNSIGNED-PAYLOAD` instead) only costs CPU.
    pub(super) sign_payload: bool,
    /// Whether the server accepts `If-None-Match: *` on PutObject; cleared (for every clone)
    /// the first time it answers 501 NotImplemented, as AWS did before 2024 and some
    /// S3-compatible servers still do.
    conditional_puts: Arc<AtomicBool>,
    secrets: Secrets,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not the client: its configuration holds the credentials provider.
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("checksums", &self.checksums)
            .field("sse", &self.sse)
            .field("sign_payload", &self.sign_payload)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store for `s3://bucket/prefix` with `options` (endpoint, region, path style,
    /// credentials, SSE, checksum mode). Reads credential files now, so missing files fail
    /// here; does not contact the server.
    pub async fn new(
        bucket: String,
        prefix: String,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        if bucket.is_empty() || bucket.contains('/') {
            return Err(StoreError::Config(format!(
                "invalid bucket name {bucket:?}"
            )));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty()
            && (check_key(&prefix).is_err() || prefix.split('/').any(str::is_empty))
        {
            return Err(StoreError::Config(format!(
                "invalid prefix {prefix:?} in s3://{bucket}/{prefix}"
            )));
        }
        match (options.sse, &options.kms_key_id) {
            (ServerSideEncryption::AwsKms, _) | (_, None) => {}
            (_, Some(_)) => {
                return Err(StoreError::Config(
                    "kms_key_id is only valid with server-side encryption aws_kms".into(),
                ))
            }
        }
        let secrets = Secrets::default();
        let shared = sdk_config(options, &secrets).await?;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.force_path_style)
            .build();
        Ok(S3Store {
            client: Client::from_conf(config),
            bucket,
            prefix,
            checksums: options.checksums,
            checksum_algorithm: options.checksum_algorithm,
            sse: options.sse,
            kms_key_id: options.kms_key_id.clone(),
            sign_payload: signs_payload(options.endpoint_url.as_deref(), options.checksums),
            conditional_puts: Arc::new(AtomicBool::new(true)),
            secrets,
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key of a destination-relative key.
    fn object_key(&self, key: &str) -> Result<String, StoreError> {
        check_key(key)?;
        Ok(self.full(key))
    }

    fn full(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Map an SDK error of `operation` on `key` (a full object key or prefix).
    fn error<E>(
        &self,
        operation: &str,
        key: &str,
        err: &SdkError<E, HttpResponse>,
    ) -> (Kind, StoreError)
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (kind, text) = classify(err);
        let message = self
            .secrets
            .redact(format!("{operation} {}: {text}", self.location(key)));
        let error = match kind {
            Kind::Transient => StoreError::Transient(message),
            Kind::Integrity => StoreError::Integrity(message),
            Kind::Permanent | Kind::NotFound | Kind::PreconditionFailed | Kind::NotImplemented => {
                StoreError::Permanent(message)
            }
        };
        (kind, error)
    }
}

impl S3Store {
    /// The server-side encryption headers of an upload: the algorithm and, for SSE-KMS, the
    /// key (none: the bucket's default).
    pub(super) fn encryption(
        &self,
    ) -> (
        Option<aws_sdk_s3::types::ServerSideEncryption>,
        Option<String>,
    ) {
        use aws_sdk_s3::types::ServerSideEncryption as Sse;
        match self.sse {
            ServerSideEncryption::None => (None, None),
            ServerSideEncryption::Aes256 => (Some(Sse::Aes256), None),
            ServerSideEncryption::AwsKms => (Some(Sse::AwsKms), self.kms_key_id.clone()),
        }
    }

    /// One PutObject of `data` at `object_key` with the configured checksum and encryption;
    /// with `only_new`, `If-None-Match: *` (an existing object: `Kind::PreconditionFailed`).
    async fn put_object(
        &self,
        object_key: &str,
        data: Bytes,
        only_new: bool,
    ) -> Result<(), (Kind, StoreError)> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object_key);
        if only_new {
            request = request.if_none_match("*");
        }
        let digest = checksum::BodyDigest::of(self.checksums, self.checksum_algorithm, &data);
        request = request
            .set_checksum_crc32(digest.crc32.clone())
            .set_checksum_sha256(digest.sha256.clone())
            .set_content_md5(digest.content_md5.clone());
        let (sse, kms_key_id) = self.encryption();
        let request = request
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data));
        let sent = if self.sign_payload {
            request.send().await
        } else {
            request.customize().disable_payload_signing().send().await
        };
        let output = sent.map_err(|e| self.error("put", object_key, &e))?;
        // The server checked the body against the digest; when it echoes one, it must be ours.
        if let Some(mismatch) = digest.mismatch(output.checksum_crc32(), output.checksum_sha256()) {
            return Err((
                Kind::Integrity,
                StoreError::Integrity(format!("put {}: {mismatch}", self.location(object_key))),
            ));
        }
        Ok(())
    }

    /// A reader of a GET's body that checks its length against `expected` and maps body
    /// errors (a checksum mismatch → `Integrity`) with credentials redacted.
    fn body_reader(
        &self,
        object_key: &str,
        body: ByteStream,
        expected: Option<u64>,
    ) -> super::stream::S3Reader {
        let location = self.location(object_key);
        let secrets = self.secrets.clone();
        let where_ = location.clone();
        let map_error = Box::new(move |e: &aws_smithy_types::byte_stream::error::Error| {
            let message = secrets.redact(format!("get {where_}: reading the body: {}", chain(e)));
            if is_checksum_mismatch(e) {
                StoreError::Integrity(message)
            } else {
                StoreError::Transient(message)
            }
        });
        super::stream::S3Reader::new(body, location, expected, map_error)
    }
}

/// Whether requests sign their bodies: over plain HTTP (no endpoint means AWS, over HTTPS),
/// and with `checksums: when_required`, the mode for older S3-compatible servers, which may
/// not accept `UNSIGNED-PAYLOAD` either.
fn signs_payload(endpoint_url: Option<&str>, checksums: ChecksumMode) -> bool {
    let plain_http = endpoint_url
        .map(str::trim)
        .and_then(|e| e.get(..7))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    plain_http || checksums == ChecksumMode::WhenRequired
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let object_key = self.object_key(key)?;
        self.put_object(&object_key, data, false)
            .await
            .map_err(|(_, error)| error)
    }

    async fn put_new(&self, key: &str, data: Bytes) -> Result<PutNew, StoreError> {
        let object_key = self.object_key(key)?;
        if self.conditional_puts.load(Ordering::Relaxed) {
            match self.put_object(&object_key, data.clone(), true).await {
                Ok(()) => return Ok(PutNew::Stored),
                Err((Kind::PreconditionFailed, _)) => return Ok(PutNew::Existed),
                Err((Kind::NotImplemented, error)) => {
                    if self.conditional_puts.swap(false, Ordering::Relaxed) {
                        tracing::warn!(destination = %self.describe(), %error,
                            "the S3 server does not support conditional writes (If-None-Match): \
                             from now on WAL is uploaded with a plain PUT after its lookup, and a \
                             writer racing on the same key could be replaced");
                    }
                }
                Err((_, error)) => return Err(error),
            }
        }
        // The caller looked the key up before; without the condition a writer that stores
        // the same key in between is replaced.
        self.put_object(&object_key, data, false)
            .await
            .map_err(|(_, error)| error)?;
        Ok(PutNew::Stored)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        // One download path: the streaming reader checks the length and the SDK the checksum.
        let Some(mut reader) = self.get_stream(key).await? else {
            return Ok(None);
        };
        Ok(Some(super::stream::read_all(reader.as_mut()).await?))
    }

    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<Option<Box<dyn super::stream::ObjectReader>>, StoreError> {
        let object_key = self.object_key(key)?;
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) => {
                return match self.error("get", &object_key, &e) {
                    (Kind::NotFound, _) => Ok(None),
                    (_, error) => Err(error),
                }
            }
        };
        let expected = output.content_length().and_then(|n| u64::try_from(n).ok());
        Ok(Some(Box::new(self.body_reader(
            &object_key,
            output.body,
            expected,
        ))))
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
        if_match: Option<&str>,
    ) -> Result<Option<super::RangeRead>, StoreError> {
        self.read_range(key, start, len, if_match).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let object_key = self.object_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
        {
            Ok(output) => {
                let size = output
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| {
                        StoreError::Permanent(format!(
                            "head {}: no valid Content-Length",
                            self.location(&object_key)
                        ))
                    })?;
                Ok(Some(ObjectMeta {
                    key: key.to_owned(),
                    size,
                }))
            }
            Err(e) => match self.error("head", &object_key, &e) {
                // HEAD has no error body: a 404 for a missing bucket looks the same; put and list
                // report that one.
                (Kind::NotFound, _) => Ok(None),
                (_, error) => Err(error),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if prefix.starts_with('/')
            || prefix.split('/').any(|part| part == "..")
            || prefix.contains('\0')
        {
            return Err(StoreError::Config(format!("invalid prefix {prefix:?}")));
        }
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let full_prefix = format!("{root}{prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self.client.list_objects_v2().bucket(&self.bucket);
            if !full_prefix.is_empty() {
                request = request.prefix(&full_prefix);
            }
            if let Some(token) = &token {
                request = request.continuation_token(token);
            }
            let page = request
                .send()
                .await
                .map_err(|e| self.error("list", &full_prefix, &e).1)?;
            for object in page.contents() {
                let Some(full_key) = object.key() else {
                    continue;
                };
                let Some(key) = full_key.strip_prefix(root.as_str()) else {
                    continue;
                };
                // Folder markers that consoles create are not objects of ours.
                if key.is_empty() || key.ends_with('/') {
                    continue;
                }
                let size = object
                    .size()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0);
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size,
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => {
                    if token.as_deref() == Some(next) {
                        return Err(StoreError::Permanent(format!(
                            "list {}: the server returned the same continuation token twice",
                            self.location(&full_prefix)
                        )));
                    }
                    token = Some(next.to_owned());
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn put_multipart(
        &self,
        key: &str,
        options: MultipartOptions,
    ) -> Result<Box<dyn MultipartWriter>, StoreError> {
        Ok(Box::new(multipart::S3Upload::new(self, key, options)?))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let object_key = self.object_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error("delete", &object_key, &e) {
                (Kind::NotFound, _) => Ok(()),
                (_, error) => Err(error),
            },
        }
    }

    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests;
