//! Tests of `wal_path`: the replay path along a timeline history, what a backup needs, the
//! refusals.

use super::*;

const SEGMENT: u64 = 16 << 20;

fn history(timeline: u32, text: &str) -> History {
    History::parse(timeline, text).unwrap_or_else(|e| panic!("{e}"))
}

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
    // Timeline 2 forked off timeline 1 in segment 6.
    let two = history(2, "1\t0/60000A0\tno recovery target specified\n");
    assert!(missing_after_backup(&archived, &begin, None, &two, SEGMENT)
        .0
        .is_empty());

    let mut with_gap = archived.clone();
    with_gap.extend(files(&["00000002000000000000000A"]));
    assert_eq!(
        missing_after_backup(&with_gap, &begin, None, &two, SEGMENT).0,
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
    assert!(missing_after_backup(&split, &begin, None, &two, SEGMENT)
        .0
        .is_empty());

    // The segments where timeline 2 begins are gone: missing on timeline 2.
    let late = files(&[
        "000000010000000000000004",
        "000000010000000000000005",
        "000000020000000000000008",
    ]);
    assert_eq!(
        missing_after_backup(&late, &begin, None, &two, SEGMENT).0,
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
    let found = missing_after_backup(&hole, &begin, None, &History::without_forks(1), SEGMENT).0;
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
    let one = History::without_forks(1);
    let taken = backup("000000010000000000000004", "000000010000000000000006");
    // Whole: the last segment on the path is named.
    let whole = files(&[
        "000000010000000000000004",
        "000000010000000000000005",
        "000000010000000000000006",
        "000000010000000000000007",
    ]);
    assert_eq!(
        assess(&whole, &taken, &one),
        Some(Replay::Whole {
            last: Some("000000010000000000000007".to_owned())
        })
    );
    // Its first segment is gone: before, the walk started at the first archived one.
    let no_first = files(&["000000010000000000000005", "000000010000000000000006"]);
    assert_eq!(
        assess(&no_first, &taken, &one),
        Some(Replay::LacksOwnWal {
            missing: vec!["000000010000000000000004".to_owned()]
        })
    );
    // Its last segment is not archived (nothing after it either).
    let no_last = files(&["000000010000000000000004", "000000010000000000000005"]);
    assert_eq!(
        assess(&no_last, &taken, &one),
        Some(Replay::LacksOwnWal {
            missing: vec!["000000010000000000000006".to_owned()]
        })
    );
    assert!(assess(&[], &taken, &one)
        .is_some_and(|r| matches!(r, Replay::LacksOwnWal { missing } if missing.len() == 3)));
    // A gap after its end: it restores, up to the gap.
    let gap = files(&[
        "000000010000000000000004",
        "000000010000000000000005",
        "000000010000000000000006",
        "000000010000000000000008",
    ]);
    let replay = assess(&gap, &taken, &one);
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
    let replay = assess(&gap, &taken, &one).unwrap_or_else(|| panic!("no assessment"));
    assert!(refusal(&taken, &replay, false).is_none());
    assert!(refusal(&taken, &replay, true).is_some_and(|m| m.contains("has a gap")));
    let lacking = assess(&no_first, &taken, &one).unwrap_or_else(|| panic!("no assessment"));
    assert!(refusal(&taken, &lacking, false).is_some_and(|m| m.contains("cannot be restored")));
    // A backup that records no last segment needs at least its first.
    let mut no_end = BackupInfo::new("20261207T100000");
    no_end
        .set("begin_wal", "000000010000000000000004")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        assess(&no_first, &no_end, &one),
        Some(Replay::LacksOwnWal {
            missing: vec!["000000010000000000000004".to_owned()]
        })
    );
    // A backup naming no first segment cannot be assessed.
    assert_eq!(
        assess(&whole, &BackupInfo::new("20261207T100000"), &one),
        None
    );
}

#[test]
fn the_path_follows_the_newest_timelines_history() {
    let begin = WalFile::parse("000000010000000000000004").unwrap_or_else(|e| panic!("{e}"));
    // Timeline 2 forked off 1 at segment 6, timeline 3 off 1 again at segment 9 (a second
    // restore of an older point); timeline 1 went on, and lost its segment 7.
    let archived = files(&[
        "000000010000000000000004",
        "000000010000000000000005",
        "000000010000000000000006",
        "000000010000000000000008",
        "000000010000000000000009",
        "00000001000000000000000A",
        "00000002.history",
        "000000020000000000000006",
        "000000020000000000000007",
        "000000020000000000000008",
        "00000003.history",
        "000000030000000000000009",
        "00000003000000000000000A",
    ]);
    // Timeline 3 reads 4-8 from timeline 1 (not 6-8 from timeline 2): 7 is missing.
    let three = history(3, "1\t0/9000000\tbefore 2026-12-07 10:00:00+00\n");
    let (missing, last) = missing_after_backup(&archived, &begin, None, &three, SEGMENT);
    assert_eq!(
        missing,
        vec![(1, vec!["000000010000000000000007".to_owned()])]
    );
    assert_eq!(
        last.map(|f| f.name().to_owned()),
        Some("00000003000000000000000A".to_owned())
    );
    // Timeline 2's path is whole: 6-8 are its own.
    let two = history(2, "1\t0/6000000\tno recovery target specified\n");
    let (missing, last) = missing_after_backup(&archived, &begin, None, &two, SEGMENT);
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(
        last.map(|f| f.name().to_owned()),
        Some("000000020000000000000008".to_owned())
    );
    // Without a history file for timeline 2, postgres never reaches it: timeline 1 alone,
    // whose hole at 7 then counts.
    let (missing, _) =
        missing_after_backup(&archived, &begin, None, &History::without_forks(1), SEGMENT);
    assert_eq!(
        missing,
        vec![(1, vec!["000000010000000000000007".to_owned()])]
    );
}

#[test]
fn a_backup_off_the_followed_history_is_refused() {
    let two = history(2, "1\t0/6000000\tno recovery target specified\n");
    let archived = files(&[
        "000000010000000000000004",
        "000000010000000000000005",
        "000000010000000000000006",
        "000000010000000000000007",
        "000000010000000000000008",
        "000000020000000000000006",
    ]);
    // Taken on timeline 1 after timeline 2 forked off it (the old primary went on).
    let late = backup("000000010000000000000007", "000000010000000000000008");
    let replay = assess(&archived, &late, &two);
    assert_eq!(
        replay,
        Some(Replay::OffHistory {
            timeline: 2,
            backup_timeline: 1,
            forked_at: Some(Lsn(0x600_0000)),
        })
    );
    let replay = replay.unwrap_or_else(|| panic!("no assessment"));
    assert!(replay.summary().contains("--target-timeline current"));
    // Refused for a target as well: postgres refuses the timeline, not the target.
    let message = refusal(&late, &replay, false).unwrap_or_default();
    assert!(
        message.contains("cannot be restored to timeline 2") && message.contains("after 0/6000000"),
        "{message}"
    );
    assert_eq!(path_holes(&archived, &late, &two), None);
    // Started before the fork, ended after it: its end is not on timeline 2's history.
    let mut across = backup("000000010000000000000005", "000000010000000000000006");
    across
        .set("end_xlog", "0/6000100")
        .unwrap_or_else(|e| panic!("{e}"));
    across
        .set("begin_xlog", "0/5000028")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        assess(&archived, &across, &two),
        Some(Replay::OffHistory { .. })
    ));
    // Ended exactly at the fork: on the history, and whole along it.
    across
        .set("end_xlog", "0/6000000")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        assess(&archived, &across, &two),
        Some(Replay::Whole {
            last: Some("000000020000000000000006".to_owned())
        })
    );
    // On its own timeline it restores.
    assert!(matches!(
        assess(&archived, &late, &History::without_forks(1)),
        Some(Replay::Whole { .. })
    ));
    // A timeline whose history does not pass through the backup's.
    let on_three = backup("000000030000000000000009", "000000030000000000000009");
    assert_eq!(
        assess(&archived, &on_three, &two),
        Some(Replay::OffHistory {
            timeline: 2,
            backup_timeline: 3,
            forked_at: None,
        })
    );
}

#[test]
fn tells_timelines_whose_history_file_is_missing() {
    let names = files(&[
        "000000020000000000000001",
        "000000030000000000000004",
        "00000004.history",
        "000000040000000000000006",
        "000000050000000000000007",
    ]);
    // The lowest (an archive that begins on timeline 2) needs none.
    assert_eq!(timelines_without_history(&names), vec![3, 5]);
    // A history file alone (a promotion with no segment yet) is no timeline to reach.
    assert!(timelines_without_history(&files(&["00000002.history"])).is_empty());
}
