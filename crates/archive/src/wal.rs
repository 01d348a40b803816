//! WAL archive and restore on an object store in barman-cloud's layout. Archiving never
//! overwrites: an object already at the key is compared with the local content, identical →
//! success, different → `Conflict`. Restoring writes through a temporary file and a rename, so
//! postgres never sees a truncated segment; a segment that is absent falls back to its
//! `.partial`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::time::Instant;

use crate::buffers::BufferPool;
use crate::compress;
use crate::layout::{Compression, Layout};
use crate::retry::with_retry;
use crate::store::{ObjectMeta, ObjectStore, PutNew, StoreError};
use crate::walheader::{check_segment, InvalidSegment};
use crate::walname::{InvalidWalName, WalFile};

mod restore;
pub use restore::{write_atomically, write_file, Durability, DOWNLOAD_PART_BYTES};

/// Compression suffixes barman-cloud can write that pgsteward cannot read (reported, not
/// silently skipped).
const OTHER_COMPRESSIONS: &[&str] = &[".bz2", ".xz", ".zst", ".lz4", ".snappy"];

/// Largest WAL file accepted when decompressing (postgres allows segments up to 1 GiB).
const MAX_WAL_BYTES: u64 = 1 << 30;

/// What archiving did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveOutcome {
    /// Uploaded and confirmed.
    Stored {
        key: String,
        raw_bytes: u64,
        stored_bytes: u64,
    },
    /// An identical object was already there.
    AlreadyArchived { key: String },
}

/// What restoring found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    Restored {
        key: String,
        bytes: u64,
        from_partial: bool,
    },
    NotFound,
}

/// Why a WAL operation failed.
#[derive(Debug, Error)]
pub enum WalError {
    #[error(transparent)]
    InvalidName(#[from] InvalidWalName),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to archive {name}: {reason}")]
    InvalidSegment {
        name: String,
        #[source]
        reason: InvalidSegment,
    },
    #[error("{key} already exists with different content: refusing to overwrite archived WAL")]
    Conflict { key: String },
    #[error("{key} uses a compression pgsteward cannot read (gzip and none are supported)")]
    UnsupportedCompression { key: String },
    #[error("{key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    /// The caller's condition for storing anything (`archive_file`'s `allowed`) did not hold.
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// WAL archive of one server on one store.
#[derive(Debug, Clone)]
pub struct WalArchive {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    compression: Compression,
    gzip_level: u32,
    /// Buffers segments are read into (see `buffers`).
    reads: Arc<BufferPool>,
    /// Buffers segments are compressed into: apart from `reads`, so each stays only as large
    /// as what it holds (a compressed segment rarely touches its whole 16 MiB).
    compressed: Arc<BufferPool>,
    /// Segments being read and compressed at once: one per CPU (see `cpu_slot`).
    compressing: Arc<tokio::sync::Semaphore>,
    /// Restored files being decompressed and written at once: one per CPU (see
    /// `decode_slot`), apart from `compressing` so a standby's archiving never waits on its
    /// restores or the other way round.
    decompressing: Arc<tokio::sync::Semaphore>,
    /// When set, a segment is archived only if it is a whole segment at its name's position,
    /// of this system when the identifier is known (`walheader`).
    segment_check: Option<SegmentCheck>,
}

/// What `checking_segments` checks a segment against.
#[derive(Debug, Clone, Copy)]
struct SegmentCheck {
    system_identifier: Option<u64>,
}

/// What to archive: content in memory, or a file to read when a CPU is free for it.
#[derive(Debug)]
enum Source {
    Memory(Bytes),
    File(PathBuf),
}

/// A segment ready to be stored, or the object already at its key with the local content.
enum Prepared {
    Existing {
        key: String,
        meta: ObjectMeta,
        content: Bytes,
    },
    Encoded {
        key: String,
        raw_bytes: u64,
        encoded: Bytes,
    },
}

/// Buffers of each kind a `WalArchive` keeps for reuse unless told otherwise.
const DEFAULT_POOLED_BUFFERS: usize = 1;

impl WalArchive {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        layout: Layout,
        compression: Compression,
        gzip_level: u32,
    ) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        WalArchive {
            store,
            layout,
            compression,
            gzip_level,
            reads: BufferPool::new(DEFAULT_POOLED_BUFFERS),
            compressed: BufferPool::new(DEFAULT_POOLED_BUFFERS),
            compressing: Arc::new(tokio::sync::Semaphore::new(cpus)),
            decompressing: Arc::new(tokio::sync::Semaphore::new(cpus)),
            segment_check: None,
        }
    }

    /// Archive a segment (or `.partial`) only when it is a whole segment at the position its
    /// name says, of the database system `system_identifier` when known; anything else fails
    /// with `InvalidSegment` and nothing is stored (see `walheader`).
    pub fn checking_segments(mut self, system_identifier: Option<u64>) -> Self {
        self.segment_check = Some(SegmentCheck { system_identifier });
        self
    }

    /// Ok unless segment checks are on and `content` is not the segment `file` names.
    fn check(&self, file: &WalFile, content: &[u8]) -> Result<(), WalError> {
        match self.segment_check {
            Some(check) => {
                check_segment(file, content, check.system_identifier).map_err(|reason| {
                    WalError::InvalidSegment {
                        name: file.to_string(),
                        reason,
                    }
                })
            }
            None => Ok(()),
        }
    }

    /// Keep up to `keep` read buffers and `keep` compressed ones for reuse (`keep`: the uploads
    /// that run at once).
    pub fn with_pooled_buffers(mut self, keep: usize) -> Self {
        self.reads = BufferPool::new(keep);
        self.compressed = BufferPool::new(keep);
        self
    }

    /// Free pooled buffers when none was used for `idle`.
    pub fn release_idle_buffers(&self, idle: Duration) {
        self.reads.release_idle(idle);
        self.compressed.release_idle(idle);
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Encode local content as it is stored, into a pooled buffer (`crc`: gzip's CRC-32 of
    /// `content` when the reader computed it).
    fn encode(&self, content: &Bytes, crc: Option<u32>) -> std::io::Result<Bytes> {
        if self.compression == Compression::None {
            return Ok(content.clone());
        }
        let crc = crc.unwrap_or_else(|| compress::crc32(0, content));
        let mut out = self.compressed.take(0);
        match compress::gzip_into_with_crc(content, crc, self.gzip_level, &mut out) {
            Ok(()) => Ok(self.compressed.freeze(out)),
            Err(e) => {
                self.compressed.give(out);
                Err(e)
            }
        }
    }

    /// Archive `content` as `file`, finishing before `deadline` (transient errors are retried).
    pub async fn archive(
        &self,
        file: &WalFile,
        content: Bytes,
        deadline: Instant,
    ) -> Result<ArchiveOutcome, WalError> {
        let allowed = std::future::ready(Ok(()));
        self.archive_from(file, Source::Memory(content), deadline, allowed)
            .await
    }

    /// Archive the file at `path` as `file`: read into a pooled buffer only once a CPU is free
    /// to compress it, so at most one uncompressed segment per CPU is held in memory however
    /// many uploads are under way. Nothing is stored unless `allowed`, which runs while the
    /// segment is looked up, read and compressed, answers Ok: a check that needs a round trip
    /// of its own (the destination rule before a first archive) then adds no time.
    pub async fn archive_file<F>(
        &self,
        file: &WalFile,
        path: &Path,
        deadline: Instant,
        allowed: F,
    ) -> Result<ArchiveOutcome, WalError>
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        self.archive_from(file, Source::File(path.to_path_buf()), deadline, allowed)
            .await
    }

    async fn archive_from<F>(
        &self,
        file: &WalFile,
        source: Source,
        deadline: Instant,
        allowed: F,
    ) -> Result<ArchiveOutcome, WalError>
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        let (allowed, prepared) = tokio::join!(allowed, self.prepare(file, source, deadline));
        allowed.map_err(WalError::NotAllowed)?;
        self.finish(prepared?, deadline).await
    }

    /// Stores a prepared segment, or compares it with the object already there.
    async fn finish(
        &self,
        prepared: Prepared,
        deadline: Instant,
    ) -> Result<ArchiveOutcome, WalError> {
        match prepared {
            Prepared::Existing { key, meta, content } => {
                self.compare_existing(&key, Some(meta.size), &content, deadline)
                    .await
            }
            Prepared::Encoded {
                key,
                raw_bytes,
                encoded,
            } => {
                let stored_bytes = encoded.len() as u64;
                // The store confirms the body it kept: S3 checks the checksum (or Content-MD5)
                // sent with it before storing, file:// fsyncs and links; no second round
                // trip is needed. Only as a new object: one stored by another writer since
                // the lookup is compared, never replaced. (A retried PUT whose first attempt
                // was stored finds its own object there, identical.)
                let put = with_retry("put", deadline, || {
                    self.store.put_new(&key, encoded.clone())
                });
                match put.await? {
                    PutNew::Stored => Ok(ArchiveOutcome::Stored {
                        key,
                        raw_bytes,
                        stored_bytes,
                    }),
                    PutNew::Existed => {
                        let this = self.clone();
                        let decoded_key = key.clone();
                        let content = tokio::task::spawn_blocking(move || {
                            this.decode(&decoded_key, this.compression, &encoded)
                        })
                        .await
                        .map_err(|e| {
                            StoreError::Permanent(format!("decompression task failed: {e}"))
                        })??;
                        self.compare_existing(&key, None, &content, deadline).await
                    }
                }
            }
        }
    }

    /// Looks the key up and reads the content; encodes it when no object is there yet.
    async fn prepare(
        &self,
        file: &WalFile,
        source: Source,
        deadline: Instant,
    ) -> Result<Prepared, WalError> {
        let key = self.layout.wal_key(file, self.compression);
        let existing = with_retry("head", deadline, || self.store.head(&key)).await?;
        let permit = self.cpu_slot().await?;
        if let Some(meta) = existing {
            let content = self.load(source).await?;
            drop(permit);
            self.check(file, &content)?;
            return Ok(Prepared::Existing { key, meta, content });
        }
        let this = self.clone();
        let file = file.clone();
        let (raw_bytes, encoded) = tokio::task::spawn_blocking(move || {
            let (content, crc) = this.load_blocking(source)?;
            this.check(&file, &content)?;
            let raw_bytes = content.len() as u64;
            // The segment's buffer goes back to its pool here, before the upload.
            let encoded = this.encode(&content, crc);
            drop(content);
            drop(permit);
            let encoded = encoded.map_err(|e| {
                WalError::Store(StoreError::Permanent(format!("compressing {file}: {e}")))
            })?;
            Ok::<_, WalError>((raw_bytes, encoded))
        })
        .await
        .map_err(|e| StoreError::Permanent(format!("compression task failed: {e}")))??;
        Ok(Prepared::Encoded {
            key,
            raw_bytes,
            encoded,
        })
    }

    /// One of the slots (one per CPU) for reading + compressing a segment: more uploads than
    /// that may wait on the network, but more compressions at once would only take turns on
    /// the same cores while holding more uncompressed segments in memory.
    async fn cpu_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, WalError> {
        slot_of(&self.compressing).await
    }

    /// The content of `source`; a file is read into a pooled buffer, with its CRC-32.
    fn load_blocking(&self, source: Source) -> Result<(Bytes, Option<u32>), WalError> {
        match source {
            Source::Memory(content) => Ok((content, None)),
            Source::File(path) => match self.reads.read_file(&path) {
                Ok((content, crc)) => Ok((content, Some(crc))),
                Err(source) => Err(WalError::Read { path, source }),
            },
        }
    }

    async fn load(&self, source: Source) -> Result<Bytes, WalError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.load_blocking(source).map(|(content, _)| content))
            .await
            .map_err(|e| StoreError::Permanent(format!("reading task failed: {e}")))?
    }

    /// Compare the object at `key` (`listed`: its size when a lookup found it) with `content`:
    /// identical → `AlreadyArchived`, different → `Conflict`.
    async fn compare_existing(
        &self,
        key: &str,
        listed: Option<u64>,
        content: &[u8],
        deadline: Instant,
    ) -> Result<ArchiveOutcome, WalError> {
        let Some(stored) = with_retry("get", deadline, || self.store.get(key)).await? else {
            let listed = listed.map_or_else(String::new, |n| format!(" ({n} bytes listed)"));
            return Err(StoreError::Transient(format!(
                "{key} vanished while being compared{listed}"
            ))
            .into());
        };
        let decoded = self.decode(key, self.compression, &stored)?;
        if decoded == content {
            Ok(ArchiveOutcome::AlreadyArchived {
                key: key.to_owned(),
            })
        } else {
            Err(WalError::Conflict {
                key: key.to_owned(),
            })
        }
    }

    fn decode(
        &self,
        key: &str,
        compression: Compression,
        stored: &Bytes,
    ) -> Result<Bytes, WalError> {
        match compression {
            Compression::None => Ok(stored.clone()),
            Compression::Gzip => {
                // Into a pooled segment buffer, like the ones segments are read into.
                let mut out = self.reads.take(0);
                match compress::gunzip_into(stored, MAX_WAL_BYTES, &mut out) {
                    Ok(()) => Ok(self.reads.freeze(out)),
                    Err(e) => {
                        self.reads.give(out);
                        Err(WalError::Corrupt {
                            key: key.to_owned(),
                            message: e.to_string(),
                        })
                    }
                }
            }
        }
    }

    /// Whether `file` is archived under the key this archive writes (one HEAD request; an
    /// object another tool stored with another compression suffix is not seen).
    pub async fn is_archived(&self, file: &WalFile, deadline: Instant) -> Result<bool, WalError> {
        let key = self.layout.wal_key(file, self.compression);
        Ok(with_retry("head", deadline, || self.store.head(&key))
            .await?
            .is_some())
    }

    /// Which of `files` are archived (under any suffix: compressed or not, by any tool), with
    /// one listing per directory they fall in rather than one request per file.
    pub async fn archived_among(
        &self,
        files: &[WalFile],
        deadline: Instant,
    ) -> Result<std::collections::HashSet<WalFile>, WalError> {
        let dirs: std::collections::BTreeSet<String> =
            files.iter().map(|f| self.layout.wal_dir(f)).collect();
        let mut present = std::collections::HashSet::new();
        for dir in dirs {
            let objects = with_retry("list", deadline, || self.store.list(&dir)).await?;
            present.extend(objects.iter().filter_map(|o| wal_file_of_key(&o.key)));
        }
        Ok(files
            .iter()
            .filter(|f| present.contains(*f))
            .cloned()
            .collect())
    }

    /// Every archived WAL file with its object (under any compression suffix), sorted by name.
    pub async fn list(&self, deadline: Instant) -> Result<Vec<(WalFile, ObjectMeta)>, WalError> {
        let prefix = self.layout.wals_prefix();
        let objects = with_retry("list", deadline, || self.store.list(&prefix)).await?;
        let mut out: Vec<(WalFile, ObjectMeta)> = objects
            .into_iter()
            .filter_map(|object| Some((wal_file_of_key(&object.key)?, object)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The WAL file an object key holds, whatever compression suffix barman-cloud or pgsteward
/// gave it (None for keys that are not WAL files).
fn wal_file_of_key(key: &str) -> Option<WalFile> {
    let name = key.rsplit('/').next()?;
    let base = std::iter::once(".gz")
        .chain(OTHER_COMPRESSIONS.iter().copied())
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    WalFile::parse(base).ok()
}

/// A permit of `slots` (the CPU slots of archiving or of restoring), in request order.
async fn slot_of(
    slots: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, WalError> {
    Ok(slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| StoreError::Permanent(format!("CPU slots closed: {e}")))?)
}

/// A deadline `timeout` from now.
pub fn deadline_in(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

#[cfg(test)]
mod tests;
