//! A small pool of large byte buffers for WAL segments, so archiving does not allocate (and
//! page-fault in) two fresh 16 MiB buffers per segment: a read buffer and the gzip output.
//! Buffers come back when the last `Bytes` made from them drops; at most `keep` wait in the
//! pool, and [`BufferPool::release_idle`] frees them once the pool has not been used for a while,
//! so an idle manager does not sit on memory it needed for a burst. Files are read into them
//! whole, with their gzip CRC-32 computed on the way in.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bytes read (and checksummed) at a time by `read_file`: small enough to stay in a
/// core's L2 cache between the copy and the CRC.
const READ_CHUNK: usize = 256 << 10;

#[derive(Debug)]
struct Free {
    buffers: Vec<Vec<u8>>,
    last_used: Instant,
}

/// Reusable buffers; share it with `Arc`.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Free>,
    keep: usize,
}

impl BufferPool {
    /// A pool keeping at most `keep` unused buffers.
    pub fn new(keep: usize) -> Arc<Self> {
        Arc::new(BufferPool {
            free: Mutex::new(Free {
                buffers: Vec::new(),
                last_used: Instant::now(),
            }),
            keep,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for at least `capacity` bytes (a pooled one when it has it).
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = {
            let mut free = self.lock();
            free.last_used = Instant::now();
            let fits = free.buffers.iter().position(|b| b.capacity() >= capacity);
            match fits {
                Some(at) => Some(free.buffers.swap_remove(at)),
                None => free.buffers.pop(),
            }
        };
        let mut buffer = reused.unwrap_or_default();
        buffer.clear();
        buffer.reserve(capacity);
        buffer
    }

    /// Give a buffer back (dropped when the pool is full).
    pub fn give(&self, buffer: Vec<u8>) {
        if buffer.capacity() == 0 {
            return;
        }
        let mut free = self.lock();
        free.last_used = Instant::now();
        if free.buffers.len() < self.keep {
            free.buffers.push(buffer);
        }
    }

    /// `buffer` as `Bytes` that return it to this pool when the last clone drops.
    pub fn freeze(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buffer,
            pool: self.clone(),
        })
    }

    /// Read the whole file at `path` into a pooled buffer, with its gzip CRC-32 computed chunk
    /// by chunk right after each chunk is read (while it is in cache: a second pass over 16 MiB
    /// costs more than the CRC itself).
    pub fn read_file(self: &Arc<Self>, path: &Path) -> std::io::Result<(Bytes, u32)> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path)?;
        let expected = file.metadata()?.len() as usize;
        let mut buffer = self.take(expected);
        let mut crc = 0u32;
        loop {
            buffer.reserve(READ_CHUNK);
            let spare = buffer.spare_capacity_mut();
            let want = spare.len().min(READ_CHUNK);
            // SAFETY: the descriptor is open (owned by `file`); read(2) writes at most `want`
            // bytes into the spare capacity, which is valid for that many bytes.
            let got = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
            if got < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                self.give(buffer);
                return Err(err);
            }
            let got = (got as usize).min(want);
            if got == 0 {
                return Ok((self.freeze(buffer), crc));
            }
            let start = buffer.len();
            // SAFETY: read(2) initialised `got` (<= want) bytes past the old length.
            unsafe { buffer.set_len(start + got) };
            crc = crate::compress::crc32(crc, &buffer[start..]);
        }
    }

    /// Free the pooled buffers when nothing took or gave one for `idle`.
    pub fn release_idle(&self, idle: Duration) {
        let released = {
            let mut free = self.lock();
            if free.last_used.elapsed() < idle || free.buffers.is_empty() {
                return;
            }
            std::mem::take(&mut free.buffers)
        };
        drop(released);
    }

    /// How many buffers wait in the pool.
    pub fn pooled(&self) -> usize {
        self.lock().buffers.len()
    }
}

/// A pooled buffer behind a `Bytes`.
struct Pooled {
    buffer: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_clone_drops() {
        let pool = BufferPool::new(2);
        let mut buffer = pool.take(1 << 20);
        assert!(buffer.capacity() >= 1 << 20);
        buffer.extend_from_slice(b"segment");
        let bytes = pool.freeze(buffer);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.pooled(), 0, "a clone still holds it");
        assert_eq!(&clone[..], b"segment");
        drop(clone);
        assert_eq!(pool.pooled(), 1);
        // Reused: same capacity, emptied.
        let again = pool.take(1024);
        assert!(again.is_empty() && again.capacity() >= 1 << 20);
        pool.give(again);
        // At most `keep` wait in the pool.
        for _ in 0..5 {
            pool.give(Vec::with_capacity(16));
        }
        assert_eq!(pool.pooled(), 2);
        pool.release_idle(Duration::from_secs(3600));
        assert_eq!(pool.pooled(), 2, "used just now");
        pool.release_idle(Duration::ZERO);
        assert_eq!(pool.pooled(), 0);
    }

    #[test]
    fn reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000000010000000000000001");
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let pool = BufferPool::new(4);
        // Read twice: the second time into the pooled buffer of the first.
        for _ in 0..2 {
            assert_eq!(&pool.read_file(&path).unwrap().0[..], &content[..]);
        }
        // The same bytes, the CRC of all of them (several chunks).
        let big: Vec<u8> = (0..(3 * READ_CHUNK + 17) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let big_path = dir.path().join("big");
        std::fs::write(&big_path, &big).unwrap();
        for path in [&path, &big_path] {
            let expected = std::fs::read(path).unwrap();
            let (bytes, crc) = pool.read_file(path).unwrap();
            assert!(bytes[..] == expected[..]);
            assert_eq!(crc, crate::compress::crc32(0, &expected));
        }
        let (empty_bytes, empty_crc) = {
            let empty = dir.path().join("empty");
            std::fs::write(&empty, b"").unwrap();
            pool.read_file(&empty).unwrap()
        };
        assert!(empty_bytes.is_empty() && empty_crc == 0);
        drop(empty_bytes);
        let missing = pool.read_file(&dir.path().join("absent")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        assert!(pool.pooled() >= 1);
    }
}
