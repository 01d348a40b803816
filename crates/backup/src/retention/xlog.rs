//! WAL file names the way barman-cloud's retention reads them: a segment
//! (`TTTTTTTTXXXXXXXXYYYYYYYY`), a backup label (`<segment>.XXXXXXXX.backup`), a partial
//! segment (`<segment>.partial`) or a history file (`TTTTTTTT.history`), hex in either case,
//! optionally followed by one compression suffix barman knows. Also the `wals/` hash
//! directory names (`TTTTTTTTXXXXXXXX`).

/// What a WAL archive object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XlogKind {
    Segment,
    Backup,
    Partial,
    History,
}

/// Compression suffixes barman-cloud strips from WAL object names.
const COMPRESSION_SUFFIXES: &[&str] = &[".gz", ".bz2", ".xz", ".snappy", ".zst", ".lz4"];

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Classify a bare file name (no compression suffix).
pub fn classify(name: &str) -> Option<XlogKind> {
    if let Some(tli) = name.strip_suffix(".history") {
        return is_hex(tli, 8).then_some(XlogKind::History);
    }
    if name.len() < 24 || !name.is_char_boundary(24) || !is_hex(&name[..24], 24) {
        return None;
    }
    match &name[24..] {
        "" => Some(XlogKind::Segment),
        ".partial" => Some(XlogKind::Partial),
        rest => {
            let offset = rest.strip_prefix('.')?.strip_suffix(".backup")?;
            is_hex(offset, 8).then_some(XlogKind::Backup)
        }
    }
}

/// The WAL name an object's file name stands for: the name itself when it is a WAL file,
/// else the name without one known compression suffix when that is one; None otherwise.
pub fn wal_name_of_object(file_name: &str) -> Option<&str> {
    if classify(file_name).is_some() {
        return Some(file_name);
    }
    // Python's os.path.splitext: the suffix is from the last dot.
    let dot = file_name.rfind('.')?;
    let (stem, suffix) = file_name.split_at(dot);
    (COMPRESSION_SUFFIXES.contains(&suffix) && classify(stem).is_some()).then_some(stem)
}

/// The timeline of a WAL name (its first 8 hex digits).
pub fn timeline(name: &str) -> Option<u32> {
    name.get(..8).and_then(|t| u32::from_str_radix(t, 16).ok())
}

/// `(timeline, log)` of a segment name.
pub fn tli_log(segment: &str) -> Option<(u32, u32)> {
    Some((
        timeline(segment)?,
        u32::from_str_radix(segment.get(8..16)?, 16).ok()?,
    ))
}

/// `(timeline, log)` of a `wals/` hash directory name.
pub fn decode_hash_dir(dir: &str) -> Option<(u32, u32)> {
    if !is_hex(dir, 16) {
        return None;
    }
    tli_log(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let seg = "000000010000000A000000FF";
        assert_eq!(classify(seg), Some(XlogKind::Segment));
        assert_eq!(classify(&seg.to_lowercase()), Some(XlogKind::Segment));
        assert_eq!(
            classify("000000010000000A000000FF.00000028.backup"),
            Some(XlogKind::Backup)
        );
        assert_eq!(
            classify("000000010000000A000000FF.partial"),
            Some(XlogKind::Partial)
        );
        assert_eq!(classify("0000000A.history"), Some(XlogKind::History));
        for bad in [
            "000000010000000A000000F",
            "000000010000000A000000FG",
            "0000000A.history.x",
            "000000010000000A000000FF.28.backup",
            "000000010000000A000000FF.gz",
            "",
        ] {
            assert_eq!(classify(bad), None, "{bad}");
        }
        assert_eq!(wal_name_of_object(&format!("{seg}.gz")), Some(seg));
        assert_eq!(wal_name_of_object(&format!("{seg}.zst")), Some(seg));
        assert_eq!(wal_name_of_object(seg), Some(seg));
        assert_eq!(
            wal_name_of_object("00000002.history.gz"),
            Some("00000002.history")
        );
        assert_eq!(wal_name_of_object(&format!("{seg}.gz.gz")), None);
        assert_eq!(wal_name_of_object(&format!("{seg}.zip")), None);
        assert_eq!(decode_hash_dir("000000020000000A"), Some((2, 10)));
        assert_eq!(decode_hash_dir("000000020000000"), None);
        assert_eq!(tli_log(seg), Some((1, 10)));
    }
}
