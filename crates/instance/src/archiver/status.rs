//! Postgres's archive status files, `pg_wal/archive_status/<WAL file>.ready|.done`, read in
//! one place: the archiver's scan, the standby's grace, the promotion's inherited WAL and the
//! scheduled archive check all ask which files carry a status, or since when.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// `.ready`: postgres waits for archive_command to store the file.
pub const READY: &str = "ready";
/// `.done`: postgres counts the file as archived.
pub const DONE: &str = "done";

/// The status file of WAL file `name` with `status` (`READY` or `DONE`).
pub fn file(pgdata: &Path, name: &str, status: &str) -> PathBuf {
    pgdata
        .join("pg_wal/archive_status")
        .join(format!("{name}.{status}"))
}

/// The WAL file names that carry `status`, each with when it got it (now when unreadable);
/// unordered. An error when the directory cannot be read.
pub fn with_status(pgdata: &Path, status: &str) -> std::io::Result<Vec<(String, SystemTime)>> {
    let suffix = format!(".{status}");
    Ok(std::fs::read_dir(pgdata.join("pg_wal/archive_status"))?
        .flatten()
        .filter_map(|entry| {
            let name = entry
                .file_name()
                .to_str()?
                .strip_suffix(&suffix)?
                .to_owned();
            let since = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now());
            Some((name, since))
        })
        .collect())
}

/// The WAL file names that carry `status` (none when the directory cannot be read).
pub fn names_with_status(pgdata: &Path, status: &str) -> Vec<String> {
    with_status(pgdata, status)
        .map(|entries| entries.into_iter().map(|(name, _)| name).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_by_status() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(with_status(dir.path(), READY).is_err());
        assert!(names_with_status(dir.path(), READY).is_empty());
        std::fs::create_dir_all(dir.path().join("pg_wal/archive_status"))
            .unwrap_or_else(|e| panic!("{e}"));
        for (name, status) in [
            ("000000010000000000000004", DONE),
            ("000000010000000000000005", READY),
            ("00000002.history", READY),
        ] {
            std::fs::write(file(dir.path(), name, status), "").unwrap_or_else(|e| panic!("{e}"));
        }
        let mut ready = names_with_status(dir.path(), READY);
        ready.sort();
        assert_eq!(ready, ["000000010000000000000005", "00000002.history"]);
        assert_eq!(
            names_with_status(dir.path(), DONE),
            ["000000010000000000000004"]
        );
    }
}
