//! Which backup a restore starts from, with barman's rules: only DONE backups; `latest` is the
//! newest; for a time target the newest whose `end_time` is not after the target, for an LSN
//! target the newest whose `end_xlog` is not after it; a numeric target timeline keeps only
//! backups of that timeline or an earlier one (the restore then takes the newest on its
//! history). A backup named by id must exist and be DONE.

use crate::catalog::{Catalog, CatalogError};
use crate::info::{BackupInfo, BackupStatus};
use crate::restore::target::{Lsn, RecoveryTarget, Target, TargetTimeline};

/// The backup the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackupChoice {
    /// The newest DONE backup that can reach the target.
    #[default]
    Latest,
    Id(String),
}

impl std::str::FromStr for BackupChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "" | "latest" => Ok(BackupChoice::Latest),
            id => {
                crate::catalog::check_backup_id(id).map_err(|e| e.to_string())?;
                Ok(BackupChoice::Id(id.to_owned()))
            }
        }
    }
}

/// Why no backup could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("backup {0} does not exist in {1}")]
    NotFound(String, String),
    #[error("backup {id} is {status}, not DONE: it cannot be restored")]
    NotDone { id: String, status: String },
    #[error("no DONE backup in {where_} can reach the target ({detail})")]
    NoneSuitable { where_: String, detail: String },
}

fn is_done(info: &BackupInfo) -> bool {
    matches!(info.status(), Ok(BackupStatus::Done))
}

/// Pick among `backups` (any order) for `target`; pure, for tests.
pub fn pick<'a>(backups: &'a [BackupInfo], target: &RecoveryTarget) -> Option<&'a BackupInfo> {
    suitable(backups, target).into_iter().next()
}

/// The DONE backups among `backups` that can reach `target`, newest first.
fn suitable<'a>(backups: &'a [BackupInfo], target: &RecoveryTarget) -> Vec<&'a BackupInfo> {
    let mut done: Vec<&BackupInfo> = backups.iter().filter(|b| is_done(b)).collect();
    done.sort_by(|a, b| b.backup_id().cmp(a.backup_id()));
    done.retain(|backup| {
        if let TargetTimeline::Id(tli) = target.timeline {
            // A backup on a later timeline is never on this one's history; one on an earlier
            // timeline may be (whether it is, the archive's history files say: the caller).
            if backup.timeline().ok().flatten().is_none_or(|t| t > tli) {
                return false;
            }
        }
        match &target.target {
            Target::Time(time) => backup
                .end_time()
                .ok()
                .flatten()
                .is_some_and(|end| end <= *time),
            Target::Lsn(lsn) => backup
                .end_lsn()
                .and_then(|end| end.parse::<Lsn>().ok())
                .is_some_and(|end| end <= *lsn),
            _ => true,
        }
    });
    done
}

/// Choose from the catalog: the backup asked for, or for `Latest` every DONE backup that can
/// reach the target, newest first (never empty: none is an error). The caller takes the
/// first, or the first whose WAL leads to the target's timeline.
pub async fn choose(
    catalog: &Catalog,
    choice: &BackupChoice,
    target: &RecoveryTarget,
) -> Result<Vec<BackupInfo>, ChooseError> {
    let where_ = format!("{}/{}", catalog.store().describe(), catalog.base_prefix());
    match choice {
        BackupChoice::Id(id) => {
            let info = catalog
                .read(id)
                .await?
                .ok_or_else(|| ChooseError::NotFound(id.clone(), where_.clone()))?;
            match info.status() {
                Ok(BackupStatus::Done) => Ok(vec![info]),
                Ok(status) => Err(ChooseError::NotDone {
                    id: id.clone(),
                    status: status.as_str().to_owned(),
                }),
                Err(e) => Err(ChooseError::NotDone {
                    id: id.clone(),
                    status: e.to_string(),
                }),
            }
        }
        BackupChoice::Latest => {
            let mut infos = Vec::new();
            for entry in catalog.list().await? {
                match entry.info {
                    Ok(info) => infos.push(info),
                    Err(e) => {
                        tracing::warn!(backup = %entry.backup_id, error = %e, "skipping an unreadable backup");
                    }
                }
            }
            let done = infos.iter().filter(|b| is_done(b)).count();
            let suitable: Vec<BackupInfo> = suitable(&infos, target).into_iter().cloned().collect();
            if !suitable.is_empty() {
                return Ok(suitable);
            }
            Err(ChooseError::NoneSuitable {
                where_,
                detail: match &target.target {
                    _ if done == 0 => "the catalog has no DONE backup".to_owned(),
                    Target::Time(_) | Target::Lsn(_) => format!(
                        "all {done} DONE backups end after the target, or are on another timeline"
                    ),
                    _ => format!(
                        "none of the {done} DONE backups is on the target timeline or an earlier one"
                    ),
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, status: BackupStatus, end: &str, end_lsn: &str, tli: u32) -> BackupInfo {
        let mut info = BackupInfo::new(id);
        info.set_status(status);
        info.set("end_time", end).unwrap();
        info.set("end_xlog", end_lsn).unwrap();
        info.set("timeline", tli.to_string()).unwrap();
        info
    }

    #[test]
    fn picks_like_barman() {
        let backups = vec![
            backup(
                "20261120T100000",
                BackupStatus::Done,
                "2026-11-20 10:00:10+00:00",
                "0/3000100",
                1,
            ),
            backup(
                "20261121T100000",
                BackupStatus::Done,
                "2026-11-21 10:00:10+00:00",
                "0/5000100",
                1,
            ),
            backup(
                "20261122T100000",
                BackupStatus::Failed,
                "2026-11-22 10:00:10+00:00",
                "0/7000100",
                1,
            ),
            backup(
                "20261123T100000",
                BackupStatus::Done,
                "2026-11-23 10:00:10+00:00",
                "0/9000100",
                2,
            ),
        ];
        let id = |t: &RecoveryTarget| pick(&backups, t).map(|b| b.backup_id().to_owned());
        let mut target = RecoveryTarget::end_of_archive();
        assert_eq!(id(&target).as_deref(), Some("20261123T100000"));
        target.target = Target::time("2026-11-22 12:00:00").unwrap();
        assert_eq!(id(&target).as_deref(), Some("20261121T100000"));
        target.target = Target::time("2026-11-21 10:00:10").unwrap();
        assert_eq!(id(&target).as_deref(), Some("20261121T100000"));
        target.target = Target::time("2026-11-20 10:00:09").unwrap();
        assert_eq!(id(&target), None);
        target.target = Target::Lsn("0/8000000".parse().unwrap());
        assert_eq!(id(&target).as_deref(), Some("20261121T100000"));
        target.target = Target::Name("before-upgrade".into());
        target.timeline = TargetTimeline::Id(1);
        assert_eq!(id(&target).as_deref(), Some("20261121T100000"));
        // Timeline 3 may descend from timeline 2: its backups are candidates.
        target.timeline = TargetTimeline::Id(3);
        assert_eq!(id(&target).as_deref(), Some("20261123T100000"));
    }

    #[test]
    fn choices_parse() {
        assert_eq!(
            "latest".parse::<BackupChoice>().unwrap(),
            BackupChoice::Latest
        );
        assert_eq!(
            "20261120T100000".parse::<BackupChoice>().unwrap(),
            BackupChoice::Id("20261120T100000".into())
        );
        assert!("../x".parse::<BackupChoice>().is_err());
    }
}
