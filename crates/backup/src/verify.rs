//! `verify`: download a backup and check it against its manifest: every archive's size and
//! SHA-256, then every file inside (decompressed and read as tar) against the size and
//! SHA-256 recorded when it was taken; missing, extra and corrupted files are all reported.
//! Archives stream one at a time (the store's `get_stream` into a bounded channel, hashed,
//! gunzipped and read as tar on a blocking thread), so memory stays at a few chunks whatever
//! the backup's size.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use pgsteward_archive::store::ObjectStore;
use tokio::sync::mpsc;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::catalog::Catalog;
use crate::info::BackupStatus;
use crate::manifest::Manifest;
use crate::restore::pipeline::ChannelReader;
use crate::tar::BLOCK;

/// Why verification could not run at all (as opposed to finding problems).
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("backup {0} not found")]
    NotFound(String),
    #[error("backup {0} has no pgsteward manifest (not taken by pgsteward?)")]
    NoManifest(String),
    #[error("catalog: {0}")]
    Catalog(String),
    #[error(transparent)]
    Store(#[from] pgsteward_archive::StoreError),
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub backup_id: String,
    pub archives_checked: usize,
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// Each problem found, one line each; empty when the backup is intact.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn octal(field: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(field);
    u64::from_str_radix(text.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Regular files of a tar stream: path → (size, sha256). Errors name the problem.
fn tar_files(reader: &mut impl Read) -> Result<BTreeMap<String, (u64, String)>, String> {
    let mut files = BTreeMap::new();
    let mut header = [0u8; BLOCK];
    let mut pax_path: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    loop {
        reader
            .read_exact(&mut header)
            .map_err(|e| format!("reading a tar header: {e}"))?;
        if header.iter().all(|b| *b == 0) {
            return Ok(files);
        }
        let stored: u64 = octal(&header[148..156]);
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if stored != sum {
            return Err("a tar header's checksum does not match".into());
        }
        let typeflag = header[156];
        let size = pax_size.take().unwrap_or_else(|| octal(&header[124..136]));
        let mut name = cstr(&header[0..100]);
        let prefix = cstr(&header[345..500]);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let name = pax_path.take().unwrap_or(name);
        let padded = size + crate::tar::padding(size) as u64;
        match typeflag {
            b'x' => {
                let mut data = vec![0u8; padded as usize];
                reader
                    .read_exact(&mut data)
                    .map_err(|e| format!("reading a PAX header: {e}"))?;
                let text = String::from_utf8_lossy(&data[..size as usize]).into_owned();
                for record in text.split_terminator('\n') {
                    let Some((_, kv)) = record.split_once(' ') else {
                        continue;
                    };
                    match kv.split_once('=') {
                        Some(("path", v)) => pax_path = Some(v.to_owned()),
                        Some(("size", v)) => pax_size = v.parse().ok(),
                        _ => {}
                    }
                }
            }
            b'0' | 0 => {
                let mut hasher = Sha256::new();
                let mut left = size;
                let mut buf = vec![0u8; 256 * 1024];
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    reader
                        .read_exact(&mut buf[..n])
                        .map_err(|e| format!("reading {name}: {e}"))?;
                    hasher.update(&buf[..n]);
                    left -= n as u64;
                }
                let mut pad = vec![0u8; crate::tar::padding(size)];
                reader
                    .read_exact(&mut pad)
                    .map_err(|e| format!("reading {name}: {e}"))?;
                files.insert(name, (size, hex::encode(hasher.finalize())));
            }
            _ => {
                let mut skip = reader.take(padded);
                std::io::copy(&mut skip, &mut std::io::sink())
                    .map_err(|e| format!("reading {name}: {e}"))?;
            }
        }
    }
}

/// Reads through `inner`, counting and hashing every byte that passes.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// One archive as it streamed: its size and SHA-256, and the files its tar holds (or why
/// they could not be read).
struct Streamed {
    size: u64,
    sha256: String,
    files: Result<BTreeMap<String, (u64, String)>, String>,
}

/// Chunks in flight between the download and the checking thread.
const CHANNEL_DEPTH: usize = 8;

/// Stream `key` through the checks; Ok(None) when it does not exist, Err when the download
/// failed.
async fn stream_archive(
    store: &Arc<dyn ObjectStore>,
    key: &str,
) -> Result<Option<Streamed>, String> {
    let Some(mut reader) = store.get_stream(key).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_DEPTH);
    let download = tokio::spawn(async move {
        loop {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    let message = e.to_string();
                    let _ = tx.send(Err(io::Error::other(message.clone()))).await;
                    return Err(message);
                }
            }
        }
    });
    let check = tokio::task::spawn_blocking(move || {
        let mut source = HashingReader {
            inner: ChannelReader::new(rx),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let files = {
            let mut decoder = flate2::read::MultiGzDecoder::new(&mut source);
            tar_files(&mut decoder)
        };
        // The rest of the object (gzip trailer, padding) counts for its size and digest.
        let drained = io::copy(&mut source, &mut io::sink());
        (source, files, drained)
    });
    let downloaded = download
        .await
        .map_err(|e| format!("download task failed: {e}"))?;
    let (source, files, drained) = check
        .await
        .map_err(|e| format!("verification task failed: {e}"))?;
    downloaded?;
    drained.map_err(|e| e.to_string())?;
    Ok(Some(Streamed {
        size: source.bytes,
        sha256: hex::encode(source.hasher.finalize()),
        files,
    }))
}

/// Verify backup `backup_id` of `catalog`.
pub async fn verify_backup(
    catalog: &Catalog,
    backup_id: &str,
) -> Result<VerifyReport, VerifyError> {
    let info = catalog
        .read(backup_id)
        .await
        .map_err(|e| VerifyError::Catalog(e.to_string()))?
        .ok_or_else(|| VerifyError::NotFound(backup_id.to_owned()))?;
    let mut report = VerifyReport {
        backup_id: backup_id.to_owned(),
        ..Default::default()
    };
    match info.status() {
        Ok(BackupStatus::Done) => {}
        Ok(other) => report.problems.push(format!(
            "backup.info status is {}, not DONE",
            other.as_str()
        )),
        Err(e) => report.problems.push(format!("backup.info: {e}")),
    }
    let store = catalog.store();
    let manifest_bytes = store
        .get(&Manifest::key(catalog, backup_id))
        .await?
        .ok_or_else(|| VerifyError::NoManifest(backup_id.to_owned()))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| VerifyError::Catalog(format!("manifest of {backup_id}: {e}")))?;
    for archive in &manifest.archives {
        let key = format!("{}{}", catalog.backup_prefix(backup_id), archive.name);
        let streamed = match stream_archive(store, &key).await {
            Ok(Some(streamed)) => streamed,
            Ok(None) => {
                report.problems.push(format!("{}: missing", archive.name));
                continue;
            }
            Err(e) => {
                report
                    .problems
                    .push(format!("{}: cannot be downloaded: {e}", archive.name));
                continue;
            }
        };
        report.archives_checked += 1;
        if streamed.size != archive.compressed_size {
            report.problems.push(format!(
                "{}: {} bytes stored, {} recorded",
                archive.name, streamed.size, archive.compressed_size
            ));
        }
        let digest = streamed.sha256;
        if digest != archive.compressed_sha256 {
            report.problems.push(format!(
                "{}: SHA-256 {digest} differs from the recorded {}",
                archive.name, archive.compressed_sha256
            ));
        }
        // Check the files too: a corrupted archive tells which files it damaged.
        let name = archive.name.clone();
        let found = match streamed.files {
            Ok(found) => found,
            Err(e) => {
                report.problems.push(format!("{name}: {e}"));
                BTreeMap::new()
            }
        };
        for file in &archive.files {
            match found.get(&file.path) {
                None => report
                    .problems
                    .push(format!("{name}: {} is missing", file.path)),
                Some((size, sha)) if *size != file.size || *sha != file.sha256 => {
                    report.problems.push(format!(
                        "{name}: {} differs from the manifest (size {size}, recorded {})",
                        file.path, file.size
                    ))
                }
                Some((size, _)) => {
                    report.files_checked += 1;
                    report.bytes_checked += size;
                }
            }
        }
        for path in found.keys() {
            if !archive.files.iter().any(|f| &f.path == path) {
                report
                    .problems
                    .push(format!("{name}: {path} is not in the manifest"));
            }
        }
    }
    Ok(report)
}
