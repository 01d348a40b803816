//! Before a replay: the archive must hold the WAL the replay reads. Postgres takes a missing
//! segment for the end of the archive: it ends the recovery there, promotes, and nothing says
//! that the WAL after the gap (archiving turned off for a while, a segment marked done by
//! hand, WAL deleted) was left out; and a backup whose own WAL (its first to its last segment)
//! is missing fails only after the whole base backup was downloaded. Both are found here first
//! and refused with what is missing and what to do, along the path postgres takes through the
//! timelines (`route`), as is a backup that is not on that path at all. `pgsteward wal check`
//! reports the same for every backup of the catalog.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use pgsteward_archive::timeline::History;
use pgsteward_archive::wal::deadline_in;
use pgsteward_archive::{WalArchive, WalFile, WalKind};
use pgsteward_backup::info::BackupInfo;
use pgsteward_backup::restore::target::{Lsn, TargetTimeline};

use super::route;

/// At most this many missing names are listed (a corrupt name cannot make a walk run away).
const MAX_NAMES: usize = 100_000;

/// The segments missing on the replay's path from the backup's first WAL (`begin`) to the last
/// archived segment on it, and at least to the backup's last WAL (`end`), by timeline (empty
/// when the path is whole), with the last archived segment on the path. The path follows
/// `history`: each segment is read from the newest timeline that began at or before it, so
/// what an old timeline holds after its fork (such as the WAL of a primary that went on after
/// a failover) is not on the path, and neither is a timeline the history does not lead to.
pub fn missing_after_backup(
    archived: &[WalFile],
    begin: &WalFile,
    end: Option<&WalFile>,
    history: &History,
    segment_bytes: u64,
) -> (Holes, Option<WalFile>) {
    let read_from = |segno: u64| history.timeline_of_segment(segno, segment_bytes);
    let Some(first) = begin.segno(segment_bytes) else {
        return (Vec::new(), None);
    };
    let on_path: BTreeSet<u64> = archived
        .iter()
        .filter(|f| f.kind() == WalKind::Segment)
        .filter_map(|f| {
            let segno = f.segno(segment_bytes)?;
            (segno >= first && read_from(segno) == f.timeline()).then_some(segno)
        })
        .collect();
    let mut missing: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut listed = 0usize;
    let mut note = |from: u64, to: u64| {
        for segno in from..to {
            if listed >= MAX_NAMES {
                return;
            }
            let timeline = read_from(segno);
            if let Some(file) = WalFile::segment(timeline, segno, segment_bytes) {
                missing
                    .entry(timeline)
                    .or_default()
                    .push(file.name().to_owned());
                listed += 1;
            }
        }
    };
    let mut expected = first;
    let mut last = None;
    for segno in on_path {
        note(expected, segno);
        expected = segno + 1;
        last = Some(segno);
    }
    // The backup's own WAL runs to its end, whatever the archive holds.
    if let Some(end) = end.and_then(|e| e.segno(segment_bytes)) {
        note(expected, end.saturating_add(1));
    }
    let last = last.and_then(|segno| WalFile::segment(read_from(segno), segno, segment_bytes));
    (missing.into_iter().collect(), last)
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
    /// The backup is not on the history of the replay's `timeline`: it was taken on
    /// `backup_timeline` after `timeline` forked off it (at `forked_at`), or on a timeline
    /// that history does not pass through (no `forked_at`). Postgres refuses to start such a
    /// replay ("requested timeline is not a child of this server's history").
    OffHistory {
        timeline: u32,
        backup_timeline: u32,
        forked_at: Option<Lsn>,
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

/// Walk the replay path from `backup` along `history` to the end of `archived` (None when the
/// backup names no first WAL segment).
fn walk(archived: &[WalFile], backup: &BackupInfo, history: &History) -> Option<Walk> {
    let (begin, end, segment_bytes) = backup_wal(backup)?;
    // Without a recorded last segment, at least its first must be there.
    let own_end = end.unwrap_or_else(|| begin.clone());
    let (missing, last) =
        missing_after_backup(archived, &begin, Some(&own_end), history, segment_bytes);
    Some(Walk {
        missing,
        last,
        own_end,
        segment_bytes,
    })
}

/// Whether `history` passes through the backup's timeline from its start to its end (None
/// when it does), as postgres checks the backup's checkpoint against the target timeline.
fn off_history(backup: &BackupInfo, history: &History) -> Option<Replay> {
    let (begin, end, segment_bytes) = backup_wal(backup)?;
    let backup_timeline = begin.timeline();
    let lsn = |text: Option<&str>| text.and_then(|t| t.parse::<Lsn>().ok()).map(|l| l.0);
    let start = lsn(backup.begin_lsn()).or_else(|| begin.start_lsn(segment_bytes))?;
    // The last byte the backup needs (its end position is just past it).
    let last = lsn(backup.end_lsn())
        .or_else(|| end.and_then(|e| e.start_lsn(segment_bytes)))
        .map(|l| l.saturating_sub(1).max(start));
    let on_it = |at: u64| history.timeline_of(at) == backup_timeline;
    if on_it(start) && last.is_none_or(on_it) {
        return None;
    }
    Some(Replay::OffHistory {
        timeline: history.timeline(),
        backup_timeline,
        forked_at: history.end_of(backup_timeline).map(Lsn),
    })
}

/// The segments a replay from `backup` along `history` to the end of `archived` would miss,
/// by timeline (empty when it would work; None when the backup names no first WAL segment or
/// is not on that history).
pub fn path_holes(archived: &[WalFile], backup: &BackupInfo, history: &History) -> Option<Holes> {
    if off_history(backup, history).is_some() {
        return None;
    }
    walk(archived, backup, history).map(|w| w.missing)
}

/// How a replay from `backup` along `history` to the end of `archived` would go (None when
/// the backup names no first WAL segment).
pub fn assess(archived: &[WalFile], backup: &BackupInfo, history: &History) -> Option<Replay> {
    if let Some(off) = off_history(backup, history) {
        return Some(off);
    }
    let Walk {
        missing,
        last,
        own_end,
        segment_bytes,
    } = walk(archived, backup, history)?;
    let own_end = own_end.segno(segment_bytes).unwrap_or(0);
    let own: Vec<String> = missing
        .iter()
        .flat_map(|(_, names)| names)
        .filter(|name| {
            WalFile::parse(name)
                .ok()
                .and_then(|f| f.segno(segment_bytes))
                .is_some_and(|segno| segno <= own_end)
        })
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

/// The first of `candidates` (best first) that is on the history of the timeline a replay to
/// `timeline` follows (None when none is): after a failover, backups the old primary took on
/// its timeline after the fork cannot reach the newest timeline, and are passed over, with a
/// warning saying how to restore them. A candidate naming no first WAL segment is not
/// judged here (taken as it is).
pub async fn first_on_history(
    wal: &WalArchive,
    candidates: &[BackupInfo],
    timeline: TargetTimeline,
    timeout: std::time::Duration,
) -> Result<Option<BackupInfo>> {
    let deadline = deadline_in(timeout);
    let mut histories: BTreeMap<u32, History> = BTreeMap::new();
    for backup in candidates {
        let Some(backup_timeline) = backup_timeline(backup) else {
            return Ok(Some(backup.clone()));
        };
        let history = match histories.entry(backup_timeline) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                slot.insert(route::resolve(wal, backup_timeline, timeline, None, deadline).await?)
            }
        };
        match off_history(backup, history) {
            None => return Ok(Some(backup.clone())),
            Some(Replay::OffHistory {
                timeline,
                backup_timeline,
                forked_at,
            }) => tracing::warn!(
                backup = %backup.backup_id(),
                "passing over backup {}: it cannot be restored to timeline {timeline} ({}); restore it with --backup {} --target-timeline current",
                backup.backup_id(),
                off_history_reason(timeline, backup_timeline, forked_at),
                backup.backup_id()
            ),
            Some(_) => {}
        }
    }
    Ok(None)
}

/// The finished backups of a catalog listing (oldest first, as listed).
pub fn finished_backups(
    entries: &[pgsteward_backup::catalog::CatalogEntry],
) -> impl DoubleEndedIterator<Item = &BackupInfo> {
    entries
        .iter()
        .filter_map(|entry| entry.info.as_ref().ok())
        .filter(|info| {
            matches!(
                info.status(),
                Ok(pgsteward_backup::info::BackupStatus::Done)
            )
        })
}

/// The timeline a backup starts on (its first WAL segment's).
pub fn backup_timeline(backup: &BackupInfo) -> Option<u32> {
    backup_wal(backup).map(|(begin, _, _)| begin.timeline())
}

/// For each of `timelines`, the history a replay from a backup on it to the newest timeline
/// follows, found in `archived` (the archive's listing) as postgres's `latest` finds it.
pub async fn latest_histories(
    wal: &WalArchive,
    timelines: BTreeSet<u32>,
    archived: &[WalFile],
    timeout: std::time::Duration,
) -> Result<BTreeMap<u32, History>> {
    let deadline = deadline_in(timeout);
    let mut histories = BTreeMap::new();
    for timeline in timelines {
        let history = route::resolve(
            wal,
            timeline,
            TargetTimeline::Latest,
            Some(archived),
            deadline,
        )
        .await?;
        histories.insert(timeline, history);
    }
    Ok(histories)
}

/// Timelines after the lowest one archived that have segments but no history file: a replay
/// following the newest timeline never reaches them (postgres looks for a newer timeline by
/// its history file).
pub fn timelines_without_history(files: &[WalFile]) -> Vec<u32> {
    let histories: BTreeSet<u32> = files
        .iter()
        .filter(|f| f.kind() == WalKind::TimelineHistory)
        .map(WalFile::timeline)
        .collect();
    let with_segments: BTreeSet<u32> = files
        .iter()
        .filter(|f| f.kind() == WalKind::Segment)
        .map(WalFile::timeline)
        .collect();
    let lowest = with_segments.first().copied();
    with_segments
        .into_iter()
        .filter(|t| Some(*t) != lowest && !histories.contains(t))
        .collect()
}

/// The first `count` names, and "..." when there are more.
pub fn some_names(names: &[String], count: usize) -> String {
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
            Replay::OffHistory {
                timeline,
                backup_timeline,
                forked_at,
            } => format!(
                "cannot be restored to timeline {timeline}, the newest: {}; it restores with \
                 --target-timeline current",
                off_history_reason(*timeline, *backup_timeline, *forked_at)
            ),
        }
    }
}

/// Why a backup on `backup_timeline` is not on `timeline`'s history.
fn off_history_reason(timeline: u32, backup_timeline: u32, forked_at: Option<Lsn>) -> String {
    match forked_at {
        Some(at) => format!(
            "it was taken on timeline {backup_timeline} after {at}, where timeline {timeline}'s \
             history leaves timeline {backup_timeline}"
        ),
        None => format!(
            "timeline {timeline}'s history does not pass through timeline {backup_timeline}"
        ),
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
        Replay::OffHistory {
            timeline,
            backup_timeline,
            forked_at,
        } => Some(format!(
            "backup {} cannot be restored to timeline {timeline}: {}. Postgres would refuse it \
             (requested timeline {timeline} is not a child of this server's history) after the \
             whole base backup is downloaded. Restore it with --target-timeline current to \
             stay on timeline {backup_timeline}, or restore a backup on timeline {timeline}'s \
             history (--backup ID; `pgsteward wal check` shows which ones restore)",
            backup.backup_id(),
            off_history_reason(*timeline, *backup_timeline, *forked_at)
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

/// Ok when the archive holds what a replay from `backup` to `timeline` reads: its own WAL
/// always, and with `to_end` everything up to the end of the archive without a gap, along the
/// history of the timeline the replay follows (which the backup must be on). A replay to the
/// end lists the whole archive; one to a target asks only for the directories of the
/// backup's own WAL (and for history files when it follows another timeline).
pub async fn check(
    wal: &WalArchive,
    backup: &BackupInfo,
    timeout: std::time::Duration,
    to_end: bool,
    timeline: TargetTimeline,
) -> Result<()> {
    let Some((begin, end, segment_bytes)) = backup_wal(backup) else {
        tracing::warn!(backup = %backup.backup_id(), "the backup names no first WAL segment: the archive's WAL is not checked for it");
        return Ok(());
    };
    let deadline = deadline_in(timeout);
    let listed: Option<Vec<WalFile>> = if to_end {
        Some(
            wal.list(deadline)
                .await?
                .into_iter()
                .map(|(file, _)| file)
                .collect(),
        )
    } else {
        None
    };
    let history =
        route::resolve(wal, begin.timeline(), timeline, listed.as_deref(), deadline).await?;
    let archived = match listed {
        Some(files) => files,
        None => {
            // The backup's own segments, each on the timeline the replay reads it from.
            let own_end = end.unwrap_or_else(|| begin.clone());
            let (Some(first), Some(last)) =
                (begin.segno(segment_bytes), own_end.segno(segment_bytes))
            else {
                return Ok(());
            };
            let wanted: Vec<WalFile> = (first..=last)
                .take(MAX_NAMES)
                .filter_map(|segno| {
                    WalFile::segment(
                        history.timeline_of_segment(segno, segment_bytes),
                        segno,
                        segment_bytes,
                    )
                })
                .collect();
            wal.archived_among(&wanted, deadline)
                .await?
                .into_iter()
                .collect()
        }
    };
    let replay = assess(&archived, backup, &history);
    match replay.as_ref().and_then(|r| refusal(backup, r, to_end)) {
        Some(message) => bail!("{message}"),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "wal_path_tests.rs"]
mod tests;
