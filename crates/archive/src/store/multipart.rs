//! Streaming uploads with bounded memory: the `MultipartWriter` an `ObjectStore` hands out for
//! objects too large to hold in memory (base backups). The caller writes chunks of any size in
//! order and then completes or aborts; an object is visible only after `complete` succeeded,
//! and an aborted (or dropped) upload leaves no object behind.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{ObjectMeta, StoreError};

/// Part size S3 requires of every part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Default part size: 16 MiB parts cover objects up to 160 GB within S3's 10,000 parts.
pub const DEFAULT_PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts uploaded concurrently by default.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 3;

/// How a multipart upload splits and sends its data. Memory held is at most about
/// `part_size * (parts_in_flight + 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartOptions {
    pub part_size: usize,
    pub parts_in_flight: usize,
}

impl Default for MultipartOptions {
    fn default() -> Self {
        MultipartOptions {
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
        }
    }
}

impl MultipartOptions {
    /// The options with the part size raised to S3's minimum and at least one part in flight.
    pub fn normalized(self) -> Self {
        MultipartOptions {
            part_size: self.part_size.max(MIN_PART_SIZE),
            parts_in_flight: self.parts_in_flight.max(1),
        }
    }
}

/// One object being uploaded in pieces.
#[async_trait]
pub trait MultipartWriter: Send {
    /// Append `data` (any size; the writer cuts it into parts). Waits while too many parts are
    /// in flight, which bounds memory.
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError>;
    /// Upload what is left and make the object visible; returns its metadata.
    async fn complete(self: Box<Self>) -> Result<ObjectMeta, StoreError>;
    /// Give up: nothing becomes visible and the store's partial data is removed.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
    /// Bytes accepted so far.
    fn written(&self) -> u64;
}

/// Collects written data into parts of `part_size` bytes.
#[derive(Debug)]
pub(crate) struct PartBuffer {
    part_size: usize,
    pending: BytesMut,
}

impl PartBuffer {
    pub(crate) fn new(part_size: usize) -> Self {
        PartBuffer {
            part_size,
            pending: BytesMut::new(),
        }
    }

    /// Add `data`; returns the full parts now ready, in order.
    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        let mut ready = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve(self.part_size);
            }
            let take = (self.part_size - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.part_size {
                ready.push(self.pending.split().freeze());
            }
        }
        ready
    }

    /// What is left (possibly empty).
    pub(crate) fn take_rest(&mut self) -> Bytes {
        self.pending.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_have_the_part_size_except_the_last() {
        let mut buffer = PartBuffer::new(4);
        assert!(buffer.push(b"ab").is_empty());
        let parts = buffer.push(b"cdefghij");
        assert_eq!(parts, vec![Bytes::from("abcd"), Bytes::from("efgh")]);
        assert_eq!(buffer.take_rest(), Bytes::from("ij"));
        assert_eq!(buffer.take_rest(), Bytes::new());
        assert_eq!(buffer.push(b"wxyz"), vec![Bytes::from("wxyz")]);
    }
}
