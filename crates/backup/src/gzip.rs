//! Parallel gzip that produces ONE gzip member (the pigz technique): the input is cut into
//! blocks (1 MiB by default), each compressed as raw deflate on a pool of threads, primed with
//! the previous block's last 32 KiB as dictionary (so the ratio stays close to a serial
//! deflate) and ended with a sync flush (byte-aligned, not final), the last one with a final
//! block. The blocks concatenated form one deflate stream; the CRC-32s of the blocks are
//! combined. A collector thread emits header, blocks in order and trailer to the sink, so any
//! gzip reader (`gzip -t`, Python's tarfile, flate2) sees a single ordinary member. Memory is
//! bounded by the number of blocks in flight (`2 * threads + 2`).

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Default input block size.
pub const DEFAULT_BLOCK_SIZE: usize = 1024 * 1024;
/// Deflate's window: the dictionary carried from one block to the next.
const WINDOW: usize = 32 * 1024;

/// Where compressed output goes (called from the collector thread, in order).
pub type Sink = Box<dyn FnMut(Bytes) -> io::Result<()> + Send>;

struct Job {
    data: Vec<u8>,
    dictionary: Option<Arc<Vec<u8>>>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

struct Done {
    compressed: Vec<u8>,
    crc: Crc,
    last: bool,
}

/// Totals of a finished stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipTotals {
    pub uncompressed: u64,
    pub compressed: u64,
}

/// A `Write` that compresses in parallel into a sink.
pub struct ParallelGzip {
    block_size: usize,
    block: Vec<u8>,
    dictionary: Option<Arc<Vec<u8>>>,
    jobs: Option<SyncSender<Job>>,
    order: Option<SyncSender<Receiver<io::Result<Done>>>>,
    workers: Vec<JoinHandle<()>>,
    collector: Option<JoinHandle<io::Result<u64>>>,
    uncompressed: u64,
}

impl std::fmt::Debug for ParallelGzip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGzip")
            .field("block_size", &self.block_size)
            .field("uncompressed", &self.uncompressed)
            .finish_non_exhaustive()
    }
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_owned())
}

/// Compress one block as raw deflate; `last` ends the stream.
fn deflate_block(
    compressor: &mut Compress,
    data: &[u8],
    dictionary: Option<&[u8]>,
    last: bool,
) -> io::Result<Vec<u8>> {
    compressor.reset();
    if let Some(dictionary) = dictionary {
        compressor
            .set_dictionary(dictionary)
            .map_err(|e| io::Error::other(format!("deflate dictionary: {e}")))?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 1024);
    let start_in = compressor.total_in();
    loop {
        let consumed = (compressor.total_in() - start_in) as usize;
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let status = compressor
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        let consumed = (compressor.total_in() - start_in) as usize;
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once all input is in and output space was left over.
            _ if !last => consumed == data.len() && out.len() < out.capacity(),
            _ => false,
        };
        if done {
            return Ok(out);
        }
    }
}

fn worker(level: u32, jobs: Arc<Mutex<Receiver<Job>>>) {
    let mut compressor = Compress::new(Compression::new(level), false);
    loop {
        let job = {
            let Ok(receiver) = jobs.lock() else { return };
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let result = deflate_block(
            &mut compressor,
            &job.data,
            job.dictionary.as_deref().map(Vec::as_slice),
            job.last,
        )
        .map(|compressed| {
            let mut crc = Crc::new();
            crc.update(&job.data);
            Done {
                compressed,
                crc,
                last: job.last,
            }
        });
        // The collector is gone when the stream failed; nothing to do then.
        let _ = job.reply.send(result);
    }
}

fn collector(order: Receiver<Receiver<io::Result<Done>>>, mut sink: Sink) -> io::Result<u64> {
    // Header: magic, deflate, no flags, no mtime, no extra flags, OS unix.
    let header = Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    let mut written = header.len() as u64;
    sink(header)?;
    let mut crc = Crc::new();
    let mut ended = false;
    for reply in order {
        let done = reply
            .recv()
            .map_err(|_| broken("a compression thread died"))??;
        crc.combine(&done.crc);
        written += done.compressed.len() as u64;
        ended = done.last;
        sink(Bytes::from(done.compressed))?;
    }
    if !ended {
        // Abandoned before `finish`: no trailer, so the output can never pass for whole.
        return Err(broken("the gzip stream was abandoned"));
    }
    let mut trailer = Vec::with_capacity(8);
    trailer.extend_from_slice(&crc.sum().to_le_bytes());
    trailer.extend_from_slice(&crc.amount().to_le_bytes());
    written += 8;
    sink(Bytes::from(trailer))?;
    Ok(written)
}

impl ParallelGzip {
    /// A stream compressed at `level` (0-9) on `threads` threads into `sink`.
    pub fn new(level: u32, threads: usize, block_size: usize, sink: Sink) -> io::Result<Self> {
        let threads = threads.max(1);
        let block_size = block_size.max(WINDOW);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads);
        let (order_tx, order_rx) = mpsc::sync_channel(threads + 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let jobs = Arc::clone(&job_rx);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || worker(level.min(9), jobs))?,
            );
        }
        let collector = std::thread::Builder::new()
            .name("gzip-out".into())
            .spawn(move || collector(order_rx, sink))?;
        Ok(ParallelGzip {
            block_size,
            block: Vec::with_capacity(block_size),
            dictionary: None,
            jobs: Some(job_tx),
            order: Some(order_tx),
            workers,
            collector: Some(collector),
            uncompressed: 0,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(
            &mut self.block,
            Vec::with_capacity(if last { 0 } else { self.block_size }),
        );
        let next_dictionary =
            (!last && data.len() >= WINDOW).then(|| Arc::new(data[data.len() - WINDOW..].to_vec()));
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job = Job {
            data,
            dictionary: self.dictionary.take(),
            last,
            reply: reply_tx,
        };
        self.dictionary = next_dictionary;
        let order = self
            .order
            .as_ref()
            .ok_or_else(|| broken("gzip stream finished"))?;
        // Queue the reply slot first so the collector emits blocks in submission order.
        if order.send(reply_rx).is_err() {
            return Err(self.collector_error());
        }
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| broken("gzip stream finished"))?;
        if jobs.send(job).is_err() {
            return Err(broken("the compression threads stopped"));
        }
        Ok(())
    }

    /// The collector's error once it stopped early (the sink failed).
    fn collector_error(&mut self) -> io::Error {
        self.order = None;
        self.jobs = None;
        match self.collector.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => broken("the gzip output stopped"),
        }
    }

    /// End the stream: compress what is left as the final block, wait for everything to reach
    /// the sink, and write the trailer.
    pub fn finish(mut self) -> io::Result<GzipTotals> {
        self.submit(true)?;
        self.jobs = None;
        self.order = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let compressed = match self.collector.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            _ => return Err(broken("the gzip output thread panicked")),
        };
        Ok(GzipTotals {
            uncompressed: self.uncompressed,
            compressed,
        })
    }
}

impl Write for ParallelGzip {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.block_size - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        self.uncompressed += n as u64;
        if self.block.len() == self.block_size {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ParallelGzip {
    fn drop(&mut self) {
        // Abandoned (an error elsewhere): stop the threads without emitting a trailer.
        self.jobs = None;
        self.order = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        if let Some(collector) = self.collector.take() {
            let _ = collector.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn compress(data: &[u8], threads: usize, block: usize, chunk: usize) -> Vec<u8> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink_out = Arc::clone(&out);
        let sink: Sink = Box::new(move |b: Bytes| {
            sink_out.lock().unwrap().extend_from_slice(&b);
            Ok(())
        });
        let mut gz = ParallelGzip::new(6, threads, block, sink).unwrap();
        for piece in data.chunks(chunk.max(1)) {
            gz.write_all(piece).unwrap();
        }
        let totals = gz.finish().unwrap();
        let out = out.lock().unwrap().clone();
        assert_eq!(totals.uncompressed, data.len() as u64);
        assert_eq!(totals.compressed, out.len() as u64);
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 12345u64;
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                // Compressible but not trivial: text-like runs and noise.
                if i % 7 < 4 {
                    b"postgres"[i % 8]
                } else {
                    (state >> 56) as u8
                }
            })
            .collect()
    }

    /// A single gzip member (MultiGzDecoder would also accept several) that decodes to the
    /// input, for empty, tiny, block-aligned and multi-block inputs.
    #[test]
    fn one_member_that_decodes_to_the_input() {
        for (len, threads, block) in [
            (0, 2, WINDOW),
            (5, 2, WINDOW),
            (WINDOW, 2, WINDOW),
            (3 * WINDOW + 17, 3, WINDOW),
            (3_000_000, 2, DEFAULT_BLOCK_SIZE),
        ] {
            let data = sample(len);
            let gz = compress(&data, threads, block, 10_000);
            let mut decoder = flate2::read::GzDecoder::new(&gz[..]);
            let mut back = Vec::new();
            decoder.read_to_end(&mut back).unwrap();
            assert!(back == data, "len {len}: content differs");
            // GzDecoder stops after the first member: nothing may follow it.
            let mut rest = Vec::new();
            decoder.into_inner().read_to_end(&mut rest).unwrap();
            assert!(
                rest.is_empty(),
                "len {len}: {} bytes after the member",
                rest.len()
            );
        }
    }

    #[test]
    fn gzip_t_accepts_it() {
        let data = sample(2_500_000);
        let gz = compress(&data, 2, 256 * 1024, 65_536);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &gz).unwrap();
        let status = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let listed = std::process::Command::new("gzip")
            .arg("-lv")
            .arg(&path)
            .output()
            .unwrap();
        assert!(listed.status.success());
        // The dictionary keeps the ratio close to serial deflate.
        let mut serial = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap();
        assert!(
            gz.len() < serial.len() + serial.len() / 50,
            "parallel {} vs serial {}",
            gz.len(),
            serial.len()
        );
    }

    #[test]
    fn a_failing_sink_fails_the_writer() {
        let sink: Sink = Box::new(|_| Err(io::Error::other("upload failed")));
        let mut gz = ParallelGzip::new(6, 2, WINDOW, sink).unwrap();
        let data = sample(WINDOW * 40);
        let result = gz.write_all(&data).and_then(|()| gz.finish().map(|_| ()));
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("upload failed") || err.kind() == io::ErrorKind::BrokenPipe,
            "{err}"
        );
    }
}
