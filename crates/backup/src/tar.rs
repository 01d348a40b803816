//! A minimal POSIX.1-2001 (PAX) tar writer for base backups: directories, regular files and
//! symlinks with mode, mtime, uid/gid and owner names. Names, link targets, sizes, ids or
//! times that do not fit the ustar header go into a PAX extended header (`x`) before the
//! entry, which GNU tar, Python's tarfile (barman-cloud-restore) and pgsteward read alike.

use std::io::{self, Write};

/// Tar block size.
pub const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    /// A regular file of `size` bytes; its content follows the header, padded to a block.
    File {
        size: u64,
    },
    Symlink {
        target: String,
    },
}

/// One tar entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive, `/`-separated, relative, without a trailing slash.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (e.g. 0o600).
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
}

/// The largest value an octal field of `len` bytes (with its NUL) holds.
fn octal_max(len: usize) -> u64 {
    (1u64 << (3 * (len as u32 - 1))) - 1
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

fn put_str(field: &mut [u8], value: &str) {
    let bytes = value.as_bytes();
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

/// One PAX record, `"<len> <key>=<value>\n"` where len counts the whole record.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    loop {
        let candidate = len.to_string().len() + body.len();
        if candidate == len {
            return format!("{len}{body}");
        }
        len = candidate;
    }
}

/// A raw 512-byte header.
fn header(name: &str, typeflag: u8, size: u64, entry: &Entry, linkname: &str) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put_str(&mut h[0..100], name);
    put_octal(&mut h[100..108], u64::from(entry.mode & 0o7777));
    put_octal(&mut h[108..116], entry.uid.min(octal_max(8)));
    put_octal(&mut h[116..124], entry.gid.min(octal_max(8)));
    put_octal(&mut h[124..136], size.min(octal_max(12)));
    put_octal(
        &mut h[136..148],
        u64::try_from(entry.mtime).unwrap_or(0).min(octal_max(12)),
    );
    h[156] = typeflag;
    put_str(&mut h[157..257], linkname);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put_str(&mut h[265..297], &entry.uname);
    put_str(&mut h[297..329], &entry.gname);
    put_octal(&mut h[329..337], 0);
    put_octal(&mut h[337..345], 0);
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

/// Zero bytes that pad `size` bytes of content to a whole block.
pub fn padding(size: u64) -> usize {
    let rest = (size % BLOCK as u64) as usize;
    if rest == 0 {
        0
    } else {
        BLOCK - rest
    }
}

/// Write the header(s) of `entry`; for a file the caller then writes exactly `size` bytes and
/// `padding(size)` zeros (see [`write_padding`]).
pub fn write_header(out: &mut impl Write, entry: &Entry) -> io::Result<()> {
    let (typeflag, size, linkname) = match &entry.kind {
        EntryKind::Directory => (b'5', 0, ""),
        EntryKind::File { size } => (b'0', *size, ""),
        EntryKind::Symlink { target } => (b'2', 0, target.as_str()),
    };
    let name = match entry.kind {
        EntryKind::Directory => format!("{}/", entry.path),
        _ => entry.path.clone(),
    };
    let mut pax = String::new();
    if name.len() > 100 {
        pax.push_str(&pax_record("path", &name));
    }
    if linkname.len() > 100 {
        pax.push_str(&pax_record("linkpath", linkname));
    }
    if size > octal_max(12) {
        pax.push_str(&pax_record("size", &size.to_string()));
    }
    if entry.uid > octal_max(8) {
        pax.push_str(&pax_record("uid", &entry.uid.to_string()));
    }
    if entry.gid > octal_max(8) {
        pax.push_str(&pax_record("gid", &entry.gid.to_string()));
    }
    if entry.mtime < 0 || entry.mtime as u64 > octal_max(12) {
        pax.push_str(&pax_record("mtime", &entry.mtime.to_string()));
    }
    if entry.uname.len() > 32 {
        pax.push_str(&pax_record("uname", &entry.uname));
    }
    if entry.gname.len() > 32 {
        pax.push_str(&pax_record("gname", &entry.gname));
    }
    if !pax.is_empty() {
        let base = name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let pax_name: String = format!("PaxHeaders/{base}").chars().take(99).collect();
        let pax_entry = Entry {
            kind: EntryKind::File {
                size: pax.len() as u64,
            },
            mode: 0o644,
            ..entry.clone()
        };
        out.write_all(&header(&pax_name, b'x', pax.len() as u64, &pax_entry, ""))?;
        out.write_all(pax.as_bytes())?;
        write_padding(out, pax.len() as u64)?;
    }
    let short_name: String = truncate(&name, 100);
    let short_link: String = truncate(linkname, 100);
    out.write_all(&header(&short_name, typeflag, size, entry, &short_link))
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Pad `size` bytes of content to a whole block.
pub fn write_padding(out: &mut impl Write, size: u64) -> io::Result<()> {
    out.write_all(&[0u8; BLOCK][..padding(size)])
}

/// The end of the archive: two zero blocks.
pub fn write_end(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&[0u8; 2 * BLOCK])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o600,
            mtime: 1_700_000_000,
            uid: 999,
            gid: 999,
            uname: "postgres".into(),
            gname: "postgres".into(),
        }
    }

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record("path", "a"), "9 path=a\n");
        let long = "x".repeat(95);
        let record = pax_record("path", &long);
        assert_eq!(record.len().to_string(), record.split(' ').next().unwrap());
    }

    /// GNU tar lists and extracts what the writer produced, long names and symlinks included.
    #[test]
    fn gnu_tar_reads_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let long_dir = format!("base/{}", "d".repeat(120));
        let long_file = format!("{long_dir}/{}", "f".repeat(150));
        let long_target = format!("/some/where/{}", "t".repeat(130));
        let mut out = Vec::new();
        for e in [
            entry("base", EntryKind::Directory),
            entry(&long_dir, EntryKind::Directory),
        ] {
            write_header(&mut out, &e).unwrap();
        }
        let content = b"hello tar\n";
        write_header(&mut out, &entry(&long_file, EntryKind::File { size: 10 })).unwrap();
        out.extend_from_slice(content);
        write_padding(&mut out, 10).unwrap();
        write_header(
            &mut out,
            &entry(
                "pg_tblspc/16384",
                EntryKind::Symlink {
                    target: long_target.clone(),
                },
            ),
        )
        .unwrap();
        let mut odd = entry("empty", EntryKind::File { size: 0 });
        odd.uid = 10_000_000;
        odd.mtime = 1 << 34;
        write_header(&mut out, &odd).unwrap();
        write_end(&mut out).unwrap();
        assert_eq!(out.len() % BLOCK, 0);
        let tar = dir.path().join("t.tar");
        std::fs::write(&tar, &out).unwrap();
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let status = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(x.join(&long_file)).unwrap(), content);
        assert_eq!(
            std::fs::read_link(x.join("pg_tblspc/16384"))
                .unwrap()
                .to_str()
                .unwrap(),
            long_target
        );
        let listing = std::process::Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&tar)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("10000000/999"), "{listing}");
        assert!(listing.contains("-rw-------"), "{listing}");
        // 2^34 seconds is in the year 2514.
        assert!(listing.contains("2514-"), "{listing}");
    }
}
