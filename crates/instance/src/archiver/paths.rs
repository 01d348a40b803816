//! Which paths the WAL commands accept, checked the same way by `wal-archive`/`wal-restore`
//! and by the manager: the file to archive must be directly in pg_wal, a restore destination
//! must be inside PGDATA or pg_wal (which may be a symlink to another file system, as with
//! `initdb --waldir`). Relative paths are relative to PGDATA, as postgres's `%p` is; symlinks
//! and `..` are resolved before comparing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pgsteward_archive::WalFile;

/// The canonical directory of `path` and its file name.
fn canonical_parent(pgdata: &Path, path: &Path, what: &str) -> Result<(PathBuf, OsString)> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        pgdata.join(path)
    };
    let parent = absolute
        .parent()
        .with_context(|| format!("{what}: {} has no parent directory", absolute.display()))?;
    let name = absolute
        .file_name()
        .with_context(|| format!("{what}: {} has no file name", absolute.display()))?;
    let parent = std::fs::canonicalize(parent)
        .with_context(|| format!("{what}: {} does not exist", parent.display()))?;
    Ok((parent, name.to_owned()))
}

fn canonical(dir: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(dir).with_context(|| format!("{} does not exist", dir.display()))
}

/// The WAL file `path` names (archive_command's `%p`): directly in pg_wal, with a WAL name.
pub fn wal_file(pgdata: &Path, path: &Path) -> Result<(PathBuf, WalFile)> {
    let (parent, name) = canonical_parent(pgdata, path, "WAL path")?;
    if parent != canonical(&pgdata.join("pg_wal"))? {
        bail!(
            "WAL path {} is outside {}/pg_wal (the file to archive must be directly in pg_wal)",
            path.display(),
            pgdata.display()
        );
    }
    let file = WalFile::parse(&name.to_string_lossy())?;
    Ok((parent.join(name), file))
}

/// Where a restore may write (restore_command's `%p`): inside PGDATA or pg_wal.
pub fn restore_destination(pgdata: &Path, path: &Path) -> Result<PathBuf> {
    let (parent, name) = canonical_parent(pgdata, path, "restore destination")?;
    // pg_wal may be missing (a directory prepared for restore) or a symlink elsewhere.
    let mut allowed = vec![canonical(pgdata)?];
    allowed.extend(std::fs::canonicalize(pgdata.join("pg_wal")).ok());
    if !allowed.iter().any(|root| parent.starts_with(root)) {
        bail!(
            "restore destination {} is outside {}",
            path.display(),
            pgdata.display()
        );
    }
    Ok(parent.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_files_must_be_directly_in_pg_wal() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let seg = "000000010000000000000001";
        assert!(wal_file(dir.path(), Path::new(&format!("pg_wal/{seg}"))).is_ok());
        assert!(wal_file(dir.path(), &wal.join(seg)).is_ok());
        assert!(wal_file(dir.path(), Path::new("/etc/passwd")).is_err());
        assert!(wal_file(dir.path(), Path::new("pg_wal/../../x")).is_err());
        assert!(wal_file(
            dir.path(),
            Path::new(&format!("pg_wal/archive_status/{seg}"))
        )
        .is_err());
        assert!(wal_file(dir.path(), Path::new("pg_wal/00000001000000000000000G")).is_err());
    }

    #[test]
    fn restore_destinations_stay_in_pgdata_or_a_symlinked_pg_wal() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("data");
        let elsewhere = dir.path().join("wal-volume");
        std::fs::create_dir_all(&pgdata).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, pgdata.join("pg_wal")).unwrap();
        assert!(restore_destination(&pgdata, Path::new("pg_wal/RECOVERYXLOG")).is_ok());
        assert!(restore_destination(&pgdata, &pgdata.join("x")).is_ok());
        assert!(restore_destination(&pgdata, Path::new("/tmp/elsewhere")).is_err());
        assert!(restore_destination(&pgdata, Path::new("../x")).is_err());
    }
}
