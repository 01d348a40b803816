//! `get_range` on S3: one ranged GET (`Range: bytes=a-b`, optionally `If-Match`), its body's
//! length checked against what the server announced; the WAL restore reads large objects as
//! such parts in parallel.

use super::errors::Kind;
use super::S3Store;
use crate::store::stream::read_all;
use crate::store::{ObjectStore as _, RangeRead, StoreError};

impl S3Store {
    pub(super) async fn read_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
        if_match: Option<&str>,
    ) -> Result<Option<RangeRead>, StoreError> {
        let object_key = self.object_key(key)?;
        if len == 0 {
            return Err(StoreError::Permanent(format!(
                "get {}: an empty range was asked for",
                self.location(&object_key)
            )));
        }
        let last = start.saturating_add(len - 1);
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .range(format!("bytes={start}-{last}"));
        if let Some(tag) = if_match {
            request = request.if_match(tag);
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(e) => {
                return match self.error("get", &object_key, &e) {
                    (Kind::NotFound, _) => Ok(None),
                    // An empty object has no byte 0: read it whole.
                    _ if start == 0 && is_code(&e, "InvalidRange") => Ok(self
                        .get(key)
                        .await?
                        .map(|data| RangeRead::of_whole(data, start, len, None))),
                    // The object changed since the first part was read.
                    (Kind::PreconditionFailed, StoreError::Permanent(message)) => {
                        Err(StoreError::Integrity(format!(
                            "{message}: the object was replaced while it was read in parts"
                        )))
                    }
                    (_, error) => Err(error),
                };
            }
        };
        let announced = output
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                StoreError::Transient(format!(
                    "get {}: no valid Content-Length",
                    self.location(&object_key)
                ))
            })?;
        let etag = output.e_tag().map(str::to_owned);
        let total = match output.content_range() {
            Some(range) => Some(content_range_total(range).ok_or_else(|| {
                StoreError::Transient(format!(
                    "get {}: malformed Content-Range {range:?}",
                    self.location(&object_key)
                ))
            })?),
            None => None,
        };
        let mut reader = self.body_reader(&object_key, output.body, Some(announced));
        let data = read_all(&mut reader).await?;
        Ok(Some(match total {
            Some(total) => RangeRead { data, total, etag },
            // A server that ignores Range answers 200 with the whole object.
            None => RangeRead::of_whole(data, start, len, etag),
        }))
    }
}

/// Whether `err` is the service's error `code`.
fn is_code<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>, code: &str) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    matches!(err, aws_sdk_s3::error::SdkError::ServiceError(service)
        if service.err().code() == Some(code))
}

/// The total of `bytes a-b/total`.
fn content_range_total(range: &str) -> Option<u64> {
    let (_, total) = range.strip_prefix("bytes ")?.rsplit_once('/')?;
    total.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::content_range_total;

    #[test]
    fn content_range_totals() {
        assert_eq!(
            content_range_total("bytes 0-2097151/7814327"),
            Some(7814327)
        );
        assert_eq!(content_range_total("bytes 0-9/10"), Some(10));
        assert_eq!(content_range_total("bytes 0-9/*"), None);
        assert_eq!(content_range_total("0-9/10"), None);
    }
}
