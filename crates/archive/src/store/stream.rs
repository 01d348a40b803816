//! Streaming downloads: `ObjectStore::get_stream` hands out an `ObjectReader` that yields an
//! object's content in chunks, so a multi-gigabyte base backup is never held in memory. The
//! `file://` reader reads the file in 1 MiB chunks; the S3 reader passes on the chunks of the
//! GetObject body (which the SDK checks against the object's checksum at its end). Either way
//! the reader counts bytes and reports a short object as a transient error, never as success.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::StoreError;

/// Size of the chunks the `file://` reader returns.
const FILE_CHUNK: usize = 1024 * 1024;

/// One object being downloaded.
#[async_trait]
pub trait ObjectReader: Send + fmt::Debug {
    /// The next chunk, or None once the whole object (as long as the store said) was read.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError>;
    /// The object's size, when the store reported it.
    fn size(&self) -> Option<u64>;
}

/// The rest of `reader`'s content in one buffer (sized by the announced size, bounded: it
/// comes from the store).
pub async fn read_all(reader: &mut dyn ObjectReader) -> Result<Bytes, StoreError> {
    let capacity = reader.size().unwrap_or(0).min(64 << 20) as usize;
    let mut data = bytes::BytesMut::with_capacity(capacity);
    while let Some(chunk) = reader.next_chunk().await? {
        data.extend_from_slice(&chunk);
    }
    Ok(data.freeze())
}

/// A reader over content already in memory (the default `get_stream` of stores without a
/// streaming download).
#[derive(Debug)]
pub struct MemoryReader {
    data: Option<Bytes>,
    size: u64,
}

impl MemoryReader {
    pub fn new(data: Bytes) -> Self {
        MemoryReader {
            size: data.len() as u64,
            data: Some(data),
        }
    }
}

#[async_trait]
impl ObjectReader for MemoryReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        Ok(self.data.take().filter(|d| !d.is_empty()))
    }

    fn size(&self) -> Option<u64> {
        Some(self.size)
    }
}

/// A file read in chunks.
#[derive(Debug)]
pub struct FileReader {
    path: PathBuf,
    file: tokio::fs::File,
    size: u64,
    read: u64,
}

impl FileReader {
    /// Open `path`; None when it does not exist.
    pub async fn open(path: PathBuf) -> Result<Option<Self>, std::io::Error> {
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(FileReader {
            path,
            file,
            size: meta.len(),
            read: 0,
        }))
    }
}

#[async_trait]
impl ObjectReader for FileReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        let mut buf = vec![0u8; FILE_CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.file.read(&mut buf[filled..]).await.map_err(|e| {
                StoreError::Transient(format!("reading {}: {e}", self.path.display()))
            })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            if self.read < self.size {
                return Err(StoreError::Transient(format!(
                    "reading {}: ended after {} of {} bytes",
                    self.path.display(),
                    self.read,
                    self.size
                )));
            }
            return Ok(None);
        }
        buf.truncate(filled);
        self.read += filled as u64;
        Ok(Some(Bytes::from(buf)))
    }

    fn size(&self) -> Option<u64> {
        Some(self.size)
    }
}

/// The body of an S3 GetObject, chunk by chunk.
pub struct S3Reader {
    body: ByteStream,
    location: String,
    expected: Option<u64>,
    read: u64,
    /// Turns an SDK body error into a store error (redacting credentials).
    map_error: Box<dyn Fn(&aws_smithy_types::byte_stream::error::Error) -> StoreError + Send>,
}

impl fmt::Debug for S3Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Reader")
            .field("location", &self.location)
            .field("expected", &self.expected)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl S3Reader {
    pub(super) fn new(
        body: ByteStream,
        location: String,
        expected: Option<u64>,
        map_error: Box<dyn Fn(&aws_smithy_types::byte_stream::error::Error) -> StoreError + Send>,
    ) -> Self {
        S3Reader {
            body,
            location,
            expected,
            read: 0,
            map_error,
        }
    }
}

#[async_trait]
impl ObjectReader for S3Reader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            match self.body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    self.read += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                Some(Err(e)) => return Err((self.map_error)(&e)),
                None => {
                    if let Some(expected) = self.expected.filter(|n| *n != self.read) {
                        return Err(StoreError::Transient(format!(
                            "get {}: received {} bytes of {expected}",
                            self.location, self.read
                        )));
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn size(&self) -> Option<u64> {
        self.expected
    }
}
