//! Timeline history files (`TTTTTTTT.history`), as postgres writes one at each promotion: the
//! timelines a timeline descends from and the WAL position where it forked off each. And the
//! two questions a replay asks of a history: on which timeline a WAL position lies (postgres's
//! `tliOfPointInHistory`), and from which timeline a segment is read (the newest timeline that
//! began at or before that segment, which is where postgres's startup process looks first).

use thiserror::Error;

use crate::lsn::{format_lsn, parse_lsn};

/// Where a timeline forked off its parent: WAL before `at` is the parent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fork {
    pub parent: u32,
    pub at: u64,
}

/// One timeline and its ancestry, oldest fork first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    timeline: u32,
    forks: Vec<Fork>,
}

/// Why a history file cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("the history file of timeline {timeline}, line {line}: {reason}")]
pub struct InvalidHistory {
    pub timeline: u32,
    pub line: usize,
    pub reason: String,
}

impl History {
    /// A timeline whose ancestry does not matter (a replay that starts on it and stays).
    pub fn without_forks(timeline: u32) -> Self {
        History {
            timeline,
            forks: Vec::new(),
        }
    }

    /// Parse the content of `timeline`'s history file: one `parent<TAB>X/Y<TAB>reason` line
    /// per fork, oldest first; blank lines and `#` comments are skipped, as postgres does.
    pub fn parse(timeline: u32, text: &str) -> Result<Self, InvalidHistory> {
        let mut forks: Vec<Fork> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let invalid = |reason: String| InvalidHistory {
                timeline,
                line: index + 1,
                reason,
            };
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split('\t');
            let parent = fields
                .next()
                .and_then(|f| f.trim().parse::<u32>().ok())
                .ok_or_else(|| invalid(format!("{line:?} does not start with a timeline id")))?;
            let at = fields
                .next()
                .and_then(|f| parse_lsn(f.trim()))
                .ok_or_else(|| invalid(format!("{line:?} has no X/Y WAL position")))?;
            if parent >= timeline {
                return Err(invalid(format!(
                    "timeline {parent} is not older than timeline {timeline}"
                )));
            }
            if let Some(previous) = forks.last() {
                if parent <= previous.parent || at < previous.at {
                    return Err(invalid(format!(
                        "timeline {parent} at {} does not follow timeline {} at {}",
                        format_lsn(at),
                        previous.parent,
                        format_lsn(previous.at)
                    )));
                }
            }
            forks.push(Fork { parent, at });
        }
        Ok(History { timeline, forks })
    }

    /// The timeline this history leads to.
    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    pub fn forks(&self) -> &[Fork] {
        &self.forks
    }

    /// The timeline `lsn` lies on in this history.
    pub fn timeline_of(&self, lsn: u64) -> u32 {
        self.forks
            .iter()
            .find(|fork| lsn < fork.at)
            .map_or(self.timeline, |fork| fork.parent)
    }

    /// Where `timeline` ends in this history: the position where its child forked off (None
    /// for the history's own timeline and for timelines not on it).
    pub fn end_of(&self, timeline: u32) -> Option<u64> {
        self.forks
            .iter()
            .find(|fork| fork.parent == timeline)
            .map(|fork| fork.at)
    }

    /// The timeline a replay reads segment number `segno` (`segment_bytes` each) from: the
    /// newest one that began in that segment or before it. A fork inside a segment puts the
    /// whole segment on the child, whose copy holds the parent's WAL up to the fork.
    pub fn timeline_of_segment(&self, segno: u64, segment_bytes: u64) -> u32 {
        let size = segment_bytes.max(1);
        let mut timeline = self.forks.first().map_or(self.timeline, |f| f.parent);
        for (index, fork) in self.forks.iter().enumerate() {
            if fork.at / size > segno {
                break;
            }
            timeline = self
                .forks
                .get(index + 1)
                .map_or(self.timeline, |next| next.parent);
        }
        timeline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 16 << 20;

    fn history(timeline: u32, text: &str) -> History {
        History::parse(timeline, text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_what_postgres_writes() {
        // Timeline 3: forked off 1 at 0/5A00028, then off 2 at 0/9000000.
        let h = history(
            3,
            "1\t0/5A00028\tno recovery target specified\n\n# a comment\n2\t0/9000000\tbefore 2026-12-07 10:00:00+00\n",
        );
        assert_eq!(
            h.forks(),
            &[
                Fork {
                    parent: 1,
                    at: 0x5A0_0028
                },
                Fork {
                    parent: 2,
                    at: 0x900_0000
                }
            ]
        );
        assert_eq!(h.timeline_of(0x5A0_0027), 1);
        assert_eq!(h.timeline_of(0x5A0_0028), 2);
        assert_eq!(h.timeline_of(0x8FF_FFFF), 2);
        assert_eq!(h.timeline_of(0x900_0000), 3);
        assert_eq!(h.end_of(1), Some(0x5A0_0028));
        assert_eq!(h.end_of(3), None);
        assert_eq!(h.end_of(7), None);
        // Segment 5 holds the fork: it is read from timeline 2 (whose copy has timeline 1's
        // WAL up to the fork); segment 9 begins exactly at the second fork.
        let read_from: Vec<u32> = (3..11).map(|s| h.timeline_of_segment(s, SEGMENT)).collect();
        assert_eq!(read_from, [1, 1, 2, 2, 2, 2, 3, 3]);
    }

    #[test]
    fn two_forks_in_one_segment_skip_the_middle_timeline() {
        let h = history(3, "1\t0/6000100\tx\n2\t0/6000200\ty\n");
        assert_eq!(h.timeline_of_segment(5, SEGMENT), 1);
        assert_eq!(h.timeline_of_segment(6, SEGMENT), 3);
        assert_eq!(History::without_forks(4).timeline_of_segment(6, SEGMENT), 4);
        assert_eq!(History::without_forks(4).timeline_of(0), 4);
    }

    #[test]
    fn refuses_what_postgres_refuses() {
        for (text, reason) in [
            ("1\n", "no X/Y"),
            ("x\t0/1\n", "timeline id"),
            ("1\t0/1G\n", "no X/Y"),
            ("3\t0/1\n", "not older"),
            ("2\t0/5\n1\t0/6\n", "does not follow"),
            ("1\t0/6\n2\t0/5\n", "does not follow"),
        ] {
            match History::parse(3, text) {
                Err(e) => assert!(e.to_string().contains(reason), "{text:?}: {e}"),
                Ok(h) => panic!("{text:?} accepted: {h:?}"),
            }
        }
    }
}
