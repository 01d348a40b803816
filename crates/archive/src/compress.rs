//! gzip compression of WAL: one gzip member per file, as barman-cloud writes and reads,
//! compressed whole-buffer by libdeflate (about twice zlib's speed at the same level on real
//! WAL, similar size: `cargo xtask bench wal-archive` reports both) with one compressor kept
//! per thread and output into the caller's (pooled) buffer; decompression by
//! libdeflate too, member after member, so multi-member files other tools wrote read back whole
//! (about three times flate2's speed on real WAL).

use std::cell::RefCell;
use std::io::{Error, ErrorKind};

use libdeflate_sys::{
    libdeflate_alloc_compressor, libdeflate_alloc_decompressor, libdeflate_compressor,
    libdeflate_crc32, libdeflate_decompressor, libdeflate_deflate_compress,
    libdeflate_free_compressor, libdeflate_free_decompressor, libdeflate_gzip_compress_bound,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE,
    libdeflate_result_LIBDEFLATE_SUCCESS,
};

/// gzip's header and trailer around the deflate stream (10 + 8 bytes).
const GZIP_HEADER_BYTES: usize = 10;
const GZIP_TRAILER_BYTES: usize = 8;

/// The CRC-32 gzip uses, continued from `crc` (0 to start) over `data`.
pub fn crc32(crc: u32, data: &[u8]) -> u32 {
    // SAFETY: `data` is valid for reads of its length.
    unsafe { libdeflate_crc32(crc, data.as_ptr().cast(), data.len()) }
}

/// Compress `data` as one gzip member at `level` (0-9, as gzip spells levels; higher is 9).
pub fn gzip(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    gzip_into(data, level, &mut out)?;
    out.shrink_to_fit();
    Ok(out)
}

/// Compress `data` as one gzip member at `level` into `out` (replacing what it held; its
/// capacity is reused, so a pooled buffer makes this allocation-free). The compressor is kept
/// per thread and level: allocating one costs more than compressing a small file.
pub fn gzip_into(data: &[u8], level: u32, out: &mut Vec<u8>) -> std::io::Result<()> {
    gzip_into_with_crc(data, crc32(0, data), level, out)
}

/// `gzip_into` for data whose CRC-32 the caller already has (computed while the data was read,
/// when it was in cache: a second pass over 16 MiB costs more than the CRC itself). The member
/// is byte for byte what libdeflate's own gzip writer makes when `crc` is right (tested).
pub fn gzip_into_with_crc(
    data: &[u8],
    crc: u32,
    level: u32,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    thread_local! {
        static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
    }
    let level = level.min(9) as i32;
    COMPRESSOR.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.as_ref().is_none_or(|c| c.level != level) {
            *cached = Some(Compressor::new(level)?);
        }
        match cached.as_mut() {
            Some(compressor) => compressor.gzip_with_crc(data, crc, out),
            None => Err(Error::other("no gzip compressor")),
        }
    })
}

/// A libdeflate compressor for one level, freed on drop.
struct Compressor {
    raw: *mut libdeflate_compressor,
    level: i32,
}

impl Compressor {
    fn new(level: i32) -> std::io::Result<Self> {
        // SAFETY: no preconditions; null means an invalid level or out of memory.
        let raw = unsafe { libdeflate_alloc_compressor(level) };
        if raw.is_null() {
            return Err(Error::new(
                ErrorKind::OutOfMemory,
                format!("libdeflate compressor for gzip level {level}"),
            ));
        }
        Ok(Compressor { raw, level })
    }

    /// One gzip member as libdeflate writes it (no name, no mtime, XFL from the level, OS
    /// unknown) around a raw deflate stream of `data`, with the caller's CRC.
    fn gzip_with_crc(&mut self, data: &[u8], crc: u32, out: &mut Vec<u8>) -> std::io::Result<()> {
        // gzip's ISIZE is the length modulo 2^32.
        let isize_field = (data.len() as u64 & 0xffff_ffff) as u32;
        // SAFETY: the compressor is live (owned by self).
        let bound = unsafe { libdeflate_gzip_compress_bound(self.raw, data.len()) };
        out.clear();
        out.reserve(bound);
        let xfl = match self.level {
            0 | 1 => 4, // fastest
            8.. => 2,   // slowest
            _ => 0,
        };
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff]);
        let room = out.spare_capacity_mut();
        let avail = room.len().saturating_sub(GZIP_TRAILER_BYTES);
        // SAFETY: the compressor is live; `data` is valid for its length; `room` is valid for
        // writes of `avail` bytes, and libdeflate only writes to the output.
        let written = unsafe {
            libdeflate_deflate_compress(
                self.raw,
                data.as_ptr().cast(),
                data.len(),
                room.as_mut_ptr().cast(),
                avail,
            )
        };
        if written == 0 || written > avail {
            return Err(Error::other("gzip: libdeflate could not compress the data"));
        }
        // SAFETY: libdeflate initialised `written` bytes past the header.
        unsafe { out.set_len(GZIP_HEADER_BYTES + written) };
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&isize_field.to_le_bytes());
        Ok(())
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_compressor and freed only here.
        unsafe { libdeflate_free_compressor(self.raw) }
    }
}

/// A libdeflate decompressor, freed on drop.
struct Decompressor(*mut libdeflate_decompressor);

impl Decompressor {
    fn new() -> std::io::Result<Self> {
        // SAFETY: allocation has no preconditions; null means out of memory.
        let raw = unsafe { libdeflate_alloc_decompressor() };
        if raw.is_null() {
            return Err(Error::new(
                ErrorKind::OutOfMemory,
                "libdeflate decompressor",
            ));
        }
        Ok(Decompressor(raw))
    }

    /// Decompress the first gzip member of `input`, appending at most `room` bytes to `out`:
    /// Ok(Some(consumed)) with `out` grown by what it wrote, Ok(None) when `room` is too
    /// small (`out` unchanged), Err when the data is not a valid member.
    fn member(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
    ) -> std::io::Result<Option<usize>> {
        out.reserve(room);
        let spare = out.spare_capacity_mut();
        let room = room.min(spare.len());
        let mut consumed = 0usize;
        let mut written = 0usize;
        // SAFETY: the decompressor is live (owned by self); `input` is valid for its length and
        // `spare` for writes of `room` bytes; libdeflate reads at most `input.len()` bytes,
        // writes at most `room` (never reading the output it has not written), and the two
        // out-pointers are valid usize locations.
        let result = unsafe {
            libdeflate_gzip_decompress_ex(
                self.0,
                input.as_ptr().cast(),
                input.len(),
                spare.as_mut_ptr().cast(),
                room,
                &mut consumed,
                &mut written,
            )
        };
        if result == libdeflate_result_LIBDEFLATE_SUCCESS {
            if written > room {
                return Err(Error::other(
                    "libdeflate reported more output than it had room for",
                ));
            }
            // SAFETY: libdeflate initialised `written` (<= room) bytes past the old length.
            unsafe { out.set_len(out.len() + written) };
            Ok(Some(consumed))
        } else if result == libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE {
            Ok(None)
        } else {
            Err(Error::new(ErrorKind::InvalidData, "invalid gzip data"))
        }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor and freed only here.
        unsafe { libdeflate_free_decompressor(self.0) }
    }
}

/// Room to decompress the next member of `data` into: the size its last member declares
/// (ISIZE, the last 4 bytes: exact for a single member), at least 64 KiB, and never more than
/// deflate's largest possible expansion of `data` (about 1032:1), so a corrupt trailer cannot
/// make a small object allocate a lot.
fn first_guess(data: &[u8]) -> usize {
    let declared = match data.len().checked_sub(4).and_then(|at| data.get(at..)) {
        Some(tail) => u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize,
        None => 0,
    };
    declared.min(data.len().saturating_mul(1100)).max(64 << 10)
}

/// Decompress a gzip stream (all members), refusing output larger than `limit` bytes.
pub fn gunzip(data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    gunzip_into(data, limit, &mut out)?;
    Ok(out)
}

/// `gunzip` into `out` (replacing what it held; its capacity is reused, so a pooled buffer
/// does not page-fault in 16 MiB per segment).
pub fn gunzip_into(data: &[u8], limit: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    if data.is_empty() {
        return Err(Error::new(ErrorKind::InvalidData, "empty gzip stream"));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let too_large = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("decompressed data exceeds {limit} bytes"),
        )
    };
    let mut decompressor = Decompressor::new()?;
    let mut rest = data;
    // A single member (what pgsteward and barman-cloud write) declares its exact size.
    let mut room = first_guess(data);
    while !rest.is_empty() {
        let start = out.len();
        let available = room.min(limit.saturating_sub(start).saturating_add(1));
        if available == 0 {
            return Err(too_large());
        }
        match decompressor.member(rest, out, available)? {
            Some(consumed) if consumed > 0 => {
                if out.len() > limit {
                    return Err(too_large());
                }
                rest = &rest[consumed.min(rest.len())..];
                room = first_guess(rest);
            }
            Some(_) => return Err(Error::new(ErrorKind::InvalidData, "empty gzip member")),
            None => {
                if start + available > limit {
                    return Err(too_large());
                }
                room = available.saturating_mul(2);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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
        assert!(gunzip(b"", 10).is_err());
        assert!(gunzip(&packed[..packed.len() - 9], 1 << 30).is_err());
    }

    #[test]
    fn a_crc_given_by_the_caller_writes_the_same_member() {
        let text: Vec<u8> = (0..300_000u32)
            .map(|i| b"pg_wal segment "[(i % 15) as usize] ^ (i % 7) as u8)
            .collect();
        for data in [&text[..], b"", b"x"] {
            for level in [0, 1, 5, 6, 9] {
                // What libdeflate's own gzip writer makes of it.
                let mut plain = vec![0u8; data.len() + 1024];
                // SAFETY: a fresh compressor, freed below; both buffers valid for their lengths.
                let written = unsafe {
                    let raw = libdeflate_alloc_compressor(level as i32);
                    assert!(!raw.is_null());
                    let n = libdeflate_sys::libdeflate_gzip_compress(
                        raw,
                        data.as_ptr().cast(),
                        data.len(),
                        plain.as_mut_ptr().cast(),
                        plain.len(),
                    );
                    libdeflate_free_compressor(raw);
                    n
                };
                assert!(written > 0);
                plain.truncate(written);
                let mut ours = Vec::new();
                gzip_into(data, level, &mut ours).unwrap();
                assert!(plain == ours, "level {level}, {} bytes", data.len());
                // Chained over uneven chunks, as a reader computes it.
                let crc = data.chunks(7_777).fold(0, crc32);
                let mut with_crc = Vec::new();
                gzip_into_with_crc(data, crc, level, &mut with_crc).unwrap();
                assert!(plain == with_crc, "level {level}, {} bytes", data.len());
                assert_eq!(gunzip(&with_crc, 1 << 30).unwrap(), data);
            }
        }
        // A wrong CRC is caught by every reader, ours included.
        let mut wrong = Vec::new();
        gzip_into_with_crc(&text, crc32(0, &text) ^ 1, 6, &mut wrong).unwrap();
        assert!(gunzip(&wrong, 1 << 30).is_err());
    }

    #[test]
    fn reads_every_member_and_bounds_the_output() {
        // Members of equal size: the last one's declared size is not the total.
        let half: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        let other: Vec<u8> = (0..300_000u32).map(|i| (i % 11) as u8).collect();
        let mut stream = gzip(&half, 6).unwrap();
        stream.extend(gzip(&other, 1).unwrap());
        // One member written by flate2 (zlib), as other tools would.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        std::io::Write::write_all(&mut encoder, b"tail").unwrap();
        stream.extend(encoder.finish().unwrap());
        let mut expected = half.clone();
        expected.extend(&other);
        expected.extend(b"tail");
        assert_eq!(gunzip(&stream, 1 << 30).unwrap(), expected);
        assert_eq!(gunzip(&stream, expected.len() as u64).unwrap(), expected);
        assert!(gunzip(&stream, expected.len() as u64 - 1).is_err());
        assert!(gunzip(&stream, 1000).is_err());
        // Garbage after a member is an error, not ignored.
        let mut trailing = gzip(&half, 6).unwrap();
        trailing.extend(b"garbage!");
        assert!(gunzip(&trailing, 1 << 30).is_err());
        // A trailer whose size or CRC does not match the data is corruption.
        let mut lying = gzip(&half, 6).unwrap();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&16u32.to_le_bytes());
        assert!(gunzip(&lying, 1 << 30).is_err());
        let mut bad_crc = gzip(&half, 6).unwrap();
        bad_crc[n - 8] ^= 0xff;
        assert!(gunzip(&bad_crc, 1 << 30).is_err());
    }
}
