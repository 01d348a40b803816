//! Before a replay to the end of the archive: the archive must hold every segment from the
//! backup's first WAL on. Postgres takes a missing segment for the end of the archive: it ends
//! the recovery there, promotes, and nothing says that the WAL after the gap (archiving turned
//! off for a while, a segment marked done by hand, WAL deleted) was left out. A gap is refused
//! with what is missing and how to restore up to it on purpose (a target before it). With an
//! explicit target postgres itself reports a target it could not reach.

use anyhow::{bail, Result};
use pgsteward_archive::wal::deadline_in;
use pgsteward_archive::{WalArchive, WalFile, WalKind};
use pgsteward_backup::info::BackupInfo;
use pgsteward_backup::restore::target::Lsn;

/// The position part of a segment name (log and segment, 16 hex digits): comparable across
/// timelines.
fn position(file: &WalFile) -> &str {
    &file.name()[8..24]
}

/// The segments missing on the replay's path from the backup's first WAL to the last archived
/// segment, by timeline (empty when the path is whole). The path follows the timelines from
/// the backup's upward, each up to the first segment of the next one in the archive (where
/// postgres switches to it; what an old timeline holds beyond that, such as the WAL of a
/// primary that went on after a failover, is not on the path). History files are not read.
pub fn missing_after_backup(
    archived: &[WalFile],
    begin_wal: &WalFile,
    segment_bytes: u64,
) -> Vec<(u32, Vec<String>)> {
    let first_timeline = begin_wal.timeline();
    let mut by_timeline: std::collections::BTreeMap<u32, Vec<&WalFile>> = Default::default();
    for file in archived.iter().filter(|f| {
        f.kind() == WalKind::Segment
            && f.timeline() >= first_timeline
            && position(f) >= position(begin_wal)
    }) {
        by_timeline.entry(file.timeline()).or_default().push(file);
    }
    for files in by_timeline.values_mut() {
        files.sort();
    }
    let firsts: Vec<Option<&str>> = by_timeline
        .values()
        .map(|files| files.first().map(|f| position(f)))
        .collect();
    let mut missing: Vec<(u32, Vec<String>)> = Vec::new();
    let mut expected: Option<WalFile> = None;
    for (index, (timeline, files)) in by_timeline.iter().enumerate() {
        let next_first = firsts.get(index + 1).copied().flatten();
        let mut holes = Vec::new();
        for file in files
            .iter()
            .filter(|f| next_first.is_none_or(|n| position(f) < n))
        {
            // Walk from the expected position to this segment, on this timeline's names.
            let mut at = expected
                .as_ref()
                .and_then(|e| WalFile::parse(&format!("{timeline:08X}{}", position(e))).ok());
            let mut guard = 0;
            while let Some(hole) = at.filter(|a| position(a) < position(file) && guard < 100_000) {
                holes.push(hole.name().to_owned());
                at = hole.next_segment(segment_bytes);
                guard += 1;
            }
            expected = file.next_segment(segment_bytes);
        }
        if !holes.is_empty() {
            missing.push((*timeline, holes));
        }
    }
    missing
}

/// Ok when the archive can be replayed from `backup` to its end without a gap.
pub async fn check(
    wal: &WalArchive,
    backup: &BackupInfo,
    timeout: std::time::Duration,
) -> Result<()> {
    let Some(begin) = backup
        .begin_wal()
        .and_then(|name| WalFile::parse(name).ok())
    else {
        tracing::warn!(backup = %backup.backup_id(), "the backup names no first WAL segment: the archive's WAL is not checked for gaps");
        return Ok(());
    };
    let segment_bytes = backup.segment_size().unwrap_or(16 << 20);
    let archived: Vec<WalFile> = wal
        .list(deadline_in(timeout))
        .await?
        .into_iter()
        .map(|(file, _)| file)
        .collect();
    let missing = missing_after_backup(&archived, &begin, segment_bytes);
    let Some((timeline, names)) = missing.first() else {
        return Ok(());
    };
    let first = WalFile::parse(&names[0])?;
    bail!(
        "the archive has a gap after backup {}: timeline {timeline} misses {} segment(s) ({}{}); \
         postgres would end the recovery at the gap and leave out all WAL archived after it. \
         Restore a backup taken after the gap (--backup ID), or restore up to the gap on purpose \
         with a target before it (--target-lsn {} or an earlier time){}",
        backup.backup_id(),
        names.len(),
        names.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
        if names.len() > 5 { ", ..." } else { "" },
        Lsn(first.start_lsn(segment_bytes).unwrap_or_default()),
        if missing.len() > 1 {
            format!(
                " ({} timelines have gaps: `pgsteward wal check` lists them)",
                missing.len()
            )
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<WalFile> {
        names
            .iter()
            .map(|n| WalFile::parse(n).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn only_gaps_on_the_replay_path_count() {
        let begin = WalFile::parse("000000010000000000000004").unwrap_or_else(|e| panic!("{e}"));
        let archived = files(&[
            // A gap before the backup does not matter.
            "000000010000000000000001",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006.partial",
            "00000002.history",
            "000000020000000000000006",
            "000000020000000000000007",
        ]);
        assert!(missing_after_backup(&archived, &begin, 16 << 20).is_empty());

        let mut with_gap = archived.clone();
        with_gap.extend(files(&["00000002000000000000000A"]));
        assert_eq!(
            missing_after_backup(&with_gap, &begin, 16 << 20),
            vec![(
                2,
                vec![
                    "000000020000000000000008".to_owned(),
                    "000000020000000000000009".to_owned()
                ]
            )]
        );
        // A primary that went on writing on timeline 1 after the failover to timeline 2: its
        // later segments are not on the path.
        let mut split = archived.clone();
        split.extend(files(&[
            "000000010000000000000009",
            "00000001000000000000000B",
        ]));
        assert!(missing_after_backup(&split, &begin, 16 << 20).is_empty());

        // The segments where timeline 2 begins are gone: missing on timeline 2.
        let late = files(&[
            "000000010000000000000004",
            "000000010000000000000005",
            "000000020000000000000008",
        ]);
        assert_eq!(
            missing_after_backup(&late, &begin, 16 << 20),
            vec![(
                2,
                vec![
                    "000000020000000000000006".to_owned(),
                    "000000020000000000000007".to_owned()
                ]
            )]
        );
        // A hole on the backup's own timeline, across a log boundary.
        let hole = files(&[
            "000000010000000000000004",
            "0000000100000001000000FF",
            "000000010000000200000001",
        ]);
        let found = missing_after_backup(&hole, &begin, 16 << 20);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].1.first().map(String::as_str),
            Some("000000010000000000000005")
        );
        assert!(found[0].1.contains(&"000000010000000200000000".to_owned()));
        assert!(!found[0].1.contains(&"0000000100000001000000FF".to_owned()));

        // The target the refusal suggests: the first missing segment's start.
        let start = |name: &str| {
            let file = WalFile::parse(name).unwrap_or_else(|e| panic!("{e}"));
            Lsn(file.start_lsn(16 << 20).unwrap_or_default()).to_string()
        };
        assert_eq!(start("000000020000000000000008"), "0/8000000");
        assert_eq!(start("0000000200000003000000FF"), "3/FF000000");
    }
}
