//! Recovery targets: what point-in-time recovery stops at (time, LSN, xid, restore-point name,
//! immediate, or the end of the archive), the target timeline and the action at the target,
//! their checks against the chosen backup, and the postgres parameters they become
//! (`recovery_target_*`, `recovery_target_timeline`, `recovery_target_action`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset};

use crate::info::{format_time, parse_time, BackupInfo};

/// A WAL position (`X/Y` in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        pgsteward_archive::lsn::parse_lsn(text)
            .map(Lsn)
            .ok_or_else(|| format!("LSN {text:?} is not X/Y (hex, 8 digits at most each)"))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&pgsteward_archive::lsn::format_lsn(self.0))
    }
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// Replay every archived WAL file (no `recovery_target_*`).
    #[default]
    EndOfArchive,
    Time(DateTime<FixedOffset>),
    Lsn(Lsn),
    Xid(u64),
    /// A restore point created with `pg_create_restore_point(name)`.
    Name(String),
    /// The end of the backup: the earliest consistent point.
    Immediate,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::EndOfArchive => f.write_str("the end of the archive"),
            Target::Time(time) => write!(f, "time {}", format_time(time)),
            Target::Lsn(lsn) => write!(f, "LSN {lsn}"),
            Target::Xid(xid) => write!(f, "xid {xid}"),
            Target::Name(name) => write!(f, "restore point {name:?}"),
            Target::Immediate => f.write_str("immediate (the end of the backup)"),
        }
    }
}

impl Target {
    /// Parse the time spellings barman and postgres accept (offset optional, UTC when absent).
    pub fn time(text: &str) -> Result<Target, String> {
        parse_time(text).map(Target::Time).ok_or_else(|| {
            format!("target time {text:?} is not YYYY-mm-dd HH:MM:SS[.ffffff][+HH:MM]")
        })
    }
}

/// `recovery_target_timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetTimeline {
    /// The newest timeline found in the archive (postgres's default).
    #[default]
    Latest,
    /// The backup's own timeline.
    Current,
    Id(u32),
}

impl FromStr for TargetTimeline {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "latest" => Ok(TargetTimeline::Latest),
            "current" => Ok(TargetTimeline::Current),
            other => other
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(TargetTimeline::Id)
                .ok_or_else(|| {
                    format!("target timeline {text:?} is not latest, current or a number > 0")
                }),
        }
    }
}

/// What the restored instance does at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetAction {
    /// End recovery and open read-write on a new timeline.
    #[default]
    Promote,
    /// Stay a standby (standby.signal) that keeps following the archive.
    Standby,
}

impl FromStr for TargetAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "promote" => Ok(TargetAction::Promote),
            "standby" => Ok(TargetAction::Standby),
            other => Err(format!("target action {other:?} is not promote or standby")),
        }
    }
}

/// The whole recovery target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryTarget {
    pub target: Target,
    /// `recovery_target_inclusive` (postgres's default: true).
    pub inclusive: bool,
    pub timeline: TargetTimeline,
    pub action: TargetAction,
}

impl RecoveryTarget {
    /// Replay the whole archive, promote.
    pub fn end_of_archive() -> Self {
        RecoveryTarget {
            inclusive: true,
            ..RecoveryTarget::default()
        }
    }

    /// The postgres parameters that express this target (no restore_command).
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match &self.target {
            Target::EndOfArchive => {}
            Target::Time(time) => out.push(("recovery_target_time", format_time(time))),
            Target::Lsn(lsn) => out.push(("recovery_target_lsn", lsn.to_string())),
            Target::Xid(xid) => out.push(("recovery_target_xid", xid.to_string())),
            Target::Name(name) => out.push(("recovery_target_name", name.clone())),
            Target::Immediate => out.push(("recovery_target", "immediate".to_owned())),
        }
        let has_target = self.target != Target::EndOfArchive;
        if has_target && !self.inclusive && !matches!(self.target, Target::Immediate) {
            out.push(("recovery_target_inclusive", "off".to_owned()));
        }
        out.push((
            "recovery_target_timeline",
            match self.timeline {
                TargetTimeline::Latest => "latest".to_owned(),
                TargetTimeline::Current => "current".to_owned(),
                TargetTimeline::Id(n) => n.to_string(),
            },
        ));
        if has_target && self.action == TargetAction::Promote {
            out.push(("recovery_target_action", "promote".to_owned()));
        }
        out
    }

    /// The signal file recovery needs in PGDATA.
    pub fn signal_file(&self) -> &'static str {
        match self.action {
            TargetAction::Promote => "recovery.signal",
            TargetAction::Standby => "standby.signal",
        }
    }

    /// Check the target against the chosen backup: a time or LSN before the backup's end can
    /// never be reached from it, and a numeric timeline must be the backup's or a later one.
    pub fn check_against(&self, backup: &BackupInfo) -> Result<(), String> {
        let id = backup.backup_id();
        match &self.target {
            Target::Time(time) => {
                let end = backup
                    .end_time()
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("backup {id} has no end_time"))?;
                if *time < end {
                    return Err(format!(
                        "target time {} is before the end of backup {id} ({}): recovery from it \
                         cannot stop there; choose an older backup or a later target",
                        format_time(time),
                        format_time(&end)
                    ));
                }
            }
            Target::Lsn(lsn) => {
                let end: Lsn = backup
                    .end_lsn()
                    .ok_or_else(|| format!("backup {id} has no end_xlog"))?
                    .parse()?;
                if *lsn < end {
                    return Err(format!(
                        "target LSN {lsn} is before the end of backup {id} ({end}): recovery \
                         from it cannot stop there; choose an older backup or a later target"
                    ));
                }
            }
            _ => {}
        }
        if let TargetTimeline::Id(tli) = self.timeline {
            if let Some(backup_tli) = backup.timeline().map_err(|e| e.to_string())? {
                if tli < backup_tli {
                    return Err(format!(
                        "target timeline {tli} is older than backup {id}'s timeline {backup_tli}"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::BackupStatus;

    #[test]
    fn lsns_parse_and_print() {
        let lsn: Lsn = "1/4000028".parse().unwrap();
        assert_eq!(lsn.0, 0x1_0400_0028);
        assert_eq!(lsn.to_string(), "1/4000028");
        for bad in ["", "12", "x/1", "1/", "123456789/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters_for_each_target() {
        let mut target = RecoveryTarget::end_of_archive();
        assert_eq!(
            target.parameters(),
            [("recovery_target_timeline", "latest".to_owned())]
        );
        target.target = Target::time("2026-11-20 10:00:05.5+01:00").unwrap();
        target.inclusive = false;
        assert_eq!(
            target.parameters(),
            [
                (
                    "recovery_target_time",
                    "2026-11-20 10:00:05.500000+01:00".to_owned()
                ),
                ("recovery_target_inclusive", "off".to_owned()),
                ("recovery_target_timeline", "latest".to_owned()),
                ("recovery_target_action", "promote".to_owned()),
            ]
        );
        target.target = Target::Immediate;
        target.action = TargetAction::Standby;
        target.timeline = TargetTimeline::Id(3);
        assert_eq!(
            target.parameters(),
            [
                ("recovery_target", "immediate".to_owned()),
                ("recovery_target_timeline", "3".to_owned()),
            ]
        );
        assert_eq!(target.signal_file(), "standby.signal");
    }

    #[test]
    fn targets_before_the_backup_end_are_refused() {
        let mut info = BackupInfo::new("20261120T100001");
        info.set_status(BackupStatus::Done);
        info.set("end_time", "2026-11-20 10:00:05+00:00").unwrap();
        info.set("end_xlog", "0/4000138").unwrap();
        info.set("timeline", "2").unwrap();
        let mut target = RecoveryTarget::end_of_archive();
        target.target = Target::time("2026-11-20 10:00:04").unwrap();
        let err = target.check_against(&info).unwrap_err();
        assert!(err.contains("before the end of backup"), "{err}");
        target.target = Target::time("2026-11-20 10:00:05").unwrap();
        target.check_against(&info).unwrap();
        target.target = Target::Lsn("0/4000100".parse().unwrap());
        assert!(target.check_against(&info).is_err());
        target.target = Target::Lsn("0/5000000".parse().unwrap());
        target.check_against(&info).unwrap();
        target.timeline = TargetTimeline::Id(1);
        assert!(target.check_against(&info).is_err());
    }
}
