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
    pgdata.join("standby.signal").exists()
}

/// How long ago postgres marked `name` ready (zero when the status file is gone or unreadable,
/// which only shortens nothing: the caller then waits the whole grace).
fn ready_age(pgdata: &Path, name: &str) -> Duration {
    std::fs::metadata(
        pgdata
            .join("pg_wal/archive_status")
            .join(format!("{name}.ready")),
    )
    .and_then(|m| m.modified())
    .ok()
    .and_then(|modified| SystemTime::now().duration_since(modified).ok())
    .unwrap_or_default()
}

/// Wait until `file` arrived `grace` ago, then tell whether the archive holds it (stored by the
/// primary, or it was restored from the archive in the first place): true means nothing is
/// left to do. One listing of the segment's directory; its content is not compared (the
/// primary wrote the same bytes, and checks conflicts itself).
pub async fn left_to_primary(
    wal: &WalArchive,
    pgdata: &Path,
    file: &WalFile,
    grace: Duration,
    timeout: Duration,
) -> Result<bool, String> {
    let waited = ready_age(pgdata, file.name());
    if waited < grace {
        tokio::time::sleep(grace - waited).await;
    }
    let present = wal
        .archived_among(std::slice::from_ref(file), deadline_in(timeout))
        .await
        .map_err(|e| format!("checking whether the primary archived {file}: {e}"))?;
    if present.contains(file) {
        tracing::debug!(wal = %file, "archived by the primary");
        return Ok(true);
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
}
