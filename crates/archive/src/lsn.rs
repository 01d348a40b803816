//! WAL positions as postgres prints them, `X/Y`: the two hexadecimal halves (1 to 8 digits
//! each) of a 64-bit number. Parsed and printed here for the archive, the backups and the
//! instance.

/// Parse `X/Y` (surrounding whitespace allowed) into a 64-bit position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let half = |part: &str| {
        (!part.is_empty() && part.len() <= 8)
            .then(|| u32::from_str_radix(part, 16).ok())
            .flatten()
    };
    Some((u64::from(half(high)?) << 32) | u64::from(half(low)?))
}

/// A position as postgres prints it (`X/Y`, upper-case hex, no leading zeros).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_what_postgres_prints() {
        assert_eq!(parse_lsn("0/4000028"), Some(0x400_0028));
        assert_eq!(parse_lsn(" 1/0\n"), Some(1 << 32));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in ["", "0", "/1", "1/", "1/2/3", "G/0", "123456789/0", "-1/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
        assert_eq!(format_lsn(0x1_0A00_0028), "1/A000028");
        assert_eq!(format_lsn(0), "0/0");
    }
}
