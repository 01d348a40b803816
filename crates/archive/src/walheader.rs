//! The check a WAL segment passes before it is archived: postgres starts every segment with a
//! long page header that names the segment's size, its position in the WAL and its cluster's
//! system identifier. A file that is not a whole segment of this cluster at the position its
//! name says (truncated, renamed, copied from another cluster, overwritten with something
//! else) is refused instead of stored: once stored under that name, the real segment could
//! never be archived (the no-overwrite rule would refuse it), and a restore would hand postgres
//! a file it cannot replay.
//!
//! Only segments and `.partial` segments are checked; history and backup-history files are
//! text. The header's fields are native-endian, as the postgres that wrote them on this machine.

use thiserror::Error;

use crate::walname::{WalFile, WalKind};

/// `XLP_LONG_HEADER` in `xlp_info`: the page starts a segment and has the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of `XLogLongPageHeaderData`.
const LONG_HEADER_BYTES: usize = 40;
/// The segment sizes postgres allows (`initdb --wal-segsize`: 1 MiB to 1 GiB, powers of two).
const MIN_SEGMENT_BYTES: u64 = 1 << 20;
const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// Whether `bytes` is a WAL segment size postgres allows (a power of two, 1 MiB to 1 GiB).
pub fn is_segment_size(bytes: u64) -> bool {
    bytes.is_power_of_two() && (MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&bytes)
}

/// Why a file is not the WAL segment its name says.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidSegment {
    #[error("{bytes} bytes is not a WAL segment size (a power of two from 1 MiB to 1 GiB)")]
    Size { bytes: u64 },
    #[error("it does not start with a WAL segment header (truncated, zeroed or not WAL)")]
    NoHeader,
    #[error("its header says the segment size is {header} bytes, the file has {bytes}")]
    SizeMismatch { header: u64, bytes: u64 },
    #[error("its header places it at WAL position {found:X}/{found_low:X}, its name at {expected:X}/{expected_low:X} (renamed or corrupt)", found = found >> 32, found_low = found & 0xFFFF_FFFF, expected = expected >> 32, expected_low = expected & 0xFFFF_FFFF)]
    Position { expected: u64, found: u64 },
    #[error("it belongs to database system {found}, not to this one ({expected})")]
    OtherSystem { expected: u64, found: u64 },
}

/// The fields of a segment's long page header this check reads.
struct LongHeader {
    info: u16,
    pageaddr: u64,
    system_identifier: u64,
    segment_bytes: u32,
}

fn long_header(content: &[u8]) -> Option<LongHeader> {
    let header = content.get(..LONG_HEADER_BYTES)?;
    // xlp_magic u16 @0, xlp_info u16 @2, xlp_tli u32 @4, xlp_pageaddr u64 @8, xlp_rem_len u32
    // @16 (padding to 24), xlp_sysid u64 @24, xlp_seg_size u32 @32, xlp_xlog_blcksz u32 @36.
    Some(LongHeader {
        info: u16::from_ne_bytes(field(header, 2)?),
        pageaddr: u64::from_ne_bytes(field(header, 8)?),
        system_identifier: u64::from_ne_bytes(field(header, 24)?),
        segment_bytes: u32::from_ne_bytes(field(header, 32)?),
    })
}

/// The `N` bytes of `header` at `at`.
fn field<const N: usize>(header: &[u8], at: usize) -> Option<[u8; N]> {
    header.get(at..at + N)?.try_into().ok()
}

/// Ok when `content` is a whole WAL segment at the position `file` names (and of the system
/// `system_identifier`, when known). Files that are not segments pass unchecked.
pub fn check_segment(
    file: &WalFile,
    content: &[u8],
    system_identifier: Option<u64>,
) -> Result<(), InvalidSegment> {
    if !matches!(file.kind(), WalKind::Segment | WalKind::Partial) {
        return Ok(());
    }
    let bytes = content.len() as u64;
    if !is_segment_size(bytes) {
        return Err(InvalidSegment::Size { bytes });
    }
    let header = long_header(content)
        .filter(|h| h.info & XLP_LONG_HEADER != 0)
        .ok_or(InvalidSegment::NoHeader)?;
    if u64::from(header.segment_bytes) != bytes {
        return Err(InvalidSegment::SizeMismatch {
            header: header.segment_bytes.into(),
            bytes,
        });
    }
    let (Some((_, log, _)), Some(expected)) = (file.position(), file.start_lsn(bytes)) else {
        return Ok(());
    };
    // A segment number past the end of its log for this size names no segment at all.
    if expected >> 32 != u64::from(log) || header.pageaddr != expected {
        return Err(InvalidSegment::Position {
            expected,
            found: header.pageaddr,
        });
    }
    match system_identifier {
        Some(expected) if header.system_identifier != expected => {
            Err(InvalidSegment::OtherSystem {
                expected,
                found: header.system_identifier,
            })
        }
        _ => Ok(()),
    }
}

/// The long page header postgres writes at the start of a segment, for tests here and in the
/// crates that archive synthetic segments.
pub fn synthetic_header(pageaddr: u64, system_identifier: u64, segment_bytes: u32) -> Vec<u8> {
    let mut header = vec![0u8; LONG_HEADER_BYTES];
    header[..2].copy_from_slice(&0xD110u16.to_ne_bytes());
    header[2..4].copy_from_slice(&XLP_LONG_HEADER.to_ne_bytes());
    header[4..8].copy_from_slice(&1u32.to_ne_bytes());
    header[8..16].copy_from_slice(&pageaddr.to_ne_bytes());
    header[24..32].copy_from_slice(&system_identifier.to_ne_bytes());
    header[32..36].copy_from_slice(&segment_bytes.to_ne_bytes());
    header[36..40].copy_from_slice(&8192u32.to_ne_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSID: u64 = 7_300_000_000_000_000_001;
    const MIB16: u64 = 16 << 20;

    fn segment(
        name: &str,
        pageaddr: u64,
        sysid: u64,
        size: u64,
        header_size: u32,
    ) -> (WalFile, Vec<u8>) {
        let file = WalFile::parse(name).unwrap_or_else(|e| panic!("{e}"));
        let mut content = vec![0u8; size as usize];
        let header = synthetic_header(pageaddr, sysid, header_size);
        content[..header.len()].copy_from_slice(&header);
        (file, content)
    }

    #[test]
    fn a_whole_segment_of_this_system_passes() {
        // Segment 0x2F of log 0xA: position A/2F000000.
        let (file, content) = segment(
            "000000030000000A0000002F",
            (0xA << 32) + 0x2F * MIB16,
            SYSID,
            MIB16,
            16 << 20,
        );
        assert_eq!(check_segment(&file, &content, Some(SYSID)), Ok(()));
        assert_eq!(check_segment(&file, &content, None), Ok(()));
        let partial =
            WalFile::parse("000000030000000A0000002F.partial").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_segment(&partial, &content, Some(SYSID)), Ok(()));
        // 64 MiB segments: seg 3 of log 1 starts at 1/C000000.
        let (file, content) = segment(
            "000000010000000100000003",
            (1 << 32) + 3 * (64 << 20),
            SYSID,
            64 << 20,
            64 << 20,
        );
        assert_eq!(check_segment(&file, &content, Some(SYSID)), Ok(()));
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused() {
        let name = "000000010000000000000005";
        let at = 5 * MIB16;
        let file = WalFile::parse(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            check_segment(&file, &[0u8; 1000], None),
            Err(InvalidSegment::Size { bytes: 1000 })
        );
        assert_eq!(
            check_segment(&file, &vec![0u8; MIB16 as usize], None),
            Err(InvalidSegment::NoHeader)
        );
        let (_, content) = segment(name, at, SYSID, MIB16, 1 << 20);
        assert_eq!(
            check_segment(&file, &content, None),
            Err(InvalidSegment::SizeMismatch {
                header: 1 << 20,
                bytes: MIB16
            })
        );
        // Segment 6's content under segment 5's name.
        let (_, content) = segment(name, 6 * MIB16, SYSID, MIB16, 16 << 20);
        let err = check_segment(&file, &content, None).unwrap_err();
        assert_eq!(
            err,
            InvalidSegment::Position {
                expected: at,
                found: 6 * MIB16
            }
        );
        assert!(err.to_string().contains("0/6000000"), "{err}");
        let (_, content) = segment(name, at, SYSID + 1, MIB16, 16 << 20);
        assert_eq!(
            check_segment(&file, &content, Some(SYSID)),
            Err(InvalidSegment::OtherSystem {
                expected: SYSID,
                found: SYSID + 1
            })
        );
        // A 16 MiB segment numbered past the 256 of its log names no position.
        let file = WalFile::parse("000000010000000000000100").unwrap_or_else(|e| panic!("{e}"));
        let (_, content) = segment("000000010000000000000100", 1 << 32, SYSID, MIB16, 16 << 20);
        assert!(matches!(
            check_segment(&file, &content, None),
            Err(InvalidSegment::Position { .. })
        ));
    }

    #[test]
    fn history_and_backup_files_are_not_segments() {
        for name in [
            "00000002.history",
            "000000010000000000000005.00000028.backup",
        ] {
            let file = WalFile::parse(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(check_segment(&file, b"text", Some(SYSID)), Ok(()));
        }
    }
}
