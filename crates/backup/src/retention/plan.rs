//! The pure decision: from a snapshot of a server's catalog (backups, keep annotations, the
//! objects of each backup directory and of `wals/`), which backups go and, for each, which
//! objects — exactly what `barman-cloud-backup-delete` deletes, in its order:
//!
//! 1. Backups go oldest first. For each: its data and tablespace tars (`data.tar*`,
//!    `<oid>.tar*`, plus `_`-suffixed parts), then `backup.info`, then WAL.
//! 2. WAL goes only when no older DONE/WAITING_FOR_WALS backup remains, or all older ones
//!    are `keep:standalone` (then only on a retention run; their begin..end WAL stays).
//!    It goes up to the `begin_wal` of the next DONE/WAITING_FOR_WALS backup (or of the
//!    deleted one when it was the newest), by name, never on a timeline another remaining
//!    backup lives on (any status), never a `.history` file. Whole `wals/<tli><log>/`
//!    directories below that point on the same timeline are removed at once, whatever they
//!    hold; `.backup` files count as their segment for the standalone ranges, `.partial`
//!    files compare by their full name.
//! 3. After each deletion the backup leaves the catalog, so the next one sees the rest.
//!
//! Before all that, a retention run finishes the deletions an interrupted run left (FAILED
//! backups carrying the deletion marker; barman-cloud never creates those).
//!
//! barman-cloud leaves any other object in a deleted backup's directory (annotations,
//! pgsteward's own sidecar objects); pgsteward lists them as `leftovers` and removes them
//! after `backup.info`, which is the only difference from barman's result.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::info::BackupStatus;
use crate::retention::policy::RetentionPolicy;
use crate::retention::report::{
    keep_target, report, BackupSummary, KeepTarget, ReportError, RetentionStatus,
};
use crate::retention::xlog::{self, XlogKind};

/// A server's catalog as retention reads it. Keys are relative to the destination.
#[derive(Debug, Clone, Default)]
pub struct CatalogSnapshot {
    pub server: String,
    /// Every backup with a readable `backup.info`, by id.
    pub backups: BTreeMap<String, BackupSummary>,
    /// Keep annotations (`base/<id>/annotations/keep`): the first line, newline included.
    pub keep: BTreeMap<String, String>,
    /// Every object key below `base/<id>/`, per backup id, sorted.
    pub backup_objects: BTreeMap<String, Vec<String>>,
    /// Every object key below `<server>/wals/`, sorted.
    pub wal_keys: Vec<String>,
    /// Sizes of the listed objects, for summaries.
    pub sizes: BTreeMap<String, u64>,
}

impl CatalogSnapshot {
    pub fn base_dir(&self, id: &str) -> String {
        format!("{}/base/{id}/", self.server)
    }

    pub fn wals_dir(&self) -> String {
        format!("{}/wals/", self.server)
    }
}

/// The WAL one backup deletion removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalCleanup {
    /// `wals/<tli><log>/` directories removed whole (every object below them).
    pub prefixes: Vec<String>,
    /// Single WAL objects, sorted.
    pub objects: Vec<String>,
}

/// One backup to delete and the objects that go with it, in deletion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDeletion {
    pub backup_id: String,
    /// Data and tablespace tars, deleted first.
    pub files: Vec<String>,
    /// `backup.info`, deleted once the files are gone.
    pub info_key: String,
    /// Other objects in the backup's directory (barman-cloud leaves them).
    pub leftovers: Vec<String>,
    pub wal: WalCleanup,
}

/// What a retention run or a delete by id would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The retention report (retention runs only).
    pub report: BTreeMap<String, RetentionStatus>,
    pub deletions: Vec<BackupDeletion>,
}

/// Why nothing may be deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("backup {0} does not exist")]
    NotFound(String),
    #[error("backup {id} has a keep annotation ({target:?}); remove the keep to delete it")]
    Kept { id: String, target: String },
    #[error(
        "deleting backup {id} would break the minimum redundancy ({minimum} backups, {current} \
         present)"
    )]
    MinimumRedundancy {
        id: String,
        minimum: u32,
        current: usize,
    },
    #[error("backup {0} is a snapshot backup; pgsteward cannot delete cloud snapshots")]
    Snapshot(String),
}

fn copy_done(status: BackupStatus) -> bool {
    matches!(status, BackupStatus::Done | BackupStatus::WaitingForWals)
}

/// barman-cloud's data/tablespace file matching for one backup directory.
fn backup_files(snapshot: &CatalogSnapshot, backup: &BackupSummary) -> Vec<String> {
    const EXTENSIONS: &[&str] = &["tar", "tar.gz", "tar.bz2", "tar.snappy", "tar.lz4"];
    let dir = snapshot.base_dir(&backup.backup_id);
    // PGDATA first, then tablespaces (one entry per oid, in backup.info order).
    let mut bases: Vec<(Option<u64>, String)> = vec![(None, format!("{dir}data"))];
    for oid in &backup.tablespace_oids {
        if !bases.iter().any(|(o, _)| *o == Some(*oid)) {
            bases.push((Some(*oid), format!("{dir}{oid}")));
        }
    }
    // The directory's direct entries as a delimited listing returns them: "sub/" markers
    // first, then objects, each in key order.
    let objects = snapshot
        .backup_objects
        .get(&backup.backup_id)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut markers = BTreeSet::new();
    let mut direct = Vec::new();
    for key in objects {
        let Some(rest) = key.strip_prefix(&dir) else {
            continue;
        };
        match rest.split_once('/') {
            Some((sub, _)) => {
                markers.insert(format!("{dir}{sub}/"));
            }
            None => direct.push(key.clone()),
        }
    }
    let mut main: Vec<Option<String>> = vec![None; bases.len()];
    let mut additional: Vec<Vec<String>> = vec![Vec::new(); bases.len()];
    for item in markers.iter().chain(direct.iter()) {
        for (index, (_, base)) in bases.iter().enumerate() {
            let Some(suffix) = item.strip_prefix(base.as_str()) else {
                continue;
            };
            let (is_additional, ext) = match suffix.chars().next() {
                Some('_') => (true, suffix.split_once('.').map_or(suffix, |(_, e)| e)),
                Some('.') => (false, &suffix[1..]),
                _ => continue,
            };
            if !EXTENSIONS.contains(&ext) {
                continue;
            }
            if is_additional {
                additional[index].push(item.clone());
            } else {
                main[index] = Some(item.clone());
            }
            break;
        }
    }
    let mut order: Vec<usize> = (0..bases.len()).collect();
    order.sort_by_key(|i| bases[*i].0.map_or(-1, |oid| oid as i128));
    let mut files = Vec::new();
    for index in order {
        files.extend(main[index].clone());
        let mut extra = additional[index].clone();
        extra.sort();
        files.extend(extra);
    }
    files
}

/// The mutable view a sequence of deletions works on (barman-cloud's caches).
struct State<'a> {
    snapshot: &'a CatalogSnapshot,
    backups: BTreeMap<String, BackupSummary>,
    /// WAL name → object key (the last key in order wins, as in barman's dict).
    wal_paths: BTreeMap<String, String>,
    /// Live `wals/<dir>/` prefixes.
    prefixes: BTreeSet<String>,
}

impl<'a> State<'a> {
    fn new(snapshot: &'a CatalogSnapshot) -> Self {
        let wals_dir = snapshot.wals_dir();
        let mut wal_paths = BTreeMap::new();
        let mut prefixes = BTreeSet::new();
        for key in &snapshot.wal_keys {
            let Some(rest) = key.strip_prefix(&wals_dir) else {
                continue;
            };
            if let Some((dir, _)) = rest.split_once('/') {
                prefixes.insert(format!("{wals_dir}{dir}/"));
            }
            let file_name = key.rsplit('/').next().unwrap_or(key);
            if let Some(name) = xlog::wal_name_of_object(file_name) {
                wal_paths.insert(name.to_owned(), key.clone());
            }
        }
        State {
            snapshot,
            backups: snapshot.backups.clone(),
            wal_paths,
            prefixes,
        }
    }

    fn keep(&self, id: &str) -> Option<KeepTarget> {
        keep_target(self.snapshot.keep.get(id).map(String::as_str))
    }

    fn previous(&self, id: &str) -> Option<&BackupSummary> {
        self.backups
            .range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(id)))
            .rev()
            .map(|(_, b)| b)
            .find(|b| copy_done(b.status))
    }

    fn next(&self, id: &str) -> Option<&BackupSummary> {
        use std::ops::Bound;
        self.backups
            .range::<str, _>((Bound::Excluded(id), Bound::Unbounded))
            .map(|(_, b)| b)
            .find(|b| copy_done(b.status))
    }

    /// barman's `should_remove_wals`: None when no WAL may go, else the WAL ranges of the
    /// older keep:standalone backups to preserve.
    fn removable(
        &self,
        deleted: &BackupSummary,
        skip_if_standalone: bool,
    ) -> Option<Vec<(String, String)>> {
        let mut ranges = Vec::new();
        let mut previous = self.previous(&deleted.backup_id);
        while let Some(backup) = previous {
            if self.keep(&backup.backup_id) != Some(KeepTarget::Standalone) || skip_if_standalone {
                return None;
            }
            match (&backup.begin_wal, &backup.end_wal) {
                (Some(begin), Some(end)) => ranges.push((begin.clone(), end.clone())),
                // barman would fail here; keeping every WAL is the safe equivalent.
                _ => {
                    tracing::warn!(backup = %backup.backup_id, "keep:standalone backup without begin/end WAL; keeping all WAL");
                    return None;
                }
            }
            previous = self.previous(&backup.backup_id);
        }
        Some(ranges)
    }

    fn wal_cleanup(&self, deleted: &BackupSummary, skip_if_standalone: bool) -> WalCleanup {
        let Some(ranges) = self.removable(deleted, skip_if_standalone) else {
            return WalCleanup::default();
        };
        let remove_until = self.next(&deleted.backup_id).unwrap_or(deleted);
        let Some(until_begin) = remove_until.begin_wal.as_deref() else {
            return WalCleanup::default();
        };
        let Some((until_tli, until_log)) = xlog::tli_log(until_begin) else {
            tracing::warn!(backup = %remove_until.backup_id, begin_wal = until_begin, "begin_wal is not a WAL name; keeping all WAL");
            return WalCleanup::default();
        };
        let Some(decoded_ranges) = ranges
            .iter()
            .map(|(b, e)| Some((xlog::tli_log(b)?, xlog::tli_log(e)?)))
            .collect::<Option<Vec<_>>>()
        else {
            return WalCleanup::default();
        };
        // Every timeline a backup still in the catalog lives on (the deleted one included),
        // except the one WAL is removed on.
        let mut protected: BTreeSet<Option<u32>> =
            self.backups.values().map(|b| b.timeline).collect();
        protected.remove(&remove_until.timeline);

        let mut cleanup = WalCleanup::default();
        for prefix in &self.prefixes {
            let dir = prefix
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            let Some((tli, log)) = xlog::decode_hash_dir(dir) else {
                continue;
            };
            if protected.contains(&Some(tli)) {
                continue;
            }
            let in_range = decoded_ranges.iter().any(|((btli, blog), (etli, elog))| {
                tli >= *btli && log >= *blog && tli <= *etli && log <= *elog
            });
            if !in_range && tli == until_tli && log < until_log {
                cleanup.prefixes.push(prefix.clone());
            }
        }
        for (name, key) in &self.wal_paths {
            if cleanup.prefixes.iter().any(|p| key.starts_with(p.as_str())) {
                continue;
            }
            let kind = xlog::classify(name);
            if kind == Some(XlogKind::History) {
                continue;
            }
            if !protected.is_empty() && protected.contains(&xlog::timeline(name)) {
                continue;
            }
            let range_name = if kind == Some(XlogKind::Backup) {
                &name[..24]
            } else {
                name.as_str()
            };
            if ranges
                .iter()
                .any(|(b, e)| range_name >= b.as_str() && range_name <= e.as_str())
            {
                continue;
            }
            if name.as_str() < until_begin {
                cleanup.objects.push(key.clone());
            }
        }
        cleanup.objects.sort();
        cleanup
    }

    fn delete(&mut self, id: &str, skip_if_standalone: bool) -> Result<BackupDeletion, PlanError> {
        let backup = self
            .backups
            .get(id)
            .cloned()
            .ok_or_else(|| PlanError::NotFound(id.to_owned()))?;
        if backup.snapshot {
            return Err(PlanError::Snapshot(id.to_owned()));
        }
        let files = backup_files(self.snapshot, &backup);
        let info_key = format!("{}backup.info", self.snapshot.base_dir(id));
        let leftovers = self
            .snapshot
            .backup_objects
            .get(id)
            .map(|keys| {
                keys.iter()
                    .filter(|k| **k != info_key && !files.contains(k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let wal = self.wal_cleanup(&backup, skip_if_standalone);
        // Update the caches as barman-cloud does before the next deletion.
        self.backups.remove(id);
        self.prefixes.retain(|p| !wal.prefixes.contains(p));
        self.wal_paths.retain(|_, key| {
            !wal.objects.contains(key) && !wal.prefixes.iter().any(|p| key.starts_with(p.as_str()))
        });
        Ok(BackupDeletion {
            backup_id: id.to_owned(),
            files,
            info_key,
            leftovers,
            wal,
        })
    }
}

/// What a retention run deletes (`barman-cloud-backup-delete --retention-policy`).
pub fn plan_retention(
    snapshot: &CatalogSnapshot,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    minimum_redundancy: u32,
) -> Result<Plan, PlanError> {
    let report = report(
        policy,
        &snapshot.backups,
        &snapshot.keep,
        now,
        minimum_redundancy,
    )?;
    let mut state = State::new(snapshot);
    let mut deletions = Vec::new();
    // First finish deletions an earlier run started (their backups are FAILED already).
    for (id, backup) in &snapshot.backups {
        if backup.deleting {
            deletions.push(state.delete(id, false)?);
        }
    }
    for (id, status) in &report {
        if *status == RetentionStatus::Obsolete {
            deletions.push(state.delete(id, false)?);
        }
    }
    Ok(Plan { report, deletions })
}

/// What deleting one backup by id does (`barman-cloud-backup-delete --backup-id`): refused
/// when it has a keep annotation (even an empty one) or when fewer than
/// `minimum_redundancy + 1` backups not STARTED exist.
pub fn plan_delete(
    snapshot: &CatalogSnapshot,
    backup_id: &str,
    minimum_redundancy: u32,
) -> Result<Plan, PlanError> {
    if !snapshot.backups.contains_key(backup_id) {
        return Err(PlanError::NotFound(backup_id.to_owned()));
    }
    if let Some(target) = snapshot.keep.get(backup_id) {
        return Err(PlanError::Kept {
            id: backup_id.to_owned(),
            target: target.clone(),
        });
    }
    if minimum_redundancy > 0 {
        let current = snapshot
            .backups
            .values()
            .filter(|b| b.status != BackupStatus::Started)
            .count();
        if minimum_redundancy as usize >= current {
            return Err(PlanError::MinimumRedundancy {
                id: backup_id.to_owned(),
                minimum: minimum_redundancy,
                current,
            });
        }
    }
    let mut state = State::new(snapshot);
    Ok(Plan {
        report: BTreeMap::new(),
        deletions: vec![state.delete(backup_id, true)?],
    })
}
