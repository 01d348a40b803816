//! One tar's download pipeline, three stages running at once and joined by bounded channels
//! (so memory stays at a few chunks per stage whatever the backup's size): the async download
//! (`ObjectStore::get_stream`), gunzip on a blocking thread (every gzip member, as barman-cloud
//! and pgsteward write one), and tar extraction on another blocking thread.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pgsteward_archive::store::{ObjectStore, StoreError};
use tokio::sync::mpsc;

use super::extract::{self, ExtractError, Extracted};

/// Chunks in flight between two stages.
const CHANNEL_DEPTH: usize = 8;
/// Size of the decompressed blocks handed to the extractor.
const BLOCK: usize = 1024 * 1024;

/// Counters shared by every pipeline of one restore (for progress logs).
#[derive(Debug, Default)]
pub struct Progress {
    pub downloaded: AtomicU64,
    pub written: Arc<AtomicU64>,
}

/// Why a tar could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("downloading {key}: {error}")]
    Store { key: String, error: StoreError },
    #[error("{key} does not exist in the store")]
    Missing { key: String },
    #[error("{key} is not a valid gzip stream: {error}")]
    Gzip { key: String, error: io::Error },
    #[error("extracting {key}: {error}")]
    Extract { key: String, error: ExtractError },
    #[error("{key}: a pipeline stage failed: {detail}")]
    Stage { key: String, detail: String },
}

/// Blocking `Read` over a channel of chunks; an `Err` chunk ends the stream with that error.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Result<Bytes, io::Error>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A store error carried through `io::Error` so the pipeline can report it as such.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Carried(StoreError);

fn store_error_in(e: &io::Error) -> Option<StoreError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Carried>())
        .map(|c| c.0.clone())
}

/// Download `key`, decompress it when `gzip`, and extract it into `dest`.
pub async fn restore_tar(
    store: Arc<dyn ObjectStore>,
    key: String,
    gzip: bool,
    dest: PathBuf,
    progress: Arc<Progress>,
) -> Result<Extracted, PipelineError> {
    let mut reader = store
        .get_stream(&key)
        .await
        .map_err(|error| PipelineError::Store {
            key: key.clone(),
            error,
        })?
        .ok_or_else(|| PipelineError::Missing { key: key.clone() })?;

    // Stage 1: download.
    let (raw_tx, raw_rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_DEPTH);
    let download_progress = Arc::clone(&progress);
    let download = tokio::spawn(async move {
        loop {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => {
                    download_progress
                        .downloaded
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if raw_tx.send(Ok(chunk)).await.is_err() {
                        return; // a later stage stopped; it reports why
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = raw_tx.send(Err(io::Error::other(Carried(e)))).await;
                    return;
                }
            }
        }
    });

    // Stage 2: decompress (or pass through).
    let (tar_tx, tar_rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_DEPTH);
    let decompress = tokio::task::spawn_blocking(move || {
        let source = ChannelReader {
            rx: raw_rx,
            current: Bytes::new(),
        };
        let mut input: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(source))
        } else {
            Box::new(source)
        };
        loop {
            let mut block = vec![0u8; BLOCK];
            let mut filled = 0;
            let result = loop {
                match input.read(&mut block[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == block.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            if filled > 0 {
                block.truncate(filled);
                if tar_tx.blocking_send(Ok(Bytes::from(block))).is_err() {
                    return Ok(());
                }
            }
            match result {
                Err(e) => {
                    let kept = io::Error::new(e.kind(), e.to_string());
                    let _ = tar_tx.blocking_send(Err(e));
                    return Err(kept);
                }
                Ok(()) if filled == 0 => return Ok(()),
                Ok(()) => {}
            }
        }
    });

    // Stage 3: extract.
    let written = Arc::clone(&progress.written);
    let extract = tokio::task::spawn_blocking(move || {
        let mut source = ChannelReader {
            rx: tar_rx,
            current: Bytes::new(),
        };
        let result = extract::extract(&mut source, &dest, &written);
        if result.is_ok() {
            // Read what follows the end-of-archive marker (zero padding) to the end, so the
            // gzip trailer and the download's checksum are verified too.
            let drained = io::copy(&mut source, &mut io::sink());
            if let Err(e) = drained {
                return Err(ExtractError::Io {
                    what: "reading past the end of the tar".to_owned(),
                    error: e,
                });
            }
        }
        result
    });

    let extracted = extract.await;
    let decompressed = decompress.await;
    let _ = download.await;
    let stage = |detail: String| PipelineError::Stage {
        key: key.clone(),
        detail,
    };
    let extracted = extracted.map_err(|e| stage(e.to_string()))?;
    let decompressed = decompressed.map_err(|e| stage(e.to_string()))?;
    match extracted {
        Ok(out) => {
            // The tar ended; the stream must have ended cleanly too.
            if let Err(e) = decompressed {
                return Err(match store_error_in(&e) {
                    Some(error) => PipelineError::Store { key, error },
                    None => PipelineError::Gzip { key, error: e },
                });
            }
            Ok(out)
        }
        Err(ExtractError::Io {
            what,
            error: source,
        }) => {
            // The root cause is usually upstream: the download or the gzip stream.
            if let Some(error) = store_error_in(&source) {
                return Err(PipelineError::Store { key, error });
            }
            if let Err(e) = decompressed {
                if let Some(error) = store_error_in(&e) {
                    return Err(PipelineError::Store { key, error });
                }
                return Err(PipelineError::Gzip { key, error: e });
            }
            Err(PipelineError::Extract {
                key,
                error: ExtractError::Io {
                    what,
                    error: source,
                },
            })
        }
        Err(error) => Err(PipelineError::Extract { key, error }),
    }
}
