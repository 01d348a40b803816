//! gzip compression of WAL: one gzip member per file, as barman-cloud writes and reads,
//! compressed whole-buffer by libdeflate (about twice zlib's speed at the same level on real
//! WAL, similar size: `cargo xtask bench wal-archive` reports both); decompression of every
//! member of a stream through flate2 (zlib-rs), which also reads what other tools wrote.

use std::io::Read;

use flate2::read::MultiGzDecoder;

/// Compress `data` as one gzip member at `level` (0-9, as gzip spells levels).
pub fn gzip(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let level = libdeflater::CompressionLvl::new(level.min(9) as i32).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("gzip level {level}: {e:?}"),
        )
    })?;
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0u8; compressor.gzip_compress_bound(data.len())];
    let written = compressor
        .gzip_compress(data, &mut out)
        .map_err(|e| std::io::Error::other(format!("gzip: {e:?}")))?;
    out.truncate(written);
    out.shrink_to_fit();
    Ok(out)
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
        for level in [0, 1, 9, 12] {
            let packed = gzip(&data, level).unwrap();
            assert_eq!(gunzip(&packed, 1 << 30).unwrap(), data, "level {level}");
        }
        assert_eq!(gunzip(&gzip(b"", 6).unwrap(), 10).unwrap(), b"");
    }
}
