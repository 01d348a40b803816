//! `bootstrap.method: recovery` and `bootstrap.recovery`: bootstrap an empty data directory
//! from a base backup in the catalog (latest, by id, or chosen for the target) and the
//! archived WAL, with an optional point-in-time target, target timeline and end action. The
//! source defaults to the instance's own `archive` destination and server name. Also
//! `archive.drill`, the schedule of restore drills.

use std::time::Duration;

use pgsteward_backup::restore::choose::BackupChoice;
use pgsteward_backup::restore::target::{
    Lsn, RecoveryTarget, Target, TargetAction, TargetTimeline,
};
use serde::{Deserialize, Serialize};

use super::Config;

pub use super::BootstrapMethod;

/// `bootstrap.recovery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    pub source: RecoverySource,
    pub target: RecoveryTargetConfig,
    /// `latest` (default), `current` or a timeline number.
    pub target_timeline: String,
    /// `promote` (default) or `standby`.
    pub action: String,
    /// Tablespace name → where to restore it (default: its location in the backup, which
    /// must then be empty or absent).
    pub tablespaces: std::collections::BTreeMap<String, std::path::PathBuf>,
    /// Backup files downloaded and extracted at once.
    pub parallel: usize,
    /// How long WAL replay may take before the bootstrap fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            source: RecoverySource::default(),
            target: RecoveryTargetConfig::default(),
            target_timeline: "latest".to_owned(),
            action: "promote".to_owned(),
            tablespaces: std::collections::BTreeMap::new(),
            parallel: 4,
            timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where the backups and WAL come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySource {
    /// Default: `archive.destination` (with `archive.s3` for the connection either way).
    pub destination: Option<String>,
    /// Default: `archive.server_name` (itself defaulting to instance_name).
    pub server_name: Option<String>,
    /// `latest` (default: the newest DONE backup that can reach the target) or a backup id.
    pub backup: Option<String>,
}

/// At most one of the fields (none: replay the whole archive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryTargetConfig {
    /// `YYYY-mm-dd HH:MM:SS[.ffffff][+HH:MM]` (UTC when no offset).
    pub time: Option<String>,
    pub lsn: Option<String>,
    #[serde(with = "super::optional_number")]
    pub xid: Option<u64>,
    /// A restore point name (`pg_create_restore_point`).
    pub name: Option<String>,
    /// Stop as soon as the backup is consistent.
    pub immediate: bool,
    /// Stop after (true, default) or just before the target.
    pub inclusive: bool,
}

impl Default for RecoveryTargetConfig {
    fn default() -> Self {
        RecoveryTargetConfig {
            time: None,
            lsn: None,
            xid: None,
            name: None,
            immediate: false,
            inclusive: true,
        }
    }
}

impl RecoveryTargetConfig {
    /// The target, or why the fields do not name one.
    pub fn target(&self) -> Result<Target, String> {
        let mut found = Vec::new();
        if let Some(time) = &self.time {
            found.push(Target::time(time)?);
        }
        if let Some(lsn) = &self.lsn {
            found.push(Target::Lsn(lsn.parse::<Lsn>()?));
        }
        if let Some(xid) = self.xid {
            found.push(Target::Xid(xid));
        }
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > 63 {
                return Err(format!("restore point name {name:?} must be 1-63 bytes"));
            }
            found.push(Target::Name(name.clone()));
        }
        if self.immediate {
            found.push(Target::Immediate);
        }
        match found.len() {
            0 => Ok(Target::EndOfArchive),
            1 => Ok(found.remove(0)),
            _ => Err("set at most one of time, lsn, xid, name, immediate".to_owned()),
        }
    }
}

impl RecoveryConfig {
    /// The whole recovery target.
    pub fn recovery_target(&self) -> Result<RecoveryTarget, String> {
        Ok(RecoveryTarget {
            target: self.target.target()?,
            inclusive: self.target.inclusive,
            timeline: self.target_timeline.parse::<TargetTimeline>()?,
            action: self.action.parse::<TargetAction>()?,
        })
    }

    /// The backup to start from.
    pub fn backup_choice(&self) -> Result<BackupChoice, String> {
        self.source
            .backup
            .as_deref()
            .unwrap_or("latest")
            .parse::<BackupChoice>()
    }

    /// Problems with this section (when the method is recovery), for `validate`.
    pub fn problems(&self, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = self.recovery_target() {
            out.push(format!("bootstrap.recovery: {e}"));
        }
        if let Err(e) = self.backup_choice() {
            out.push(format!("bootstrap.recovery.source.backup: {e}"));
        }
        if self.source.destination.is_none() && config.archive.destination.is_none() {
            out.push(
                "bootstrap.recovery.source.destination: required when archive.destination is not set"
                    .to_owned(),
            );
        }
        for (name, path) in &self.tablespaces {
            if !path.is_absolute() {
                out.push(format!(
                    "bootstrap.recovery.tablespaces.{name}: {} must be absolute",
                    path.display()
                ));
            }
        }
        if self.parallel == 0 {
            out.push("bootstrap.recovery.parallel: must be at least 1".to_owned());
        }
        out
    }
}

/// `archive.drill`: periodic restore drills of the latest backup.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillConfig {
    /// Run a drill this often (off when unset).
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Directory below which the drill's scratch data directory is made (default: the system
    /// temporary directory). Needs room for a full restore.
    pub scratch_dir: Option<std::path::PathBuf>,
    /// How long one drill may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

impl DrillConfig {
    /// Problems with `archive.drill`, for `validate`.
    pub fn problems(&self, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(interval) = self.interval {
            if interval < Duration::from_secs(1) {
                out.push("archive.drill.interval: must be at least 1s".to_owned());
            }
            if config.archive.destination.is_none() {
                out.push(
                    "archive.drill.interval: drills need archive.destination (the archive they restore)"
                        .to_owned(),
                );
            }
        }
        if let Some(dir) = &self.scratch_dir {
            if !dir.is_absolute() {
                out.push(format!(
                    "archive.drill.scratch_dir: {} must be absolute",
                    dir.display()
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_yaml() {
        let config: RecoveryConfig = serde_yaml::from_str(
            "source: {backup: 20261120T100001}\ntarget: {lsn: 0/5000000, inclusive: false}\ntarget_timeline: '2'\n",
        )
        .unwrap();
        let target = config.recovery_target().unwrap();
        assert_eq!(target.target, Target::Lsn("0/5000000".parse().unwrap()));
        assert!(!target.inclusive);
        assert_eq!(target.timeline, TargetTimeline::Id(2));
        assert_eq!(
            config.backup_choice().unwrap(),
            BackupChoice::Id("20261120T100001".into())
        );
        let two: RecoveryConfig =
            serde_yaml::from_str("target: {xid: 5, immediate: true}\n").unwrap();
        assert!(two.recovery_target().is_err());
        let bad: RecoveryConfig = serde_yaml::from_str("action: pause\n").unwrap();
        assert!(bad.recovery_target().is_err());
        let problems = RecoveryConfig::default().problems(&Config::default());
        assert!(
            problems.iter().any(|p| p.contains("source.destination")),
            "{problems:?}"
        );
    }
}
