//! Names of the files postgres archives: WAL segments (`000000010000000A000000FF`), partial
//! segments (`….partial`), backup history files (`….00000028.backup`) and timeline history
//! files (`00000002.history`). Anything else is rejected before it reaches storage.

use std::fmt;

use thiserror::Error;

/// What kind of WAL file a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalKind {
    Segment,
    Partial,
    BackupHistory,
    TimelineHistory,
}

/// A validated WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalFile {
    name: String,
}

/// Why a name is not a WAL file name.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{name:?} is not a WAL file name (expected a 24-hex-digit segment, optionally .partial or .XXXXXXXX.backup, or XXXXXXXX.history)")]
pub struct InvalidWalName {
    pub name: String,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalFile {
    /// Parse and validate a file name (no directories).
    pub fn parse(name: &str) -> Result<Self, InvalidWalName> {
        let invalid = || InvalidWalName {
            name: name.chars().take(80).collect(),
        };
        let ok = match name.len() {
            24 => is_hex(name),
            32 => name.ends_with(".partial") && is_hex(&name[..24]),
            16 => name.ends_with(".history") && is_hex(&name[..8]),
            40 => {
                is_hex(&name[..24])
                    && name.as_bytes()[24] == b'.'
                    && is_hex(&name[25..33])
                    && name.ends_with(".backup")
            }
            _ => false,
        };
        if !ok {
            return Err(invalid());
        }
        let file = WalFile {
            name: name.to_owned(),
        };
        if file.kind() != WalKind::TimelineHistory && file.timeline() == 0 {
            return Err(invalid());
        }
        Ok(file)
    }

    /// The file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> WalKind {
        match self.name.len() {
            24 => WalKind::Segment,
            32 => WalKind::Partial,
            16 => WalKind::TimelineHistory,
            _ => WalKind::BackupHistory,
        }
    }

    /// Timeline id.
    pub fn timeline(&self) -> u32 {
        u32::from_str_radix(&self.name[..8], 16).unwrap_or(0)
    }

    /// The 24-hex-digit segment this file belongs to (None for timeline history files).
    pub fn segment_name(&self) -> Option<&str> {
        (self.kind() != WalKind::TimelineHistory).then(|| &self.name[..24])
    }

    /// barman's directory for the file: the first 16 hex digits of the segment, or the
    /// archive's root for timeline history files.
    pub fn hash_dir(&self) -> Option<&str> {
        (self.kind() != WalKind::TimelineHistory).then(|| &self.name[..16])
    }

    /// `(timeline, log, seg)` of a segment-like name.
    pub fn position(&self) -> Option<(u32, u32, u32)> {
        let seg = self.segment_name()?;
        let log = u32::from_str_radix(&seg[8..16], 16).ok()?;
        let low = u32::from_str_radix(&seg[16..24], 16).ok()?;
        Some((self.timeline(), log, low))
    }

    /// The WAL position (LSN) of the first byte of the segment this file belongs to, for a
    /// segment size of `segment_bytes` (None for timeline history files). A segment number past
    /// the end of its log for that size gives a position in a later log.
    pub fn start_lsn(&self, segment_bytes: u64) -> Option<u64> {
        let (_, log, seg) = self.position()?;
        Some((u64::from(log) << 32) + u64::from(seg) * segment_bytes)
    }

    /// The segment number (position over the segment size, counted across logs) of the
    /// segment this file belongs to (None for timeline history files).
    pub fn segno(&self, segment_bytes: u64) -> Option<u64> {
        Some(self.start_lsn(segment_bytes)? / segment_bytes.max(1))
    }

    /// Segment number `segno` of `timeline`, for a segment size of `segment_bytes`.
    pub fn segment(timeline: u32, segno: u64, segment_bytes: u64) -> Option<WalFile> {
        let per_log = 0x1_0000_0000u64 / segment_bytes.max(1);
        let log = u32::try_from(segno / per_log.max(1)).ok()?;
        let low = segno % per_log.max(1);
        WalFile::parse(&format!("{timeline:08X}{log:08X}{low:08X}")).ok()
    }

    /// The history file of `timeline`.
    pub fn history_of(timeline: u32) -> Option<WalFile> {
        WalFile::parse(&format!("{timeline:08X}.history")).ok()
    }

    /// The name of the segment after this one, for a segment size of `segment_bytes`.
    pub fn next_segment(&self, segment_bytes: u64) -> Option<WalFile> {
        let (tli, log, low) = self.position()?;
        let per_log = (0x1_0000_0000u64 / segment_bytes.max(1)) as u32;
        let (log, low) = if low + 1 >= per_log {
            (log.checked_add(1)?, 0)
        } else {
            (log, low + 1)
        };
        WalFile::parse(&format!("{tli:08X}{log:08X}{low:08X}")).ok()
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_kind() {
        let seg = WalFile::parse("000000010000000A000000FF").unwrap();
        assert_eq!(seg.kind(), WalKind::Segment);
        assert_eq!(seg.hash_dir(), Some("000000010000000A"));
        assert_eq!(seg.position(), Some((1, 10, 255)));
        assert_eq!(
            WalFile::parse("000000020000000000000003.partial")
                .unwrap()
                .kind(),
            WalKind::Partial
        );
        let backup = WalFile::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(backup.kind(), WalKind::BackupHistory);
        assert_eq!(backup.segment_name(), Some("000000010000000000000002"));
        let history = WalFile::parse("00000002.history").unwrap();
        assert_eq!(
            (history.kind(), history.hash_dir(), history.timeline()),
            (WalKind::TimelineHistory, None, 2)
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "00000001000000000000000",
            "000000010000000000000001X",
            "000000010000000000000001.gz",
            "0000000100000000000000ab",
            "../000000010000000000000",
            "000000000000000000000001",
            "00000001.hist0ry",
            "000000010000000000000002.0000002G.backup",
            "pg_wal/000000010000000000000001",
        ] {
            assert!(WalFile::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn start_lsn_counts_segments_within_their_log() {
        let lsn = |name: &str, size: u64| WalFile::parse(name).ok()?.start_lsn(size);
        assert_eq!(lsn("000000020000000000000008", 16 << 20), Some(0x800_0000));
        assert_eq!(
            lsn("0000000200000003000000FF", 16 << 20),
            Some(0x3_FF00_0000)
        );
        assert_eq!(
            lsn("000000010000000100000003.partial", 64 << 20),
            Some(0x1_0C00_0000)
        );
        assert_eq!(lsn("00000002.history", 16 << 20), None);
    }

    #[test]
    fn segment_numbers_count_across_logs() {
        let seg = WalFile::parse("0000000200000003000000FF").unwrap();
        let segno = seg.segno(16 << 20).unwrap();
        assert_eq!(segno, 3 * 256 + 255);
        assert_eq!(WalFile::segment(2, segno, 16 << 20), Some(seg));
        assert_eq!(
            WalFile::segment(1, segno + 1, 16 << 20).map(|f| f.name().to_owned()),
            Some("000000010000000400000000".to_owned())
        );
        assert_eq!(WalFile::segment(0, 5, 16 << 20), None);
        assert_eq!(
            WalFile::history_of(10).map(|f| f.name().to_owned()),
            Some("0000000A.history".to_owned())
        );
    }

    #[test]
    fn next_segment_wraps_the_log() {
        let seg = WalFile::parse("0000000100000000000000FF").unwrap();
        assert_eq!(
            seg.next_segment(16 << 20).unwrap().name(),
            "000000010000000100000000"
        );
        let seg = WalFile::parse("000000010000000000000005").unwrap();
        assert_eq!(
            seg.next_segment(16 << 20).unwrap().name(),
            "000000010000000000000006"
        );
    }
}
