//! The old timeline's WAL a promoted standby holds reaches the archive. With `archive_mode =
//! on`, postgres marks every segment a standby receives by streaming as archived (`.done`)
//! without archiving it: that is the primary's job. A primary that failed before archiving its
//! last segments would leave a hole in the archive right before the failover, and no restore
//! from a backup taken before it could replay past the hole.
//!
//! So, right after a promotion and before the checkpoint that may remove them, every segment
//! still in `pg_wal` marked `.done` that the archive lacks is marked `.ready` again: postgres
//! then keeps it until `archive_command` (the manager) has stored it, like any segment of its
//! own. When the archive cannot be listed in time, every `.done` segment is marked (the
//! archiver then finds most of them stored already).

use std::path::Path;
use std::time::Duration;

use pgsteward_archive::{WalArchive, WalFile, WalKind};
use tokio::time::Instant;

use crate::archiver::status;

/// How long the archive's listing may delay the promotion's answer.
const LISTING_BUDGET: Duration = Duration::from_secs(3);

/// The segments in `pg_wal` marked `.done`, in order.
fn done_segments(pgdata: &Path) -> Vec<WalFile> {
    let mut segments: Vec<WalFile> = status::names_with_status(pgdata, status::DONE)
        .iter()
        .filter_map(|name| {
            let file = WalFile::parse(name).ok()?;
            (file.kind() == WalKind::Segment && pgdata.join("pg_wal").join(name).is_file())
                .then_some(file)
        })
        .collect();
    segments.sort();
    segments
}

/// Mark `.ready` again every `.done` segment in `pg_wal` that `wal` does not hold; returns the
/// names marked.
pub async fn keep_unarchived(pgdata: &Path, wal: &WalArchive) -> Vec<String> {
    let done = done_segments(pgdata);
    if done.is_empty() {
        return Vec::new();
    }
    let archived = match wal
        .archived_among(&done, Instant::now() + LISTING_BUDGET)
        .await
    {
        Ok(archived) => archived,
        Err(e) => {
            tracing::warn!(error = %e, segments = done.len(), "the archive could not be listed after the promotion: every segment received as a standby is archived again");
            Default::default()
        }
    };
    let mut marked = Vec::new();
    for file in done.iter().filter(|f| !archived.contains(*f)) {
        let from = status::file(pgdata, file.name(), status::DONE);
        let to = status::file(pgdata, file.name(), status::READY);
        match std::fs::rename(&from, &to) {
            Ok(()) => marked.push(file.name().to_owned()),
            Err(e) => {
                tracing::warn!(wal = file.name(), error = %e, "could not mark a received segment for archiving")
            }
        }
    }
    if !marked.is_empty() {
        tracing::info!(
            count = marked.len(),
            first = marked.first().map(String::as_str).unwrap_or_default(),
            last = marked.last().map(String::as_str).unwrap_or_default(),
            "segments received as a standby and missing from the archive are archived now"
        );
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use pgsteward_archive::layout::{Compression, Layout};
    use pgsteward_archive::store::file::FileStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn only_received_segments_missing_from_the_archive_are_marked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pgdata = dir.path().join("data");
        let status = pgdata.join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).unwrap_or_else(|e| panic!("{e}"));
        let store =
            Arc::new(FileStore::new(dir.path().join("store")).unwrap_or_else(|e| panic!("{e}")));
        let wal = WalArchive::new(store, Layout::new("srv"), Compression::Gzip, 1);
        let archived = WalFile::parse("000000010000000000000004").unwrap_or_else(|e| panic!("{e}"));
        wal.archive(
            &archived,
            Bytes::from_static(b"x"),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        for name in [
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006",
        ] {
            std::fs::write(pgdata.join("pg_wal").join(name), b"x")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for status_file in [
            "000000010000000000000004.done",
            "000000010000000000000005.done",
            "000000010000000000000006.ready",
            // Marked done, but the segment is gone from pg_wal.
            "000000010000000000000003.done",
            "00000002.history.done",
        ] {
            std::fs::write(status.join(status_file), b"").unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            keep_unarchived(&pgdata, &wal).await,
            ["000000010000000000000005"]
        );
        assert!(status.join("000000010000000000000005.ready").is_file());
        assert!(!status.join("000000010000000000000005.done").exists());
        assert!(status.join("000000010000000000000004.done").is_file());
        assert!(status.join("000000010000000000000003.done").is_file());
    }
}
