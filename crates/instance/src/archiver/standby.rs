//! Archiving on a standby (`archive.wal.archive_on_standbys`, rendered as `archive_mode =
//! always`). The primary archives what it writes, so a standby leaves each segment it received
//! to the primary for `standby_grace` and uploads it itself only when the archive still lacks
//! it then (the primary failed, or cannot reach the store while the standby can). Postgres
//! keeps the segment in the standby's `pg_wal` until the standby's archive_command succeeded,
//! so neither a restartpoint nor a failover can lose a segment the archive lacks.

use std::path::Path;
use std::time::{Duration, SystemTime};

use pgsteward_archive::wal::deadline_in;
use pgsteward_archive::{WalArchive, WalFile};

/// The data directory is a standby's (postgres removes the signal file when it promotes).
pub fn is_standby(pgdata: &Path) -> bool {
    pgdata
        .join(crate::replication::standby::STANDBY_SIGNAL)
        .exists()
}

/// How long ago postgres marked `name` ready (zero when the status file is gone or unreadable,
/// which only shortens nothing: the caller then waits the whole grace).
fn ready_age(pgdata: &Path, name: &str) -> Duration {
    std::fs::metadata(super::status::file(pgdata, name, super::status::READY))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .unwrap_or_default()
}

/// Whether the archive already holds `file` (stored by the primary, or restored from the
/// archive in the first place), asked at once and, when it does not yet, again once the
/// segment arrived `grace` ago: true means nothing is left to do. One HEAD request, or two;
/// the content is not compared (the primary wrote the same bytes, and checks conflicts itself).
/// Asking at once spares the wait for segments a standby restored from the archive, which
/// postgres marks ready with `archive_mode = always` and keeps until they are "archived".
pub async fn left_to_primary(
    wal: &WalArchive,
    pgdata: &Path,
    file: &WalFile,
    grace: Duration,
    timeout: Duration,
) -> Result<bool, String> {
    let archived = || async {
        wal.is_archived(file, deadline_in(timeout))
            .await
            .map_err(|e| format!("checking whether the primary archived {file}: {e}"))
    };
    if archived().await? {
        tracing::debug!(wal = %file, "already archived");
        return Ok(true);
    }
    let waited = ready_age(pgdata, file.name());
    if waited < grace {
        tokio::time::sleep(grace - waited).await;
        if archived().await? {
            tracing::debug!(wal = %file, "archived by the primary");
            return Ok(true);
        }
    }
    tracing::warn!(wal = %file, grace_s = grace.as_secs_f64(), "the archive still lacks a segment this standby received: archiving it from the standby");
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_file_has_an_age_and_a_missing_one_none() {
        let dir = std::env::temp_dir().join(format!("pgsteward-standby-{}", std::process::id()));
        let status = dir.join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).unwrap_or_else(|e| panic!("{e}"));
        let name = "000000010000000000000003";
        assert_eq!(ready_age(&dir, name), Duration::ZERO);
        let ready = status.join(format!("{name}.ready"));
        std::fs::write(&ready, "").unwrap_or_else(|e| panic!("{e}"));
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&ready)
            .and_then(|f| f.set_modified(an_hour_ago))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ready_age(&dir, name) >= Duration::from_secs(3599));
        assert!(!is_standby(&dir));
        std::fs::write(dir.join("standby.signal"), "").unwrap_or_else(|e| panic!("{e}"));
        assert!(is_standby(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn what_the_archive_holds_costs_no_wait_and_the_rest_waits_the_grace() {
        use pgsteward_archive::layout::Compression;
        use pgsteward_archive::store::file::FileStore;
        use pgsteward_archive::Layout;

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = FileStore::new(dir.path().join("store")).unwrap_or_else(|e| panic!("{e}"));
        let wal = WalArchive::new(
            std::sync::Arc::new(store),
            Layout::new("srv"),
            Compression::Gzip,
            6,
        );
        let pgdata = dir.path().join("data");
        std::fs::create_dir_all(pgdata.join("pg_wal/archive_status"))
            .unwrap_or_else(|e| panic!("{e}"));
        let timeout = Duration::from_secs(10);
        let stored = WalFile::parse("000000010000000000000004").unwrap_or_else(|e| panic!("{e}"));
        wal.archive(
            &stored,
            bytes::Bytes::from_static(b"wal"),
            deadline_in(timeout),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        // Archived already (a segment restored from the archive): found at once, not after an
        // hour's grace.
        let hour = Duration::from_secs(3600);
        let found = tokio::time::timeout(
            Duration::from_secs(5),
            left_to_primary(&wal, &pgdata, &stored, hour, timeout),
        )
        .await;
        assert_eq!(found, Ok(Ok(true)));
        // Missing: it waits out the grace, then is the standby's to upload.
        let missing = WalFile::parse("000000010000000000000005").unwrap_or_else(|e| panic!("{e}"));
        let grace = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let left = left_to_primary(&wal, &pgdata, &missing, grace, timeout).await;
        assert_eq!(left, Ok(false));
        assert!(started.elapsed() >= grace);
    }
}
