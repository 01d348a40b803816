//! Locating the postgres binaries and reading their major version.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A directory of postgres server binaries and the major version they are.
#[derive(Debug, Clone, PartialEq)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
    pub major: u32,
    /// Full `postgres --version` output line.
    pub version_line: String,
}

impl PgBinaries {
    /// Use `configured` when set, otherwise detect: `pg_config --bindir` on PATH, then the
    /// newest `/usr/lib/postgresql/<major>/bin`.
    pub fn locate(configured: Option<&Path>) -> Result<Self> {
        let bin_dir = match configured {
            Some(dir) => dir.to_path_buf(),
            None => detect_bin_dir().context(
                "no postgres binaries found: set bin_dir (or PGSTEWARD_BIN_DIR / --bin-dir)",
            )?,
        };
        Self::at(&bin_dir)
    }

    /// Inspect the binaries in `bin_dir`.
    pub fn at(bin_dir: &Path) -> Result<Self> {
        let postgres = bin_dir.join("postgres");
        if !postgres.is_file() {
            bail!(
                "{} does not exist or is not a file (bin_dir)",
                postgres.display()
            );
        }
        let output = Command::new(&postgres)
            .arg("--version")
            .output()
            .with_context(|| format!("running {} --version", postgres.display()))?;
        let version_line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let major = parse_major(&version_line)
            .with_context(|| format!("unrecognised version output {version_line:?}"))?;
        Ok(PgBinaries {
            bin_dir: bin_dir.to_path_buf(),
            major,
            version_line,
        })
    }

    /// Path of one binary (`initdb`, `postgres`, `pg_controldata`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// Major version from `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` or `... 18.1`.
pub fn parse_major(version_line: &str) -> Option<u32> {
    let after = version_line.split(')').nth(1)?.trim();
    let number = after.split_whitespace().next()?;
    let major = number.split('.').next()?;
    let major: String = major.chars().take_while(char::is_ascii_digit).collect();
    major.parse().ok()
}

fn detect_bin_dir() -> Option<PathBuf> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        if output.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if dir.join("postgres").is_file() {
                return Some(dir);
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_lines() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 18.1"), Some(18));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("postgres (PostgreSQL) 19devel"), Some(19));
        assert_eq!(parse_major("garbage"), None);
    }
}
