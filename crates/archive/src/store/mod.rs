//! The object store seam: one small async trait with two implementations, S3 (`s3://bucket/
//! prefix`, through aws-sdk-s3) and a local directory (`file:///path`, the embedded default).
//! Keys are relative to the destination; the store adds its own prefix.

pub mod file;
mod file_multipart;
pub mod multipart;
pub mod s3;
pub mod stream;

pub use multipart::{MultipartOptions, MultipartWriter};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

/// Metadata of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the destination.
    pub key: String,
    pub size: u64,
}

/// Part of an object, read by [`ObjectStore::get_range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRead {
    /// The bytes from the requested start (fewer than asked at the object's end).
    pub data: Bytes,
    /// The size of the whole object.
    pub total: u64,
    /// The object's version tag where the store has one (S3's ETag), to pass as `if_match`
    /// when the rest is read.
    pub etag: Option<String>,
}

impl RangeRead {
    /// The range `start..start + len` of a whole object `data` (shorter at its end).
    pub fn of_whole(data: Bytes, start: u64, len: u64, etag: Option<String>) -> Self {
        let total = data.len() as u64;
        let from = start.min(total) as usize;
        let to = start.saturating_add(len).min(total) as usize;
        RangeRead {
            data: data.slice(from..to),
            total,
            etag,
        }
    }
}

/// What [`ObjectStore::put_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutNew {
    /// The object is stored.
    Stored,
    /// An object was already at the key; nothing was written.
    Existed,
}

/// An object store error; callers branch on the kind.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Worth retrying: network failures, timeouts, throttling, 5xx.
    #[error("transient object store error: {0}")]
    Transient(String),
    /// Not worth retrying: credentials, permissions, missing bucket, bad request.
    #[error("object store error: {0}")]
    Permanent(String),
    /// The store did not confirm the content that was sent.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// Invalid destination or options.
    #[error("invalid object store configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

/// An object store.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Store `data` at `key`, returning only once the store confirmed the whole object (the
    /// server verifies a checksum of the body). Overwrites; callers that must not overwrite
    /// use `put_new`.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// `put`, unless an object is already at `key` (S3: `If-None-Match: *`, which AWS and
    /// current S3-compatible servers honour; `file://`: a hard link, which fails on an
    /// existing file): then nothing is written and the answer is [`PutNew::Existed`]. A
    /// server that ignores the condition stores the object as `put` does, so callers still
    /// look (`head`) before they upload; this closes the window between that look and the
    /// write.
    async fn put_new(&self, key: &str, data: Bytes) -> Result<PutNew, StoreError>;
    /// The object's content, or None when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    /// The object's content as a stream of chunks, or None when it does not exist. Stores
    /// without a streaming download fall back to `get`.
    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<Option<Box<dyn stream::ObjectReader>>, StoreError> {
        Ok(self
            .get(key)
            .await?
            .map(|data| Box::new(stream::MemoryReader::new(data)) as Box<dyn stream::ObjectReader>))
    }
    /// `len` bytes of the object from `start` (fewer at its end) with the object's size, or
    /// None when it does not exist. With `if_match`, a store with version tags refuses
    /// (`Integrity`) to read an object that is no longer that version, so parts read one by
    /// one belong to one object. Stores without ranged reads slice the whole object.
    async fn get_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
        _if_match: Option<&str>,
    ) -> Result<Option<RangeRead>, StoreError> {
        Ok(self
            .get(key)
            .await?
            .map(|data| RangeRead::of_whole(data, start, len, None)))
    }
    /// The object's metadata, or None when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// Start a streaming upload of a large object to `key` (overwrites once completed).
    /// Memory stays bounded by `options`; see [`MultipartWriter`].
    async fn put_multipart(
        &self,
        key: &str,
        options: MultipartOptions,
    ) -> Result<Box<dyn MultipartWriter>, StoreError>;
    /// Delete the object (no error when it does not exist).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// The destination, for logs and status (never credentials).
    fn describe(&self) -> String;
}

/// How checksums of uploads are sent to S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Send a checksum with every upload the server can verify (default).
    #[default]
    WhenSupported,
    /// Only when the operation requires one (older S3-compatible servers).
    WhenRequired,
}

/// The checksum an upload carries for the server to verify (with `ChecksumMode::WhenSupported`).
/// Either detects a body damaged on its way; the object's content is never compared through it
/// (archiving compares bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumAlgorithm {
    /// CRC-32 (`x-amz-checksum-crc32`, default, as in the AWS SDKs): cheap on both sides.
    #[default]
    Crc32,
    /// SHA-256 (`x-amz-checksum-sha256`), for policies that ask for a cryptographic digest.
    Sha256,
}

/// Server-side encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerSideEncryption {
    #[default]
    None,
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS (`aws:kms`), with `kms_key_id`.
    AwsKms,
}

/// Options of S3 destinations (ignored by `file://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
    /// Files holding the access key id and secret (else the default AWS chain: environment,
    /// profile, web identity, instance profile).
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    pub sse: ServerSideEncryption,
    pub kms_key_id: Option<String>,
    pub checksums: ChecksumMode,
    pub checksum_algorithm: ChecksumAlgorithm,
    /// A PEM file of CA certificates trusted for the endpoint, besides the system's roots
    /// (a private MinIO's CA, say).
    pub ca_file: Option<PathBuf>,
}

/// Open the store a destination URL names: `s3://bucket[/prefix]` or `file:///path`.
pub async fn open(
    destination: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let url = url::Url::parse(destination).map_err(|e| {
        StoreError::Config(format!("destination {destination:?} is not a URL: {e}"))
    })?;
    match url.scheme() {
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) {
                return Err(StoreError::Config(format!(
                    "file destination {destination:?} must be file:///absolute/path"
                )));
            }
            Ok(Arc::new(file::FileStore::new(PathBuf::from(url.path()))?))
        }
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| {
                    StoreError::Config(format!("s3 destination {destination:?} has no bucket"))
                })?
                .to_owned();
            let prefix = url.path().trim_matches('/').to_owned();
            Ok(Arc::new(s3::S3Store::new(bucket, prefix, options).await?))
        }
        other => Err(StoreError::Config(format!(
            "unsupported destination scheme {other:?} in {destination:?} (use s3:// or file://)"
        ))),
    }
}

/// Reject keys that could escape the destination.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == ".." || part == ".")
        || key.contains('\0')
    {
        return Err(StoreError::Config(format!("invalid object key {key:?}")));
    }
    Ok(())
}
