//! The retention report: each backup's retention status under a policy (barman's
//! `RetentionPolicy.report()`), from the facts of each `backup.info` and its keep annotation.
//!
//! barman's rules, restated: only DONE backups count; the others are `-`. Backups are
//! walked newest first (by id). REDUNDANCY n (raised to the minimum redundancy) keeps the
//! newest n DONE backups VALID, counting kept ones too; older ones are OBSOLETE. A RECOVERY
//! WINDOW keeps every DONE backup newer than the first one that ended before `now - window`,
//! that one included; older ones are OBSOLETE, except that the first `minimum_redundancy`
//! DONE backups are never obsolete (`OBSOLETE*`). A keep annotation (`standalone` →
//! KEEP:STANDALONE, any other non-empty value → KEEP:FULL) replaces the status of a DONE
//! backup. Incremental backups (a `parent_backup_id`) get no status of their own.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};

use crate::info::{BackupInfo, BackupStatus, InfoError};
use crate::retention::policy::RetentionPolicy;

/// A backup's status under a retention policy, spelled as barman prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetentionStatus {
    Obsolete,
    Valid,
    /// Outside the window but kept for the minimum redundancy (`OBSOLETE*`).
    PotentiallyObsolete,
    KeepFull,
    KeepStandalone,
    /// Not a DONE backup (`-`).
    None,
}

impl RetentionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionStatus::Obsolete => "OBSOLETE",
            RetentionStatus::Valid => "VALID",
            RetentionStatus::PotentiallyObsolete => "OBSOLETE*",
            RetentionStatus::KeepFull => "KEEP:FULL",
            RetentionStatus::KeepStandalone => "KEEP:STANDALONE",
            RetentionStatus::None => "-",
        }
    }
}

/// A keep annotation's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepTarget {
    Full,
    Standalone,
}

/// The first line of a keep annotation (as barman reads it, newline included) → its target.
/// An empty annotation keeps nothing for retention (though it still blocks a delete by id).
pub fn keep_target(annotation: Option<&str>) -> Option<KeepTarget> {
    match annotation {
        None | Some("") => None,
        Some("standalone") => Some(KeepTarget::Standalone),
        Some(_) => Some(KeepTarget::Full),
    }
}

/// The `error` of a backup whose deletion pgsteward started (it is marked FAILED first, so
/// that nothing restores from a backup whose files are going); the next retention run
/// finishes such deletions.
pub const DELETION_MARKER: &str = "deletion by pgsteward in progress";

/// What retention needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub backup_id: String,
    pub status: BackupStatus,
    pub timeline: Option<u32>,
    pub begin_wal: Option<String>,
    pub end_wal: Option<String>,
    pub end_time: Option<DateTime<FixedOffset>>,
    /// Tablespace oids in `backup.info` order.
    pub tablespace_oids: Vec<u64>,
    /// Has a `parent_backup_id` (barman's incremental backups; barman-cloud makes none).
    pub incremental: bool,
    /// Uses cloud snapshots (`snapshots_info`), which pgsteward cannot delete.
    pub snapshot: bool,
    /// FAILED with [`DELETION_MARKER`]: an interrupted deletion.
    pub deleting: bool,
}

impl BackupSummary {
    pub fn from_info(info: &BackupInfo) -> Result<Self, InfoError> {
        Ok(BackupSummary {
            backup_id: info.backup_id().to_owned(),
            status: info.status()?,
            timeline: info.timeline()?,
            begin_wal: info.begin_wal().map(str::to_owned),
            end_wal: info.end_wal().map(str::to_owned),
            end_time: info.end_time()?,
            tablespace_oids: info.tablespaces()?.iter().map(|t| t.oid).collect(),
            incremental: info.get("parent_backup_id").is_some(),
            snapshot: info.get("snapshots_info").is_some(),
            deleting: info.status()? == BackupStatus::Failed
                && info.error() == Some(DELETION_MARKER),
        })
    }
}

/// Why a report could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("backup {0} is DONE but has no end_time; cannot place it in a recovery window")]
    NoEndTime(String),
}

/// Each backup's retention status (ids of `backups` as keys; incremental ones left out).
/// `keep` maps backup ids to their keep annotation's first line.
pub fn report(
    policy: &RetentionPolicy,
    backups: &BTreeMap<String, BackupSummary>,
    keep: &BTreeMap<String, String>,
    now: DateTime<Utc>,
    minimum_redundancy: u32,
) -> Result<BTreeMap<String, RetentionStatus>, ReportError> {
    let keep_status = |id: &str| match keep_target(keep.get(id).map(String::as_str)) {
        Some(KeepTarget::Standalone) => Some(RetentionStatus::KeepStandalone),
        Some(KeepTarget::Full) => Some(RetentionStatus::KeepFull),
        None => None,
    };
    let mut out = BTreeMap::new();
    match policy {
        RetentionPolicy::Redundancy(value) => {
            let redundancy = (*value).max(minimum_redundancy);
            let mut seen = 0u32;
            for (id, backup) in backups.iter().rev() {
                if backup.incremental {
                    continue;
                }
                let status = if backup.status == BackupStatus::Done {
                    let status = keep_status(id).unwrap_or(if seen < redundancy {
                        RetentionStatus::Valid
                    } else {
                        RetentionStatus::Obsolete
                    });
                    seen += 1;
                    status
                } else {
                    RetentionStatus::None
                };
                out.insert(id.clone(), status);
            }
        }
        RetentionPolicy::RecoveryWindow { .. } => {
            let window = policy.window().unwrap_or_default();
            let point_of_recoverability = now - window;
            let mut found = false;
            let mut valid = 0u32;
            for (id, backup) in backups.iter().rev() {
                if backup.incremental {
                    continue;
                }
                if backup.status != BackupStatus::Done {
                    out.insert(id.clone(), RetentionStatus::None);
                    continue;
                }
                let keep = keep_status(id);
                let status = if found {
                    if valid < minimum_redundancy {
                        valid += 1;
                        keep.unwrap_or(RetentionStatus::PotentiallyObsolete)
                    } else {
                        keep.unwrap_or(RetentionStatus::Obsolete)
                    }
                } else {
                    valid += 1;
                    let end = backup
                        .end_time
                        .ok_or_else(|| ReportError::NoEndTime(id.clone()))?;
                    if end < point_of_recoverability {
                        found = true;
                    }
                    keep.unwrap_or(RetentionStatus::Valid)
                };
                out.insert(id.clone(), status);
            }
        }
    }
    Ok(out)
}
