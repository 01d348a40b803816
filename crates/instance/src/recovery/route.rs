//! Which timelines a replay follows, found as postgres finds them for
//! `recovery_target_timeline`: `latest` looks in the archive for the history file of the
//! timeline after the backup's, then the one after that, and so on, and follows the newest it
//! finds; `current` stays on the backup's timeline; a number follows that timeline. The
//! followed timeline's history file, read from the archive, says where the replay moves from
//! one timeline to the next.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use pgsteward_archive::timeline::History;
use pgsteward_archive::{WalArchive, WalFile};
use pgsteward_backup::restore::target::TargetTimeline;
use tokio::time::Instant;

/// More timelines than this after a backup's is not a real archive; the probe stops there.
const MAX_PROBES: u32 = 10_000;

/// The history a replay from a backup on `backup_timeline` follows for `target`. With
/// `listed` (the archive's files, already listed), `latest` is found in that listing;
/// without, by asking for each history file in turn.
pub async fn resolve(
    wal: &WalArchive,
    backup_timeline: u32,
    target: TargetTimeline,
    listed: Option<&[WalFile]>,
    deadline: Instant,
) -> Result<History> {
    let (timeline, fetched) = match target {
        TargetTimeline::Current => (backup_timeline, None),
        TargetTimeline::Id(timeline) => (timeline, None),
        TargetTimeline::Latest => newest(wal, backup_timeline, listed, deadline).await?,
    };
    if timeline == backup_timeline || timeline == 1 {
        // The replay starts on its target timeline and stays there; or the target is the
        // first timeline, which has no history file (and no ancestors).
        return Ok(History::without_forks(timeline));
    }
    let Some(file) = WalFile::history_of(timeline) else {
        bail!("timeline {timeline} has no history file name");
    };
    let found = match fetched {
        Some(found) => Some(found),
        None => wal
            .fetch(&file, deadline)
            .await
            .with_context(|| format!("reading {file} from the archive"))?
            .map(|(key, content, _)| (key, content)),
    };
    let Some((key, content)) = found else {
        bail!(
            "the archive has no {file}: postgres cannot recover to timeline {timeline} without \
             it (recovery target timeline {timeline} does not exist there)"
        );
    };
    History::parse(timeline, &String::from_utf8_lossy(&content))
        .with_context(|| format!("reading {key}"))
}

/// The newest timeline after `from` whose history file is archived, counting up without a
/// gap, as postgres's `latest` does; with its history file's key and content when they were
/// downloaded to find it (without a listing).
async fn newest(
    wal: &WalArchive,
    from: u32,
    listed: Option<&[WalFile]>,
    deadline: Instant,
) -> Result<(u32, Option<(String, Bytes)>)> {
    let mut newest = (from, None);
    for _ in 0..MAX_PROBES {
        let Some(file) = newest.0.checked_add(1).and_then(WalFile::history_of) else {
            break;
        };
        let content = match listed {
            Some(files) if files.contains(&file) => None,
            Some(_) => break,
            None => match wal
                .fetch(&file, deadline)
                .await
                .with_context(|| format!("looking for {file} in the archive"))?
            {
                Some((key, content, _)) => Some((key, content)),
                None => break,
            },
        };
        newest = (file.timeline(), content);
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsteward_archive::layout::{Compression, Layout};
    use pgsteward_archive::store::file::FileStore;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn resolves_timelines_as_postgres_does() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            Arc::new(FileStore::new(dir.path().join("store")).unwrap_or_else(|e| panic!("{e}")));
        let wal = WalArchive::new(store, Layout::new("srv"), Compression::Gzip, 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Timelines 2 and 3 have history files, 4 does not, 5 does (after the gap).
        for (timeline, text) in [
            (2, "1\t0/5000000\tno recovery target specified\n"),
            (3, "1\t0/5000000\tx\n2\t0/9000000\ty\n"),
            (5, "1\t0/5000000\tx\n"),
        ] {
            let file = WalFile::history_of(timeline).unwrap_or_else(|| panic!("{timeline}"));
            wal.archive(&file, Bytes::from(text.to_owned()), deadline)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let listed: Vec<WalFile> = wal
            .list(deadline)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(file, _)| file)
            .collect();
        for listing in [None, Some(listed.as_slice())] {
            let latest = resolve(&wal, 1, TargetTimeline::Latest, listing, deadline)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(latest.timeline(), 3, "the probe stops at the missing 4");
            assert_eq!(latest.forks().len(), 2);
            assert_eq!(latest.timeline_of(0x900_0000), 3);
        }
        let current = resolve(&wal, 2, TargetTimeline::Current, None, deadline)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(current, History::without_forks(2));
        // The first timeline needs no history file; another that has none is refused.
        let first = resolve(&wal, 2, TargetTimeline::Id(1), None, deadline)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(first, History::without_forks(1));
        let missing = resolve(&wal, 1, TargetTimeline::Id(4), None, deadline).await;
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.to_string().contains("no 00000004.history")),
            "{missing:?}"
        );
        let by_number = resolve(&wal, 1, TargetTimeline::Id(5), None, deadline)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(by_number.timeline_of(0x500_0000), 5);
    }
}
