//! Before a replay: the archive must hold the WAL the replay reads. Postgres takes a missing
//! segment for the end of the archive: it ends the recovery there, promotes, and nothing says
//! that the WAL after the gap (archiving turned off for a while, a segment marked done by
//! hand, WAL deleted) was left out; and a backup whose own WAL (its first to its last segment)
//! is missing fails only after the whole base backup was downloaded. Both are found here first
//! and refused with what is missing and what to do. `pgsteward wal check` reports the same for
//! every backup of the catalog.

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

/// `at`'s position on `timeline`.
fn on_timeline(timeline: u32, at: &WalFile) -> Option<WalFile> {
    WalFile::parse(&format!("{timeline:08X}{}", position(at))).ok()
}

/// The segments from `from` up to `to` (excluded, or included with `inclusive`), on `from`'s
/// timeline; bounded, so a corrupt name cannot make it run away.
fn segments_between(
    from: WalFile,
    to: &WalFile,
    inclusive: bool,
    segment_bytes: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = Some(from);
    while let Some(file) = at.filter(|a| {
        let p = position(a);
        (p < position(to) || (inclusive && p == position(to))) && out.len() < 100_000
    }) {
        out.push(file.name().to_owned());
        at = file.next_segment(segment_bytes);
    }
    out
}

/// The segments missing on the replay's path from the backup's first WAL (`begin`) to the last
/// archived segment, and at least to the backup's last WAL (`end`), by timeline (empty when
/// the path is whole), with the last segment on the path. The path follows the timelines from
/// the backup's upward, each up to the first segment of the next one in the archive (where
/// postgres switches to it; what an old timeline holds beyond that, such as the WAL of a
/// primary that went on after a failover, is not on the path). History files are not read.
pub fn missing_after_backup(
    archived: &[WalFile],
    begin: &WalFile,
    end: Option<&WalFile>,
    segment_bytes: u64,
) -> (Holes, Option<WalFile>) {
    let first_timeline = begin.timeline();
    let mut by_timeline: std::collections::BTreeMap<u32, Vec<&WalFile>> = Default::default();
    for file in archived.iter().filter(|f| {
        f.kind() == WalKind::Segment
            && f.timeline() >= first_timeline
            && position(f) >= position(begin)
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
    let mut missing: Holes = Vec::new();
    let mut expected = Some(begin.clone());
    let mut last: Option<WalFile> = None;
    for (index, (timeline, files)) in by_timeline.iter().enumerate() {
        let next_first = firsts.get(index + 1).copied().flatten();
        let mut holes = Vec::new();
        for file in files
            .iter()
            .filter(|f| next_first.is_none_or(|n| position(f) < n))
        {
            // From the expected position to this segment, on this timeline's names.
            if let Some(from) = expected.as_ref().and_then(|e| on_timeline(*timeline, e)) {
                holes.extend(segments_between(from, file, false, segment_bytes));
            }
            expected = file.next_segment(segment_bytes);
            last = Some((*file).clone());
        }
        if !holes.is_empty() {
            missing.push((*timeline, holes));
        }
    }
    // The backup's own WAL runs to its end, whatever the archive holds.
    if let Some(end) = end {
        let tail = expected
            .as_ref()
            .and_then(|e| on_timeline(end.timeline(), e))
            .map(|from| segments_between(from, end, true, segment_bytes))
            .unwrap_or_default();
        if !tail.is_empty() {
            match missing.iter_mut().find(|(t, _)| *t == end.timeline()) {
                Some((_, holes)) => holes.extend(tail),
                None => missing.push((end.timeline(), tail)),
            }
            missing.sort_by_key(|(timeline, _)| *timeline);
        }
    }
    (missing, last)
}

/// What the archive holds for a replay from one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Whole from the backup's first segment to the last on the path.
    Whole { last: Option<String> },
    /// Segments the backup itself needs (its first to its last WAL) are missing: it cannot be
    /// restored at all.
    LacksOwnWal { missing: Vec<String> },
    /// The backup restores, but a replay to the end would stop at the first gap: `first_gap`
    /// on `timeline`, with `timelines` timelines having gaps in all.
    EndsAtGap {
        timeline: u32,
        first_gap: Vec<String>,
        stops_at: Lsn,
        timelines: usize,
    },
}

/// The backup's first and last WAL segments and segment size (None when it names no first
/// segment: nothing can be checked).
fn backup_wal(backup: &BackupInfo) -> Option<(WalFile, Option<WalFile>, u64)> {
    let begin = WalFile::parse(backup.begin_wal()?).ok()?;
    let end = backup.end_wal().and_then(|n| WalFile::parse(n).ok());
    Some((begin, end, backup.segment_size().unwrap_or(16 << 20)))
}

/// Segment names missing from the archive, by timeline.
pub type Holes = Vec<(u32, Vec<String>)>;

/// The replay path from one backup to the end of the archive, walked.
struct Walk {
    missing: Holes,
    /// The last archived segment on the path.
    last: Option<WalFile>,
    /// The backup's last segment (its first when it records none).
    own_end: WalFile,
    segment_bytes: u64,
}

/// Walk the replay path from `backup` to the end of `archived` (None when the backup names no
/// first WAL segment).
fn walk(archived: &[WalFile], backup: &BackupInfo) -> Option<Walk> {
    let (begin, end, segment_bytes) = backup_wal(backup)?;
    // Without a recorded last segment, at least its first must be there.
    let own_end = end.unwrap_or_else(|| begin.clone());
    let (missing, last) = missing_after_backup(archived, &begin, Some(&own_end), segment_bytes);
    Some(Walk {
        missing,
        last,
        own_end,
        segment_bytes,
    })
}

/// The segments a replay from `backup` to the end of `archived` would miss, by timeline
/// (empty when it would work; None when the backup names no first WAL segment).
pub fn path_holes(archived: &[WalFile], backup: &BackupInfo) -> Option<Holes> {
    walk(archived, backup).map(|w| w.missing)
}

/// How a replay from `backup` to the end of `archived` would go (None when the backup names no
/// first WAL segment).
pub fn assess(archived: &[WalFile], backup: &BackupInfo) -> Option<Replay> {
    let Walk {
        missing,
        last,
        own_end,
        segment_bytes,
    } = walk(archived, backup)?;
    let own: Vec<String> = missing
        .iter()
        .flat_map(|(_, names)| names)
        .filter(|name| name.get(8..24).is_some_and(|p| p <= position(&own_end)))
        .cloned()
        .collect();
    if !own.is_empty() {
        return Some(Replay::LacksOwnWal { missing: own });
    }
    Some(match missing.first() {
        None => Replay::Whole {
            last: last.map(|f| f.name().to_owned()),
        },
        Some((timeline, names)) => Replay::EndsAtGap {
            timeline: *timeline,
            stops_at: Lsn(names
                .first()
                .and_then(|n| WalFile::parse(n).ok())
                .and_then(|f| f.start_lsn(segment_bytes))
                .unwrap_or_default()),
            first_gap: names.clone(),
            timelines: missing.len(),
        },
    })
}

/// The first `count` names, and "..." when there are more.
fn some_names(names: &[String], count: usize) -> String {
    let shown = names
        .iter()
        .take(count)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > count {
        format!("{shown}, ...")
    } else {
        shown
    }
}

impl Replay {
    /// One line for `pgsteward wal check`.
    pub fn summary(&self) -> String {
        match self {
            Replay::Whole { last: Some(last) } => {
                format!("restores to the end of the archive ({last})")
            }
            Replay::Whole { last: None } => "restores (no WAL archived after it yet)".to_owned(),
            Replay::LacksOwnWal { missing } => format!(
                "cannot be restored: the archive lacks {} segment(s) of its own WAL ({})",
                missing.len(),
                some_names(missing, 5)
            ),
            Replay::EndsAtGap {
                timeline,
                first_gap,
                stops_at,
                ..
            } => format!(
                "restores only up to {stops_at}: timeline {timeline} misses {} segment(s) ({})",
                first_gap.len(),
                some_names(first_gap, 5)
            ),
        }
    }
}

/// The refusal for a restore from `backup` (None when the replay can go ahead): a backup
/// lacking its own WAL always, a gap only for a replay `to_end` of the archive.
fn refusal(backup: &BackupInfo, replay: &Replay, to_end: bool) -> Option<String> {
    match replay {
        Replay::Whole { .. } => None,
        Replay::LacksOwnWal { missing } => Some(format!(
            "backup {} cannot be restored: the archive lacks {} segment(s) of the WAL written \
             while it was taken ({}), without which postgres cannot make it consistent. Restore \
             another backup (--backup ID; `pgsteward wal check` shows which ones restore)",
            backup.backup_id(),
            missing.len(),
            some_names(missing, 5)
        )),
        Replay::EndsAtGap { .. } if !to_end => None,
        Replay::EndsAtGap {
            timeline,
            first_gap,
            stops_at,
            timelines,
        } => Some(format!(
            "the archive has a gap after backup {}: timeline {timeline} misses {} segment(s) \
             ({}); postgres would end the recovery at the gap and leave out all WAL archived \
             after it. Restore a backup taken after the gap (--backup ID), or restore up to the \
             gap on purpose with a target before it (--target-lsn {stops_at} or an earlier \
             time){}",
            backup.backup_id(),
            first_gap.len(),
            some_names(first_gap, 5),
            if *timelines > 1 {
                format!(" ({timelines} timelines have gaps: `pgsteward wal check` lists them)")
            } else {
                String::new()
            }
        )),
    }
}

/// Ok when the archive holds what a replay from `backup` reads: its own WAL always, and with
/// `to_end` everything up to the end of the archive without a gap. A replay to the end lists
/// the whole archive; one to a target asks only for the directories of the backup's own WAL.
pub async fn check(
    wal: &WalArchive,
    backup: &BackupInfo,
    timeout: std::time::Duration,
    to_end: bool,
) -> Result<()> {
    let Some((begin, end, segment_bytes)) = backup_wal(backup) else {
        tracing::warn!(backup = %backup.backup_id(), "the backup names no first WAL segment: the archive's WAL is not checked for it");
        return Ok(());
    };
    if !to_end
        && end
            .as_ref()
            .is_some_and(|e| e.timeline() != begin.timeline())
    {
        tracing::debug!(backup = %backup.backup_id(), "the backup's WAL spans timelines: its own WAL is checked by the replay");
        return Ok(());
    }
    let archived: Vec<WalFile> = if to_end {
        wal.list(deadline_in(timeout))
            .await?
            .into_iter()
            .map(|(file, _)| file)
            .collect()
    } else {
        // The backup's own segments on its timeline: a backup does not span a promotion.
        let own_end = end.clone().unwrap_or_else(|| begin.clone());
        let wanted: Vec<WalFile> = segments_between(begin.clone(), &own_end, true, segment_bytes)
            .iter()
            .filter_map(|name| WalFile::parse(name).ok())
            .collect();
        wal.archived_among(&wanted, deadline_in(timeout))
            .await?
            .into_iter()
            .collect()
    };
    let replay = assess(&archived, backup);
    match replay.as_ref().and_then(|r| refusal(backup, r, to_end)) {
        Some(message) => bail!("{message}"),
        None => Ok(()),
    }
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
        assert!(missing_after_backup(&archived, &begin, None, 16 << 20)
            .0
            .is_empty());

        let mut with_gap = archived.clone();
        with_gap.extend(files(&["00000002000000000000000A"]));
        assert_eq!(
            missing_after_backup(&with_gap, &begin, None, 16 << 20).0,
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
        assert!(missing_after_backup(&split, &begin, None, 16 << 20)
            .0
            .is_empty());

        // The segments where timeline 2 begins are gone: missing on timeline 2.
        let late = files(&[
            "000000010000000000000004",
            "000000010000000000000005",
            "000000020000000000000008",
        ]);
        assert_eq!(
            missing_after_backup(&late, &begin, None, 16 << 20).0,
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
        let found = missing_after_backup(&hole, &begin, None, 16 << 20).0;
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

    fn backup(begin: &str, end: &str) -> BackupInfo {
        let mut info = BackupInfo::new("20261207T100000");
        for (key, value) in [("begin_wal", begin), ("end_wal", end)] {
            info.set(key, value).unwrap_or_else(|e| panic!("{e}"));
        }
        info
    }

    #[test]
    fn a_backup_lacking_its_own_wal_is_told_from_one_ending_at_a_gap() {
        let taken = backup("000000010000000000000004", "000000010000000000000006");
        // Whole: the last segment on the path is named.
        let whole = files(&[
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000007",
        ]);
        assert_eq!(
            assess(&whole, &taken),
            Some(Replay::Whole {
                last: Some("000000010000000000000007".to_owned())
            })
        );
        // Its first segment is gone: before, the walk started at the first archived one.
        let no_first = files(&["000000010000000000000005", "000000010000000000000006"]);
        assert_eq!(
            assess(&no_first, &taken),
            Some(Replay::LacksOwnWal {
                missing: vec!["000000010000000000000004".to_owned()]
            })
        );
        // Its last segment is not archived (nothing after it either).
        let no_last = files(&["000000010000000000000004", "000000010000000000000005"]);
        assert_eq!(
            assess(&no_last, &taken),
            Some(Replay::LacksOwnWal {
                missing: vec!["000000010000000000000006".to_owned()]
            })
        );
        assert!(assess(&[], &taken)
            .is_some_and(|r| matches!(r, Replay::LacksOwnWal { missing } if missing.len() == 3)));
        // A gap after its end: it restores, up to the gap.
        let gap = files(&[
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000008",
        ]);
        let replay = assess(&gap, &taken);
        assert_eq!(
            replay,
            Some(Replay::EndsAtGap {
                timeline: 1,
                first_gap: vec!["000000010000000000000007".to_owned()],
                stops_at: Lsn(0x700_0000),
                timelines: 1,
            })
        );
        let summary = replay.map(|r| r.summary()).unwrap_or_default();
        assert!(summary.contains("up to 0/7000000"), "{summary}");
        // A restore to a target does not mind the gap; one to the end does.
        let replay = assess(&gap, &taken).unwrap_or_else(|| panic!("no assessment"));
        assert!(refusal(&taken, &replay, false).is_none());
        assert!(refusal(&taken, &replay, true).is_some_and(|m| m.contains("has a gap")));
        let lacking = assess(&no_first, &taken).unwrap_or_else(|| panic!("no assessment"));
        assert!(refusal(&taken, &lacking, false).is_some_and(|m| m.contains("cannot be restored")));
        // A backup that records no last segment needs at least its first.
        let mut no_end = BackupInfo::new("20261207T100000");
        no_end
            .set("begin_wal", "000000010000000000000004")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            assess(&no_first, &no_end),
            Some(Replay::LacksOwnWal {
                missing: vec!["000000010000000000000004".to_owned()]
            })
        );
        // A backup naming no first segment cannot be assessed.
        assert_eq!(assess(&whole, &BackupInfo::new("20261207T100000")), None);
    }
}
