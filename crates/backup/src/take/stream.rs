//! Turning a list of entries into one `.tar.gz` stream (runs on its own thread): a pool of
//! reader threads reads file content in chunks ahead of the tar writer (in order, a bounded
//! number of chunks in flight), the tar writer hashes each file for the manifest and feeds
//! [`ParallelGzip`]. Files are archived with the size seen when scanning: one that grew is
//! cut there, one that shrank is padded with zeros, one that vanished before its first chunk
//! is left out (postgres's documented rules for files changing during a base backup: WAL
//! replay repairs them).

use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::scan::Item;
use crate::gzip::{GzipTotals, ParallelGzip, Sink, DEFAULT_BLOCK_SIZE};
use crate::manifest::ManifestFile;
use crate::tar::{self, Entry, EntryKind};

/// Bytes read per chunk.
const CHUNK: u64 = 1024 * 1024;

/// How one archive is compressed and read.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub gzip_level: u32,
    pub compressors: usize,
    pub readers: usize,
}

/// Files added after the walk (backup_label), or None to abandon the archive.
pub type Extra = Option<Vec<(String, Vec<u8>)>>;

/// What the writer reports at the end.
#[derive(Debug)]
pub struct StreamResult {
    pub totals: GzipTotals,
    pub files: Vec<ManifestFile>,
}

struct ReadJob {
    path: PathBuf,
    offset: u64,
    len: u64,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

fn read_chunk(job: &ReadJob) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(&job.path)?;
    let mut buf = vec![0u8; job.len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], job.offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Start readers for the files of `items`; returns the ordered chunk replies.
fn start_readers(items: &[Item], readers: usize) -> Receiver<Receiver<io::Result<Vec<u8>>>> {
    let readers = readers.max(1);
    let (job_tx, job_rx) = mpsc::sync_channel::<ReadJob>(readers);
    let job_rx = Arc::new(Mutex::new(job_rx));
    for _ in 0..readers {
        let jobs = Arc::clone(&job_rx);
        std::thread::spawn(move || loop {
            let job = {
                let Ok(receiver) = jobs.lock() else { return };
                match receiver.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            };
            let _ = job.reply.send(read_chunk(&job));
        });
    }
    // Chunks in flight bound memory: 2 per reader plus the queue.
    let (order_tx, order_rx) = mpsc::sync_channel(readers * 2);
    let files: Vec<(PathBuf, u64)> = items
        .iter()
        .filter(|i| i.size() > 0)
        .map(|i| (i.source.clone(), i.size()))
        .collect();
    std::thread::spawn(move || {
        for (path, size) in files {
            let mut offset = 0;
            while offset < size {
                let len = CHUNK.min(size - offset);
                let (reply_tx, reply_rx) = mpsc::sync_channel(1);
                if order_tx.send(reply_rx).is_err() {
                    return;
                }
                let job = ReadJob {
                    path: path.clone(),
                    offset,
                    len,
                    reply: reply_tx,
                };
                if job_tx.send(job).is_err() {
                    return;
                }
                offset += len;
            }
        }
    });
    order_rx
}

fn next_chunk(order: &Receiver<Receiver<io::Result<Vec<u8>>>>) -> io::Result<io::Result<Vec<u8>>> {
    let reply = order
        .recv()
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "file readers stopped"))?;
    reply
        .recv()
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "a file reader died"))
}

fn file_entry(path: &str, size: u64, like: &Entry) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryKind::File { size },
        mode: 0o600,
        ..like.clone()
    }
}

/// Write `items` as a tar through parallel gzip into `sink`. After the items, signals
/// `items_done` and waits on `extra` for files to append (backup_label); `None` there
/// abandons the archive with an error (no gzip trailer is written).
pub fn write_archive(
    items: &[Item],
    settings: StreamSettings,
    sink: Sink,
    done_bytes: &AtomicU64,
    items_done: Option<tokio::sync::oneshot::Sender<()>>,
    extra: Option<Receiver<Extra>>,
) -> io::Result<StreamResult> {
    let mut gz = ParallelGzip::new(
        settings.gzip_level,
        settings.compressors,
        DEFAULT_BLOCK_SIZE,
        sink,
    )?;
    let order = start_readers(items, settings.readers);
    let mut files = Vec::new();
    for item in items {
        let size = item.size();
        if size == 0 {
            tar::write_header(&mut gz, &item.entry)?;
            if matches!(item.entry.kind, EntryKind::File { .. }) {
                files.push(ManifestFile {
                    path: item.entry.path.clone(),
                    size: 0,
                    sha256: hex::encode(Sha256::digest(b"")),
                });
            }
            continue;
        }
        let chunks = size.div_ceil(CHUNK);
        let first = next_chunk(&order)?;
        let first = match first {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %item.entry.path, "file vanished during the backup: left out");
                for _ in 1..chunks {
                    let _ = next_chunk(&order)?;
                }
                done_bytes.fetch_add(size, Ordering::Relaxed);
                continue;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading {}: {e}", item.source.display()),
                ))
            }
        };
        tar::write_header(&mut gz, &item.entry)?;
        let mut hasher = Sha256::new();
        let mut chunk = Ok(first);
        let mut short = false;
        for index in 0..chunks {
            if index > 0 {
                chunk = next_chunk(&order)?;
            }
            let expected = CHUNK.min(size - index * CHUNK) as usize;
            let mut data = match chunk {
                Ok(data) => data,
                Err(ref e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading {}: {e}", item.source.display()),
                    ))
                }
            };
            if data.len() < expected {
                short = true;
                data.resize(expected, 0);
            }
            hasher.update(&data);
            gz.write_all(&data)?;
            done_bytes.fetch_add(expected as u64, Ordering::Relaxed);
            chunk = Ok(Vec::new());
        }
        if short {
            tracing::debug!(path = %item.entry.path, "file shrank during the backup: padded with zeros");
        }
        tar::write_padding(&mut gz, size)?;
        files.push(ManifestFile {
            path: item.entry.path.clone(),
            size,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    if let Some(done) = items_done {
        let _ = done.send(());
    }
    if let Some(extra) = extra {
        let root = items.first().map(|i| i.entry.clone());
        let Some(Some(extra_files)) = extra.recv().ok() else {
            return Err(io::Error::other("the backup was abandoned before it ended"));
        };
        for (path, content) in extra_files {
            let entry = match &root {
                Some(root) => file_entry(&path, content.len() as u64, root),
                None => return Err(io::Error::other("an archive without a root entry")),
            };
            tar::write_header(&mut gz, &entry)?;
            gz.write_all(&content)?;
            tar::write_padding(&mut gz, content.len() as u64)?;
            files.push(ManifestFile {
                path,
                size: content.len() as u64,
                sha256: hex::encode(Sha256::digest(&content)),
            });
        }
    }
    tar::write_end(&mut gz)?;
    let totals = gz.finish()?;
    Ok(StreamResult { totals, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::take::scan::scan_pgdata;
    use std::io::Read;

    /// Files that vanish, shrink or grow after the scan do not fail the archive: vanished ones
    /// are left out, the others keep the scanned size (zero-padded or cut).
    #[test]
    fn files_changing_during_the_backup_are_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("base/1")).unwrap();
        std::fs::create_dir_all(root.join("global")).unwrap();
        std::fs::write(root.join("global/pg_control"), vec![7u8; 8192]).unwrap();
        let big: Vec<u8> = (0..3 * CHUNK as usize + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(root.join("base/1/big"), &big).unwrap();
        std::fs::write(root.join("base/1/gone"), vec![1u8; 5000]).unwrap();
        std::fs::write(root.join("base/1/shrinks"), vec![2u8; 10_000]).unwrap();
        std::fs::write(root.join("base/1/grows"), vec![3u8; 1000]).unwrap();
        let (items, _) = scan_pgdata(root).unwrap();
        std::fs::remove_file(root.join("base/1/gone")).unwrap();
        std::fs::write(root.join("base/1/shrinks"), vec![2u8; 100]).unwrap();
        std::fs::write(root.join("base/1/grows"), vec![3u8; 3000]).unwrap();

        let out = Arc::new(Mutex::new(Vec::new()));
        let sink_out = Arc::clone(&out);
        let sink: Sink = Box::new(move |b| {
            sink_out.lock().unwrap().extend_from_slice(&b);
            Ok(())
        });
        let done = AtomicU64::new(0);
        let (extra_tx, extra_rx) = mpsc::channel();
        extra_tx
            .send(Some(vec![("backup_label".into(), b"LABEL\n".to_vec())]))
            .unwrap();
        let settings = StreamSettings {
            gzip_level: 1,
            compressors: 2,
            readers: 3,
        };
        let result = write_archive(&items, settings, sink, &done, None, Some(extra_rx)).unwrap();
        let paths: Vec<&str> = result.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "base/1/big",
                "base/1/grows",
                "base/1/shrinks",
                "global/pg_control",
                "backup_label"
            ]
        );
        assert_eq!(result.files[1].size, 1000);
        assert_eq!(result.files[2].size, 10_000);
        assert_eq!(result.files[0].sha256, hex::encode(Sha256::digest(&big)));

        let gz = out.lock().unwrap().clone();
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let tar_path = dir.path().join("data.tar");
        std::fs::write(&tar_path, &tar_bytes).unwrap();
        let status = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&tar_path)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(x.join("base/1/big")).unwrap(), big);
        let shrunk = std::fs::read(x.join("base/1/shrinks")).unwrap();
        assert_eq!(shrunk.len(), 10_000);
        assert!(shrunk[..100].iter().all(|b| *b == 2) && shrunk[100..].iter().all(|b| *b == 0));
        assert_eq!(
            std::fs::read(x.join("base/1/grows")).unwrap(),
            vec![3u8; 1000]
        );
        assert!(!x.join("base/1/gone").exists());
        assert_eq!(std::fs::read(x.join("backup_label")).unwrap(), b"LABEL\n");
        assert_eq!(
            done.load(Ordering::Relaxed),
            items.iter().map(Item::size).sum::<u64>()
        );
    }

    #[test]
    fn abandoning_fails_without_a_trailer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("global")).unwrap();
        std::fs::write(dir.path().join("global/pg_control"), vec![7u8; 8192]).unwrap();
        let (items, _) = scan_pgdata(dir.path()).unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink_out = Arc::clone(&out);
        let sink: Sink = Box::new(move |b| {
            sink_out.lock().unwrap().extend_from_slice(&b);
            Ok(())
        });
        let (extra_tx, extra_rx) = mpsc::channel();
        extra_tx.send(None).unwrap();
        let settings = StreamSettings {
            gzip_level: 1,
            compressors: 1,
            readers: 1,
        };
        let done = AtomicU64::new(0);
        assert!(write_archive(&items, settings, sink, &done, None, Some(extra_rx)).is_err());
        let gz = out.lock().unwrap().clone();
        let mut rest = Vec::new();
        assert!(flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut rest)
            .is_err());
    }
}
