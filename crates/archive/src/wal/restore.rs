//! The restore side of the WAL archive: finding a file's object (the key this archive writes,
//! else a listing: other compressions, a segment's `.partial`), decompressing it into a pooled
//! buffer and writing it atomically (temporary file + rename, fsynced unless it is a cache).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::{slot_of, WalArchive, WalError, OTHER_COMPRESSIONS};
use crate::atomic_file::{self, WriteOptions};
use crate::layout::Compression;
use crate::retry::with_retry;
use crate::store::{ObjectMeta, StoreError};
use crate::walname::{WalFile, WalKind};
use crate::RestoreOutcome;

/// A stored object found for a WAL file.
struct Found {
    key: String,
    stored: Bytes,
    compression: Compression,
    partial: bool,
}

impl WalArchive {
    /// Find and download `file` (or, for a segment, its `.partial`), decompressed.
    pub async fn fetch(
        &self,
        file: &WalFile,
        deadline: Instant,
    ) -> Result<Option<(String, Bytes, bool)>, WalError> {
        let Some(found) = self.locate(file, deadline).await? else {
            return Ok(None);
        };
        let permit = self.decode_slot().await?;
        let this = self.clone();
        let key = found.key.clone();
        let data = tokio::task::spawn_blocking(move || {
            let data = this.decode(&found.key, found.compression, &found.stored);
            drop(permit);
            data
        })
        .await
        .map_err(|e| StoreError::Permanent(format!("decompression task failed: {e}")))??;
        Ok(Some((key, data, found.partial)))
    }

    /// Download `file` into `dest` atomically (temporary file in the same directory, then a
    /// rename; fsynced with `Durability::Fsync`). With `full_only`, a segment whose full file
    /// is absent is `NotFound` even when its `.partial` exists (for a cache of full segments).
    /// Decompression and the write run on a blocking thread.
    pub async fn fetch_to(
        &self,
        file: &WalFile,
        dest: &Path,
        durability: Durability,
        full_only: bool,
        deadline: Instant,
    ) -> Result<RestoreOutcome, WalError> {
        self.fetch_to_then(file, dest, durability, full_only, deadline, || {})
            .await
    }

    /// `fetch_to`, calling `on_found` as soon as the object is downloaded, before it is
    /// decompressed and written (a restore in order starts fetching the next files then).
    pub async fn fetch_to_then(
        &self,
        file: &WalFile,
        dest: &Path,
        durability: Durability,
        full_only: bool,
        deadline: Instant,
        on_found: impl FnOnce(),
    ) -> Result<RestoreOutcome, WalError> {
        let Some(found) = self.locate(file, deadline).await? else {
            return Ok(RestoreOutcome::NotFound);
        };
        if full_only && found.partial {
            return Ok(RestoreOutcome::NotFound);
        }
        on_found();
        // Downloads run as many at once as the caller lets them; decompressing and writing
        // takes a CPU slot, so only one segment-sized buffer per CPU is held at a time.
        let permit = self.decode_slot().await?;
        let this = self.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let data = this.decode(&found.key, found.compression, &found.stored)?;
            drop(found.stored);
            let bytes = data.len() as u64;
            write_blocking(&dest, &data, durability)?;
            drop(data);
            drop(permit);
            Ok(RestoreOutcome::Restored {
                key: found.key,
                bytes,
                from_partial: found.partial,
            })
        })
        .await
        .map_err(|e| StoreError::Permanent(format!("restore task failed: {e}")))?
    }

    /// One of the slots (one per CPU) for decompressing a restored file and writing it out:
    /// more at once would only take turns on the same cores while each holds a decompressed
    /// segment in memory. Waiters are served in order, so the file a restore asked for first
    /// is not overtaken by later prefetches.
    async fn decode_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, WalError> {
        slot_of(&self.decompressing).await
    }

    /// Download `file` into postgres's `dest` (`%p`) atomically: a temporary file in the same
    /// directory renamed into place, never a partial file under `dest`; not fsynced
    /// ([`Durability::Handoff`]).
    pub async fn restore_to(
        &self,
        file: &WalFile,
        dest: &Path,
        deadline: Instant,
    ) -> Result<RestoreOutcome, WalError> {
        self.fetch_to(file, dest, Durability::Handoff, false, deadline)
            .await
    }

    /// The stored object for `file`: the key this archive writes (one GET), else the best of
    /// a listing of `<dir>/<name>*` (a full file, our compression first, else a segment's
    /// `.partial`).
    async fn locate(&self, file: &WalFile, deadline: Instant) -> Result<Option<Found>, WalError> {
        // The object this archive writes is the first choice of the listing below; asked for
        // directly, a restore costs one request instead of two.
        let key = self.layout.wal_key(file, self.compression);
        if let Some(stored) = self.download(&key, self.compression, deadline).await? {
            return Ok(Some(Found {
                key,
                stored,
                compression: self.compression,
                partial: false,
            }));
        }
        let dir = self.layout.wal_dir(file);
        let prefix = format!("{dir}{}", file.name());
        let objects = with_retry("list", deadline, || self.store.list(&prefix)).await?;
        let mut candidates: Vec<(&ObjectMeta, Option<Compression>, bool)> = Vec::new();
        for object in &objects {
            let Some(rest) = object.key.strip_prefix(&prefix) else {
                continue;
            };
            let (suffix, partial) = match rest.strip_prefix(".partial") {
                Some(after) if file.kind() == WalKind::Segment => (after, true),
                Some(_) => continue,
                None => (rest, false),
            };
            // Only `<name>[.partial]` plus a compression suffix; other files that share the
            // prefix (`<segment>.<offset>.backup`) are not this file.
            match Compression::from_suffix(suffix) {
                Some(compression) => candidates.push((object, Some(compression), partial)),
                None if OTHER_COMPRESSIONS.contains(&suffix) => {
                    candidates.push((object, None, partial))
                }
                None => {}
            }
        }
        // Full files first; within them our own compression first.
        candidates.sort_by_key(|(_, compression, partial)| {
            (*partial, *compression != Some(self.compression))
        });
        let Some((object, compression, partial)) = candidates.first() else {
            return Ok(None);
        };
        let compression = compression.ok_or_else(|| WalError::UnsupportedCompression {
            key: object.key.clone(),
        })?;
        let Some(stored) = self.download(&object.key, compression, deadline).await? else {
            return Ok(None);
        };
        Ok(Some(Found {
            key: object.key.clone(),
            stored,
            compression,
            partial: *partial,
        }))
    }

    /// The object at `key`, or None. A large gzip object is read as parts of
    /// `DOWNLOAD_PART_BYTES`, `PARTS_IN_FLIGHT` at a time, each tied to the first part's
    /// version (`If-Match`): one GET is bounded by one connection's throughput, while a restore
    /// waits on every byte. Only gzip: its CRC-32 and size then check the assembled whole, also
    /// on servers that ignore `If-Match` on GET; anything else is one GET.
    async fn download(
        &self,
        key: &str,
        compression: Compression,
        deadline: Instant,
    ) -> Result<Option<Bytes>, WalError> {
        if compression != Compression::Gzip {
            return Ok(with_retry("get", deadline, || self.store.get(key)).await?);
        }
        let first = with_retry("get", deadline, || {
            self.store.get_range(key, 0, DOWNLOAD_PART_BYTES, None)
        })
        .await?;
        let Some(first) = first else {
            return Ok(None);
        };
        let total = first.total;
        let first_len = first.data.len() as u64;
        if first_len >= total {
            return Ok(Some(first.data));
        }
        if total > MAX_STORED_BYTES {
            return Err(WalError::Corrupt {
                key: key.to_owned(),
                message: format!("{total} bytes stored, more than any WAL file compresses to"),
            });
        }
        if first_len == 0 {
            return Err(StoreError::Transient(format!("get {key}: an empty first part")).into());
        }
        // Every part is a task waiting for one of the slots; dropping the set (an error) aborts
        // the rest.
        let slots = Arc::new(tokio::sync::Semaphore::new(PARTS_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for start in (first_len..total).step_by(DOWNLOAD_PART_BYTES as usize) {
            let len = DOWNLOAD_PART_BYTES.min(total - start);
            let (store, slots, key, etag) = (
                self.store.clone(),
                slots.clone(),
                key.to_owned(),
                first.etag.clone(),
            );
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let part = with_retry("get", deadline, || {
                    store.get_range(&key, start, len, etag.as_deref())
                })
                .await;
                (start, len, part)
            });
        }
        // Each part is copied to its place as it arrives and dropped: the object is held once,
        // plus the parts in flight.
        let mut whole = vec![0u8; total as usize];
        whole[..first.data.len()].copy_from_slice(&first.data);
        drop(first);
        while let Some(joined) = tasks.join_next().await {
            let (start, len, part) =
                joined.map_err(|e| StoreError::Permanent(format!("download task failed: {e}")))?;
            let part = part?.ok_or_else(|| {
                StoreError::Transient(format!("{key} vanished while it was read in parts"))
            })?;
            if part.data.len() as u64 != len || part.total != total {
                return Err(StoreError::Transient(format!(
                    "{key} changed while it was read in parts ({} of {len} bytes, size {} then {total})",
                    part.data.len(),
                    part.total
                ))
                .into());
            }
            let at = start as usize;
            whole[at..at + part.data.len()].copy_from_slice(&part.data);
        }
        // Every part arrived with its exact length, so together they fill the whole object.
        Ok(Some(Bytes::from(whole)))
    }
}

/// Size of the parts a large stored WAL file is downloaded in (a typical compressed segment
/// fits in one).
pub const DOWNLOAD_PART_BYTES: u64 = 2 << 20;
/// Parts of one object downloaded at once.
const PARTS_IN_FLIGHT: usize = 4;
/// No stored WAL file is larger: deflate's worst case on the largest segment, with room to
/// spare.
const MAX_STORED_BYTES: u64 = super::MAX_WAL_BYTES + (1 << 24);

/// Whether a written WAL file must reach the disk before the write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory.
    Fsync,
    /// Page cache only, for a restore_command's `%p`: postgres fsyncs every restored file it
    /// keeps (`KeepFileRestoredFromArchive` renames it with `durable_rename`), reads the others
    /// once and removes them, and after a crash asks for them again. An fsync here only adds
    /// its latency to every restored segment (10-15 ms per 16 MiB on the test machine, more on
    /// network block storage), which a point-in-time restore pays once per segment.
    Handoff,
    /// Page cache only: for caches discarded at startup (the prefetch spool), which a crash
    /// can leave torn but never serves afterwards.
    Cache,
}

/// Write `data` to `dest` through a temporary file in the same directory.
pub async fn write_atomically(dest: &Path, data: Bytes) -> Result<(), WalError> {
    write_file(dest, data, Durability::Fsync).await
}

/// Write `data` to `dest` through a temporary file in the same directory, as durable as asked.
pub async fn write_file(dest: &Path, data: Bytes, durability: Durability) -> Result<(), WalError> {
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || write_blocking(&dest, &data, durability))
        .await
        .map_err(|e| WalError::Store(StoreError::Permanent(format!("write task failed: {e}"))))?
}

/// `write_file` on the calling thread.
fn write_blocking(dest: &Path, data: &[u8], durability: Durability) -> Result<(), WalError> {
    let options = WriteOptions {
        durable: durability == Durability::Fsync,
        mode: None,
    };
    atomic_file::write(dest, data, options).map_err(|e| WalError::Write {
        path: e.path,
        source: e.source,
    })
}
