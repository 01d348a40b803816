//! `file://` store: objects are files below a root directory. Writes go to a temporary file in
//! the same directory, are fsynced, renamed into place (hard-linked by `put_new`, which never
//! replaces a file), and the directory is fsynced, so an object is either absent or whole.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::file_multipart::FileUpload;
use super::{
    check_key, MultipartOptions, MultipartWriter, ObjectMeta, ObjectStore, PutNew, StoreError,
};
use crate::atomic_file::{self, WriteOptions};

/// A directory used as an object store.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

pub(super) fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let message = format!("{what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::Interrupted
        | std::io::ErrorKind::TimedOut
        | std::io::ErrorKind::WouldBlock => StoreError::Transient(message),
        _ => StoreError::Permanent(message),
    }
}

impl FileStore {
    /// A store rooted at `root` (created when missing).
    pub fn new(root: PathBuf) -> Result<Self, StoreError> {
        if !root.is_absolute() {
            return Err(StoreError::Config(format!(
                "file store root {} must be absolute",
                root.display()
            )));
        }
        std::fs::create_dir_all(&root).map_err(|e| io_error("creating", &root, e))?;
        Ok(FileStore { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    create_parent(path)?;
    atomic_file::write(path, data, WriteOptions::DURABLE)
        .map_err(|e| io_error(e.action, &e.path, e.source))
}

/// `write_atomically` unless a file is already at `path`.
fn write_new(path: &Path, data: &[u8]) -> Result<PutNew, StoreError> {
    create_parent(path)?;
    match atomic_file::write_new(path, data, WriteOptions::DURABLE) {
        Ok(true) => Ok(PutNew::Stored),
        Ok(false) => Ok(PutNew::Existed),
        Err(e) => Err(io_error(e.action, &e.path, e.source)),
    }
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::Config(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))
}

fn list_below(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
    // Walk from the deepest directory the prefix names, then filter by the full prefix.
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let start = root.join(dir_part);
    let mut out = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("listing", &dir, e)),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let key = relative.to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(path);
            } else if key.starts_with(prefix)
                && !entry.file_name().to_string_lossy().starts_with('.')
            {
                out.push(ObjectMeta {
                    key,
                    size: meta.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[async_trait]
impl ObjectStore for FileStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &data))
            .await
            .map_err(|e| StoreError::Permanent(format!("write task failed: {e}")))?
    }

    async fn put_new(&self, key: &str, data: Bytes) -> Result<PutNew, StoreError> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || write_new(&path, &data))
            .await
            .map_err(|e| StoreError::Permanent(format!("write task failed: {e}")))?
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
        _if_match: Option<&str>,
    ) -> Result<Option<super::RangeRead>, StoreError> {
        // Objects are replaced only by a rename, so one open file is one version.
        let path = self.path(key)?;
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_range(&path, start, len))
        };
        match read
            .await
            .map_err(|e| StoreError::Permanent(format!("reading task failed: {e}")))?
        {
            Ok((data, total)) => Ok(Some(super::RangeRead {
                data: Bytes::from(data),
                total,
                etag: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<Option<Box<dyn super::stream::ObjectReader>>, StoreError> {
        let path = self.path(key)?;
        match super::stream::FileReader::open(path.clone()).await {
            Ok(reader) => Ok(reader.map(|r| Box::new(r) as Box<dyn super::stream::ObjectReader>)),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: meta.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("inspecting", &path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if prefix.contains("..") {
            return Err(StoreError::Config(format!("invalid prefix {prefix:?}")));
        }
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || list_below(&root, &prefix))
            .await
            .map_err(|e| StoreError::Permanent(format!("list task failed: {e}")))?
    }

    async fn put_multipart(
        &self,
        key: &str,
        _options: MultipartOptions,
    ) -> Result<Box<dyn MultipartWriter>, StoreError> {
        let path = self.path(key)?;
        Ok(Box::new(FileUpload::start(key, path).await?))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("deleting", &path, e)),
        }
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// Up to `len` bytes of the file at `path` from `start`, and the file's size.
fn read_range(path: &Path, start: u64, len: u64) -> std::io::Result<(Vec<u8>, u64)> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let total = file.metadata()?.len();
    let want = len.min(total.saturating_sub(start));
    let mut data = vec![0; usize::try_from(want).map_err(std::io::Error::other)?];
    file.read_exact_at(&mut data, start)?;
    Ok((data, total))
}
