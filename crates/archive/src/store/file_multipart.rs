//! Streaming uploads to a `file://` store: data goes to a hidden temporary file next to the
//! object (listings skip dot files), which `complete` fsyncs and renames into place before
//! fsyncing the directory; `abort`, an error or dropping the writer removes the temporary file.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::file::io_error;
use super::{MultipartWriter, ObjectMeta, StoreError};
use crate::atomic_file;

/// An upload in progress to `path` through `tmp`.
#[derive(Debug)]
pub(crate) struct FileUpload {
    key: String,
    path: PathBuf,
    tmp: PathBuf,
    /// None while a blocking write holds it, and after complete/abort.
    file: Option<std::fs::File>,
    written: u64,
}

impl FileUpload {
    pub(crate) async fn start(key: &str, path: PathBuf) -> Result<FileUpload, StoreError> {
        let dir = path
            .parent()
            .ok_or_else(|| StoreError::Config(format!("{} has no parent", path.display())))?
            .to_path_buf();
        let tmp = atomic_file::temporary_path(&path);
        let tmp_for_task = tmp.clone();
        let file = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
            std::fs::File::create(&tmp_for_task).map_err(|e| io_error("creating", &tmp_for_task, e))
        })
        .await
        .map_err(|e| StoreError::Permanent(format!("upload task failed: {e}")))??;
        Ok(FileUpload {
            key: key.to_owned(),
            path,
            tmp,
            file: Some(file),
            written: 0,
        })
    }

    fn take_file(&mut self) -> Result<std::fs::File, StoreError> {
        self.file.take().ok_or_else(|| {
            StoreError::Permanent(format!(
                "upload to {} was interrupted by an earlier error",
                self.path.display()
            ))
        })
    }
}

fn finish(file: std::fs::File, tmp: &Path, path: &Path) -> Result<(), StoreError> {
    atomic_file::commit(file, tmp, path).map_err(|e| io_error(e.action, &e.path, e.source))
}

#[async_trait]
impl MultipartWriter for FileUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        let mut file = self.take_file()?;
        let tmp = self.tmp.clone();
        let len = data.len() as u64;
        let file = tokio::task::spawn_blocking(move || {
            file.write_all(&data)
                .map(|()| file)
                .map_err(|e| io_error("writing", &tmp, e))
        })
        .await
        .map_err(|e| StoreError::Permanent(format!("upload task failed: {e}")))??;
        self.file = Some(file);
        self.written += len;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        let file = self.take_file()?;
        let (tmp, path) = (self.tmp.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || finish(file, &tmp, &path))
            .await
            .map_err(|e| StoreError::Permanent(format!("upload task failed: {e}")))??;
        // Renamed: nothing left for Drop to remove.
        self.tmp = PathBuf::new();
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.written,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.file = None;
        let tmp = std::mem::take(&mut self.tmp);
        match tokio::fs::remove_file(&tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing", &tmp, e)),
        }
    }

    fn written(&self) -> u64 {
        self.written
    }
}

impl Drop for FileUpload {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            // Completed uploads cleared tmp; anything else is abandoned.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
