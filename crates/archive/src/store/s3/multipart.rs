//! Streaming uploads to S3: CreateMultipartUpload, UploadPart (parts of a fixed size, the last
//! one shorter, a few in flight at once, each with the digest `put` sends, which the server
//! verifies: CRC-32 by default or SHA-256, giving the object a composite checksum of that
//! algorithm, Content-MD5 with `checksums: when_required`) and CompleteMultipartUpload with the parts' checksums.
//! The upload starts lazily: an object smaller than one part is a single PutObject. Any
//! failure, `abort` or dropping the writer aborts the multipart upload so no object and no
//! stored parts remain.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::task::JoinSet;

use super::super::multipart::PartBuffer;
use super::super::{MultipartOptions, MultipartWriter, ObjectMeta, ObjectStore, StoreError};
use super::S3Store;

/// An upload in progress.
pub(crate) struct S3Upload {
    store: S3Store,
    /// Destination-relative key (for `put` and the returned metadata).
    key: String,
    /// Full object key.
    object_key: String,
    options: MultipartOptions,
    buffer: PartBuffer,
    /// Set once CreateMultipartUpload succeeded.
    upload_id: Option<String>,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    done: Vec<CompletedPart>,
    written: u64,
    /// Completed or aborted: nothing for Drop to clean up.
    finished: bool,
}

impl std::fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Upload")
            .field("object_key", &self.object_key)
            .field("upload_id", &self.upload_id)
            .field("next_part", &self.next_part)
            .finish_non_exhaustive()
    }
}

impl S3Upload {
    pub(crate) fn new(
        store: &S3Store,
        key: &str,
        options: MultipartOptions,
    ) -> Result<Self, StoreError> {
        let object_key = store.object_key(key)?;
        let options = options.normalized();
        Ok(S3Upload {
            store: store.clone(),
            key: key.to_owned(),
            object_key,
            options,
            buffer: PartBuffer::new(options.part_size),
            upload_id: None,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            written: 0,
            finished: false,
        })
    }

    async fn create(&mut self) -> Result<String, StoreError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let store = &self.store;
        let mut request = store
            .client
            .create_multipart_upload()
            .bucket(&store.bucket)
            .key(&self.object_key);
        request = request.set_checksum_algorithm(super::checksum::multipart_algorithm(
            store.checksums,
            store.checksum_algorithm,
        ));
        let (sse, kms_key_id) = store.encryption();
        request = request
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id);
        let output = request.send().await.map_err(|e| {
            store
                .error("create multipart upload", &self.object_key, &e)
                .1
        })?;
        let id = output.upload_id().map(str::to_owned).ok_or_else(|| {
            StoreError::Permanent(format!(
                "create multipart upload {}: the server returned no upload id",
                store.location(&self.object_key)
            ))
        })?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Start uploading `part` (waiting first while too many parts are in flight).
    async fn send_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let upload_id = self.create().await?;
        while self.in_flight.len() >= self.options.parts_in_flight {
            self.join_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let object_key = self.object_key.clone();
        self.in_flight
            .spawn(async move { upload_part(&store, &object_key, &upload_id, number, part).await });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), StoreError> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(Ok(Ok(part))) => {
                self.done.push(part);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(StoreError::Permanent(format!(
                "part upload task failed: {e}"
            ))),
        }
    }

    async fn finish(&mut self) -> Result<ObjectMeta, StoreError> {
        let rest = self.buffer.take_rest();
        if self.upload_id.is_none() {
            // Smaller than one part: a plain PutObject.
            self.store.put(&self.key, rest).await?;
            self.finished = true;
            return Ok(ObjectMeta {
                key: self.key.clone(),
                size: self.written,
            });
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let upload_id = self.create().await?;
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let store = &self.store;
        store
            .client
            .complete_multipart_upload()
            .bucket(&store.bucket)
            .key(&self.object_key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                store
                    .error("complete multipart upload", &self.object_key, &e)
                    .1
            })?;
        self.finished = true;
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.written,
        })
    }

    /// Stop every part and abort the upload on the server.
    async fn cancel(&mut self) -> Result<(), StoreError> {
        self.finished = true;
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        match self.upload_id.take() {
            None => Ok(()),
            Some(id) => abort_upload(&self.store, &self.object_key, &id).await,
        }
    }

    /// On error: abort (logging a failure to do so) and return the original error.
    async fn fail(&mut self, error: StoreError) -> StoreError {
        if let Err(abort_error) = self.cancel().await {
            tracing::warn!(key = %self.object_key, error = %abort_error,
                "aborting a failed multipart upload failed; the bucket's lifecycle rule for incomplete uploads removes its parts");
        }
        error
    }
}

async fn upload_part(
    store: &S3Store,
    object_key: &str,
    upload_id: &str,
    number: i32,
    data: Bytes,
) -> Result<CompletedPart, StoreError> {
    let request = store
        .client
        .upload_part()
        .bucket(&store.bucket)
        .key(object_key)
        .upload_id(upload_id)
        .part_number(number);
    let digest = super::checksum::BodyDigest::of(store.checksums, store.checksum_algorithm, &data);
    let request = request
        .set_checksum_crc32(digest.crc32.clone())
        .set_checksum_sha256(digest.sha256.clone())
        .set_content_md5(digest.content_md5.clone());
    let request = request
        .content_length(data.len() as i64)
        .body(ByteStream::from(data));
    let sent = if store.sign_payload {
        request.send().await
    } else {
        request.customize().disable_payload_signing().send().await
    };
    let output = sent.map_err(|e| {
        store
            .error(&format!("upload part {number} of"), object_key, &e)
            .1
    })?;
    if let Some(mismatch) = digest.mismatch(output.checksum_crc32(), output.checksum_sha256()) {
        return Err(StoreError::Integrity(format!(
            "upload part {number} of {}: {mismatch}",
            store.location(object_key)
        )));
    }
    let etag = output.e_tag().ok_or_else(|| {
        StoreError::Permanent(format!(
            "upload part {number} of {}: the server returned no ETag",
            store.location(object_key)
        ))
    })?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .e_tag(etag)
        .set_checksum_crc32(digest.crc32)
        .set_checksum_sha256(digest.sha256)
        .build())
}

async fn abort_upload(
    store: &S3Store,
    object_key: &str,
    upload_id: &str,
) -> Result<(), StoreError> {
    match store
        .client
        .abort_multipart_upload()
        .bucket(&store.bucket)
        .key(object_key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => match store.error("abort multipart upload", object_key, &e) {
            (super::Kind::NotFound, _) => Ok(()),
            (_, error) => Err(error),
        },
    }
}

#[async_trait::async_trait]
impl MultipartWriter for S3Upload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        if self.finished {
            return Err(StoreError::Permanent(format!(
                "upload to {} already ended",
                self.store.location(&self.object_key)
            )));
        }
        self.written += data.len() as u64;
        for part in self.buffer.push(&data) {
            if let Err(e) = self.send_part(part).await {
                return Err(self.fail(e).await);
            }
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        if self.finished {
            return Err(StoreError::Permanent(format!(
                "upload to {} already ended",
                self.store.location(&self.object_key)
            )));
        }
        match self.finish().await {
            Ok(meta) => Ok(meta),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.cancel().await
    }

    fn written(&self) -> u64 {
        self.written
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.in_flight.abort_all();
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        // Abandoned mid-way (the caller's task was cancelled): abort in the background.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let object_key = self.object_key.clone();
            runtime.spawn(async move {
                if let Err(e) = abort_upload(&store, &object_key, &upload_id).await {
                    tracing::warn!(key = %object_key, error = %e, "aborting an abandoned multipart upload failed");
                }
            });
        }
    }
}
