//! gzip compression of WAL (one gzip member per file, as barman-cloud writes and reads) through
//! flate2's zlib-rs backend, and decompression of every member of a stream.

use std::io::{Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

/// Compress `data` as one gzip member at `level` (0-9).
pub fn gzip(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        flate2::Compression::new(level.min(9)),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// Decompress a gzip stream (all members), refusing output larger than `limit` bytes.
pub fn gunzip(data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    MultiGzDecoder::new(data)
        .take(limit + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("decompressed data exceeds {limit} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_one_member() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let packed = gzip(&data, 6).unwrap();
        assert!(packed.len() < data.len());
        assert_eq!(gunzip(&packed, 1 << 30).unwrap(), data);
        // A single member: the gzip magic appears once at the start.
        let mut single = flate2::read::GzDecoder::new(packed.as_slice());
        let mut out = Vec::new();
        single.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(gunzip(&packed, 10).is_err());
        assert!(gunzip(b"not gzip", 100).is_err());
    }
}
