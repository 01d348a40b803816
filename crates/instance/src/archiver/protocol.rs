//! The local protocol between `pgsteward wal-archive`/`wal-restore` (run by postgres) and the
//! manager: one JSON request line and one JSON response line over a Unix socket that only the
//! postgres user can open (mode 0600). Each request names the caller's data directory, and
//! the archiver refuses requests for another one: two clusters configured with the same
//! socket can never archive one cluster's segment name from the other's pg_wal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Archive `pg_wal/<name>`; answer once it is stored.
    Archive {
        name: String,
        /// The caller's data directory (absent from callers older than the check).
        #[serde(default)]
        pgdata: Option<PathBuf>,
    },
    /// Restore `name` into `dest` (an absolute path).
    Restore {
        name: String,
        dest: PathBuf,
        #[serde(default)]
        pgdata: Option<PathBuf>,
    },
}

/// Whether `a` and `b` are the same directory (same device and inode, so symlinks and
/// different spellings of one path agree); false when either cannot be read.
pub fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_dir() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// For restores: whether the file was found.
    pub found: bool,
    /// What happened, for postgres's log.
    pub detail: String,
}

impl Response {
    pub fn success(detail: impl Into<String>) -> Self {
        Response {
            ok: true,
            found: true,
            detail: detail.into(),
        }
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Response {
            ok: true,
            found: false,
            detail: detail.into(),
        }
    }
    pub fn failure(detail: impl Into<String>) -> Self {
        Response {
            ok: false,
            found: false,
            detail: detail.into(),
        }
    }
}

/// Why the manager could not be asked (as opposed to a failed operation).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No manager listens: the caller falls back to doing the work itself.
    #[error("no manager answers on {0}")]
    NoManager(PathBuf),
    #[error("talking to the manager: {0:#}")]
    Broken(anyhow::Error),
}

/// Send `request` and wait up to `timeout` for the answer.
pub async fn call(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    let mut stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(CallError::NoManager(socket.to_path_buf()))
        }
        Err(e) => {
            return Err(CallError::Broken(
                anyhow::Error::new(e).context("connecting"),
            ))
        }
    };
    let exchange = async {
        let mut line = serde_json::to_string(request).context("encoding the request")?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .await
            .context("sending the request")?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader
            .read_line(&mut answer)
            .await
            .context("reading the answer")?;
        if answer.is_empty() {
            anyhow::bail!("the manager closed the connection without answering");
        }
        serde_json::from_str::<Response>(&answer).context("decoding the answer")
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            CallError::Broken(anyhow::anyhow!("no answer within {} s", timeout.as_secs()))
        })?
        .map_err(CallError::Broken)
}

/// Read one request line from `stream` (at most 64 KiB).
pub async fn read_request(stream: &mut BufReader<UnixStream>) -> Result<Request> {
    let mut line = String::new();
    let mut limited = (&mut *stream).take(64 * 1024);
    tokio::io::AsyncBufReadExt::read_line(&mut limited, &mut line)
        .await
        .context("reading the request")?;
    serde_json::from_str(&line).context("malformed request")
}

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_without_a_data_directory_still_parse() {
        let old: Request =
            serde_json::from_str(r#"{"op":"archive","name":"000000010000000000000001"}"#).unwrap();
        assert_eq!(
            old,
            Request::Archive {
                name: "000000010000000000000001".into(),
                pgdata: None
            }
        );
    }

    #[test]
    fn same_directory_follows_symlinks_and_tells_directories_apart() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::os::unix::fs::symlink(&a, dir.path().join("link")).unwrap();
        assert!(same_directory(&a, &dir.path().join("link")));
        assert!(same_directory(&a, &dir.path().join("b/../a")));
        assert!(!same_directory(&a, &b));
        assert!(!same_directory(&a, &dir.path().join("missing")));
    }
}
