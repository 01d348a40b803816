//! Carrying a retention plan out against the store: read the catalog snapshot (refusing to
//! act when any `backup.info` is unreadable, as barman-cloud does), then for each backup, in
//! order: mark its `backup.info` FAILED (so an interrupted run never leaves a DONE backup
//! listed with data missing), delete its tars, its `backup.info`, the other objects of its
//! directory, then the WAL the plan frees. A dry run only reports. A backup left FAILED with
//! the deletion marker by an interrupted run is finished by the next run.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pgsteward_archive::store::{ObjectStore, StoreError};

use crate::catalog::{check_backup_id, Catalog, CatalogError};
use crate::info::BackupStatus;
use crate::retention::plan::{plan_delete, plan_retention, CatalogSnapshot, Plan, PlanError};
use crate::retention::policy::RetentionPolicy;
use crate::retention::report::{BackupSummary, DELETION_MARKER};

/// Why retention did not (fully) run.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "cannot read the backup catalog entries {0:?}; refusing to delete anything (fix or remove them)"
    )]
    Unreadable(Vec<String>),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("backup {id}: {message}")]
    Delete { id: String, message: String },
}

/// How to carry a plan out.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Only report what would be deleted.
    pub dry_run: bool,
    /// Deletes in flight at once.
    pub parallel: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            parallel: 16,
        }
    }
}

/// What a run deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub dry_run: bool,
    pub deleted_backups: Vec<String>,
    /// Objects of the deleted backups (tars, backup.info, other objects of their directories).
    pub backup_objects: usize,
    pub wal_objects: usize,
    pub bytes: u64,
}

/// Read a server's catalog: every backup directory, its objects and `backup.info`, keep
/// annotations and every WAL object. Unreadable `backup.info` files (or ones in a directory
/// whose name is not a backup id) stop retention.
pub async fn load_snapshot(catalog: &Catalog) -> Result<CatalogSnapshot, RetentionError> {
    let store = catalog.store();
    let server = catalog.server().to_owned();
    let base = catalog.base_prefix();
    let mut snapshot = CatalogSnapshot {
        server: server.clone(),
        ..CatalogSnapshot::default()
    };
    let mut objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for meta in store.list(&base).await? {
        let Some(rest) = meta.key.strip_prefix(&base) else {
            continue;
        };
        let Some((id, _)) = rest.split_once('/') else {
            continue;
        };
        snapshot.sizes.insert(meta.key.clone(), meta.size);
        objects.entry(id.to_owned()).or_default().push(meta.key);
    }
    let mut unreadable = Vec::new();
    for (id, keys) in &objects {
        let info_key = format!("{base}{id}/backup.info");
        if !keys.contains(&info_key) {
            continue;
        }
        if check_backup_id(id).is_err() {
            tracing::error!(backup = %id, "a directory with a backup.info whose name is not a backup id");
            unreadable.push(id.clone());
            continue;
        }
        let summary = match catalog.read(id).await {
            Ok(Some(info)) => BackupSummary::from_info(&info).map_err(|e| e.to_string()),
            Ok(None) => continue,
            Err(CatalogError::Store(e)) => return Err(e.into()),
            Err(e) => Err(e.to_string()),
        };
        match summary {
            Ok(summary) => {
                snapshot.backups.insert(id.clone(), summary);
            }
            Err(reason) => {
                tracing::error!(backup = %id, %reason, "unreadable backup.info");
                unreadable.push(id.clone());
            }
        }
        let keep_key = format!("{base}{id}/annotations/keep");
        if keys.contains(&keep_key) {
            if let Some(bytes) = store.get(&keep_key).await? {
                snapshot.keep.insert(id.clone(), first_line(&bytes));
            }
        }
    }
    if !unreadable.is_empty() {
        return Err(RetentionError::Unreadable(unreadable));
    }
    snapshot.backup_objects = objects;
    for meta in store.list(&snapshot.wals_dir()).await? {
        snapshot.sizes.insert(meta.key.clone(), meta.size);
        snapshot.wal_keys.push(meta.key);
    }
    snapshot.wal_keys.sort();
    Ok(snapshot)
}

/// Every backup's keep annotation (`base/<id>/annotations/keep`): its first line, newline
/// included, as barman reads it.
pub async fn keep_annotations(
    catalog: &Catalog,
) -> Result<BTreeMap<String, String>, RetentionError> {
    let store = catalog.store();
    let base = catalog.base_prefix();
    let mut out = BTreeMap::new();
    for meta in store.list(&base).await? {
        let Some(rest) = meta.key.strip_prefix(&base) else {
            continue;
        };
        let Some(id) = rest.strip_suffix("/annotations/keep") else {
            continue;
        };
        if id.contains('/') {
            continue;
        }
        if let Some(bytes) = store.get(&meta.key).await? {
            out.insert(id.to_owned(), first_line(&bytes));
        }
    }
    Ok(out)
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.find('\n') {
        Some(end) => text[..=end].to_owned(),
        None => text.into_owned(),
    }
}

/// Delete keys, `parallel` at a time; the first error stops the rest.
async fn delete_keys(
    store: &Arc<dyn ObjectStore>,
    keys: &[String],
    parallel: usize,
) -> Result<(), StoreError> {
    for chunk in keys.chunks(parallel.max(1)) {
        let mut tasks = tokio::task::JoinSet::new();
        for key in chunk {
            let store = store.clone();
            let key = key.clone();
            tasks.spawn(async move { store.delete(&key).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.map_err(|e| StoreError::Permanent(format!("delete task failed: {e}")))??;
        }
    }
    Ok(())
}

/// Carry a plan out (or count what it would delete in a dry run).
pub async fn execute(
    catalog: &Catalog,
    snapshot: &CatalogSnapshot,
    plan: &Plan,
    options: ApplyOptions,
) -> Result<Summary, RetentionError> {
    let store = catalog.store();
    let size = |key: &String| snapshot.sizes.get(key).copied().unwrap_or(0);
    let mut summary = Summary {
        dry_run: options.dry_run,
        ..Summary::default()
    };
    for deletion in &plan.deletions {
        let id = &deletion.backup_id;
        let mut backup_keys: Vec<String> = deletion.files.clone();
        backup_keys.push(deletion.info_key.clone());
        backup_keys.extend(deletion.leftovers.iter().cloned());
        let mut wal_keys: Vec<String> = Vec::new();
        if options.dry_run {
            for prefix in &deletion.wal.prefixes {
                wal_keys.extend(
                    snapshot
                        .wal_keys
                        .iter()
                        .filter(|k| k.starts_with(prefix.as_str()))
                        .cloned(),
                );
            }
        } else {
            // Mark it FAILED first: from here on nobody restores from it or counts it.
            if let Some(mut info) = catalog.read(id).await? {
                info.set_status(BackupStatus::Failed);
                info.set("error", DELETION_MARKER)
                    .map_err(|e| RetentionError::Delete {
                        id: id.clone(),
                        message: e.to_string(),
                    })?;
                catalog.write(&info).await?;
            }
            delete_keys(store, &deletion.files, options.parallel).await?;
            store.delete(&deletion.info_key).await?;
            delete_keys(store, &deletion.leftovers, options.parallel).await?;
            for prefix in &deletion.wal.prefixes {
                let keys: Vec<String> = store
                    .list(prefix)
                    .await?
                    .into_iter()
                    .map(|m| m.key)
                    .collect();
                delete_keys(store, &keys, options.parallel).await?;
                wal_keys.extend(keys);
            }
            delete_keys(store, &deletion.wal.objects, options.parallel).await?;
        }
        wal_keys.extend(deletion.wal.objects.iter().cloned());
        summary.bytes += backup_keys
            .iter()
            .chain(wal_keys.iter())
            .map(size)
            .sum::<u64>();
        summary.backup_objects += backup_keys.len();
        summary.wal_objects += wal_keys.len();
        summary.deleted_backups.push(id.clone());
        tracing::info!(
            backup = %id,
            dry_run = options.dry_run,
            backup_objects = backup_keys.len(),
            wal_objects = wal_keys.len(),
            wal_prefixes = deletion.wal.prefixes.len(),
            "retention: backup deleted"
        );
    }
    Ok(summary)
}

/// Apply a retention policy to a server's catalog.
pub async fn run_retention(
    catalog: &Catalog,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    minimum_redundancy: u32,
    options: ApplyOptions,
) -> Result<(Plan, Summary), RetentionError> {
    let snapshot = load_snapshot(catalog).await?;
    let plan = plan_retention(&snapshot, policy, now, minimum_redundancy)?;
    let summary = execute(catalog, &snapshot, &plan, options).await?;
    Ok((plan, summary))
}

/// Delete one backup by id (refused for kept backups and below the minimum redundancy).
pub async fn delete_backup(
    catalog: &Catalog,
    backup_id: &str,
    minimum_redundancy: u32,
    options: ApplyOptions,
) -> Result<(Plan, Summary), RetentionError> {
    check_backup_id(backup_id)?;
    let snapshot = load_snapshot(catalog).await?;
    let plan = plan_delete(&snapshot, backup_id, minimum_redundancy)?;
    let summary = execute(catalog, &snapshot, &plan, options).await?;
    Ok((plan, summary))
}
