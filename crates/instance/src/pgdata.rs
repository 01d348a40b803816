//! Inspection of a data directory before anything touches it: empty, a postgres data
//! directory of some major version, or something else; `postmaster.pid` parsing; the system
//! identifier in `pg_control`.

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// What a data directory path holds.
#[derive(Debug, Clone, PartialEq)]
pub enum DataDirKind {
    /// Does not exist yet.
    Missing,
    /// Exists and is empty.
    Empty,
    /// A postgres data directory of this major version.
    Postgres { major: u32 },
}

/// Why a data directory cannot be used. Nothing is changed when one of these is returned.
#[derive(Debug, Error, PartialEq)]
pub enum DataDirError {
    #[error("data directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "data directory {path} is not empty and is not a postgres data directory (no PG_VERSION); found: {sample}. Refusing to touch it: point pgdata at an empty directory or an existing data directory"
    )]
    NotPostgres { path: PathBuf, sample: String },
    #[error(
        "data directory {path} contains only lost+found: it is a mount point. Use a subdirectory of the mount point as pgdata"
    )]
    MountPoint { path: PathBuf },
    #[error("data directory {path} has an unreadable PG_VERSION ({content:?})")]
    BadVersionFile { path: PathBuf, content: String },
    #[error(
        "data directory {path} was created by PostgreSQL {data_major} but the binaries are PostgreSQL {binary_major}; refusing to start (upgrade with pg_upgrade, or set bin_dir to PostgreSQL {data_major} binaries)"
    )]
    WrongMajor {
        path: PathBuf,
        data_major: u32,
        binary_major: u32,
    },
    #[error("cannot read data directory {path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// Look at `path` without changing anything.
pub fn inspect(path: &Path) -> Result<DataDirKind, DataDirError> {
    let io = |e: std::io::Error| DataDirError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDirKind::Missing),
        Err(e) => return Err(io(e)),
    };
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let mut names: Vec<String> = fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    if names.is_empty() {
        return Ok(DataDirKind::Empty);
    }
    let version_file = path.join("PG_VERSION");
    if !version_file.exists() {
        if names == ["lost+found"] {
            return Err(DataDirError::MountPoint {
                path: path.to_path_buf(),
            });
        }
        let sample = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let more = if names.len() > 5 {
            format!(" (and {} more)", names.len() - 5)
        } else {
            String::new()
        };
        return Err(DataDirError::NotPostgres {
            path: path.to_path_buf(),
            sample: format!("{sample}{more}"),
        });
    }
    let content = fs::read_to_string(&version_file).map_err(io)?;
    let major = content
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| DataDirError::BadVersionFile {
            path: path.to_path_buf(),
            content: content.trim().chars().take(40).collect(),
        })?;
    Ok(DataDirKind::Postgres { major })
}

/// Check that the data directory's major version matches the binaries'.
pub fn check_major(path: &Path, data_major: u32, binary_major: u32) -> Result<(), DataDirError> {
    if data_major == binary_major {
        Ok(())
    } else {
        Err(DataDirError::WrongMajor {
            path: path.to_path_buf(),
            data_major,
            binary_major,
        })
    }
}

/// The first lines of `postmaster.pid`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostmasterPid {
    pub pid: i32,
    pub data_dir: PathBuf,
    /// Start time, seconds since the epoch.
    pub start_epoch: i64,
    pub port: u16,
}

/// Read `<pgdata>/postmaster.pid`; None when absent or unparsable (postgres writes it in
/// steps, so a partial file is possible during startup).
pub fn read_postmaster_pid(pgdata: &Path) -> Option<PostmasterPid> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    parse_postmaster_pid(&text)
}

fn parse_postmaster_pid(text: &str) -> Option<PostmasterPid> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let data_dir = PathBuf::from(lines.next()?.trim());
    let start_epoch = lines.next()?.trim().parse().ok()?;
    let port = lines.next()?.trim().parse().ok()?;
    Some(PostmasterPid {
        pid,
        data_dir,
        start_epoch,
        port,
    })
}

/// True when `<pgdata>/postmaster.pid`'s status line (the eighth) says `stopping`: postgres
/// received a shutdown request (smart, fast or immediate, from anyone) and refuses new
/// connections.
pub fn postmaster_stopping(pgdata: &Path) -> bool {
    fs::read_to_string(pgdata.join("postmaster.pid"))
        .is_ok_and(|text| status_line_is_stopping(&text))
}

fn status_line_is_stopping(text: &str) -> bool {
    text.lines().nth(7).is_some_and(|l| l.trim() == "stopping")
}

/// The database system identifier: the first field of `global/pg_control` (native-endian, as
/// the postgres that wrote it).
pub fn system_identifier(pgdata: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut first = [0u8; 8];
    fs::File::open(pgdata.join("global/pg_control"))?.read_exact(&mut first)?;
    Ok(u64::from_ne_bytes(first))
}

/// The WAL segment size, read off the segment files in `pg_wal` (postgres pre-allocates each
/// to `wal_segment_size`, a power of two from 1 MiB to 1 GiB); None when no segment is there
/// yet or one has another size (logged).
pub fn wal_segment_size(pgdata: &Path) -> Option<u64> {
    let entries = fs::read_dir(pgdata.join("pg_wal")).ok()?;
    let size = entries.flatten().find_map(|entry| {
        let name = entry.file_name();
        let name = name.to_str()?;
        let is_segment = name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let meta = entry.metadata().ok()?;
        (is_segment && meta.is_file()).then_some(meta.len())
    })?;
    if pgsteward_archive::walheader::is_segment_size(size) {
        Some(size)
    } else {
        tracing::warn!(
            size,
            pgdata = %pgdata.display(),
            "a WAL segment in pg_wal has an unexpected size; not taken as the segment size"
        );
        None
    }
}

/// True when `pid` is a live (not zombie) process whose executable name is `postgres`.
pub fn is_live_postgres(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: pid (comm) state ...; comm may contain spaces, so split at the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
    let state = tail.trim_start().chars().next().unwrap_or('?');
    comm.starts_with("postgres") && state != 'Z' && state != 'X'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_segment_size_comes_from_the_files_in_pg_wal() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wal_segment_size(dir.path()), None);
        let pg_wal = dir.path().join("pg_wal");
        fs::create_dir_all(pg_wal.join("archive_status")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(
            pg_wal.join("00000002.history"),
            "1\t0/3000000\tno recovery target\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wal_segment_size(dir.path()), None);
        let segment = fs::File::create(pg_wal.join("000000010000000000000001"))
            .unwrap_or_else(|e| panic!("{e}"));
        segment.set_len(64 << 20).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wal_segment_size(dir.path()), Some(64 << 20));
        segment.set_len(12345).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wal_segment_size(dir.path()), None);
    }

    #[test]
    fn classifies_directories() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("data");
        assert_eq!(inspect(&p), Ok(DataDirKind::Missing));
        fs::create_dir(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inspect(&p), Ok(DataDirKind::Empty));
        fs::create_dir(p.join("lost+found")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(inspect(&p), Err(DataDirError::MountPoint { .. })));
        fs::write(p.join("notes.txt"), "x").unwrap_or_else(|e| panic!("{e}"));
        let err = inspect(&p).unwrap_err().to_string();
        assert!(
            err.contains("not a postgres data directory") && err.contains("notes.txt"),
            "{err}"
        );
        fs::write(p.join("PG_VERSION"), "15\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inspect(&p), Ok(DataDirKind::Postgres { major: 15 }));
        fs::write(p.join("PG_VERSION"), "banana").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            inspect(&p),
            Err(DataDirError::BadVersionFile { .. })
        ));
        assert!(check_major(&p, 15, 18)
            .unwrap_err()
            .to_string()
            .contains("PostgreSQL 15 but the binaries are PostgreSQL 18"));
    }

    #[test]
    fn finds_manager_owned_parameters_in_auto_conf() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::write(
            dir.path().join("postgresql.auto.conf"),
            "# Do not edit\nwork_mem = '8MB'\nport = '6000'\narchive_command='x'\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(auto_conf_overrides(dir.path()), ["archive_command", "port"]);
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = lock(dir.path());
        assert!(first.is_ok());
        let second = lock(dir.path()).map(|_| ()).unwrap_err().to_string();
        assert!(
            second.contains("another pgsteward already manages"),
            "{second}"
        );
        drop(first);
        assert!(lock(dir.path()).is_ok());
    }

    #[test]
    fn parses_postmaster_pid() {
        let text = "4242\n/var/lib/pg\n1700000000\n5432\n/tmp\n*\n  1234 5678\nready   \n";
        let parsed = parse_postmaster_pid(text);
        assert_eq!(
            parsed.map(|p| (p.pid, p.port, p.start_epoch)),
            Some((4242, 5432, 1700000000))
        );
        assert_eq!(parse_postmaster_pid("4242\n"), None);
        assert!(!status_line_is_stopping(text));
        assert!(status_line_is_stopping(
            &text.replace("ready   ", "stopping")
        ));
        assert!(!status_line_is_stopping("4242\n"));
    }
}

/// An exclusive lock on the data directory held for the manager's lifetime, so that two
/// managers never supervise one PGDATA. Released by the kernel when the process dies.
#[derive(Debug)]
pub struct DataDirLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// Take the lock on `pgdata` (which must exist) without waiting.
pub fn lock(pgdata: &Path) -> anyhow::Result<DataDirLock> {
    use anyhow::Context;
    let dir = fs::File::open(pgdata)
        .with_context(|| format!("opening {} to lock it", pgdata.display()))?;
    match nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DataDirLock { _lock: lock }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => anyhow::bail!(
            "another pgsteward already manages {}: refusing to run a second manager on the same data directory",
            pgdata.display()
        ),
        Err((_, e)) => Err(anyhow::anyhow!("locking {}: {e}", pgdata.display())),
    }
}

/// Manager-owned parameters that `postgresql.auto.conf` (ALTER SYSTEM) sets; they would
/// override the manager's values.
pub fn auto_conf_overrides(pgdata: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(pgdata.join("postgresql.auto.conf")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['=', ' ', '\t']).next())
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| crate::config::gucs::is_manager_owned(name))
        .collect();
    names.sort();
    names.dedup();
    names
}
