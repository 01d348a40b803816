//! `pgsteward backup list` and `backup show`: the catalog with each backup's status, times,
//! size, timeline, WAL range, keep annotation and retention status (as barman reports it
//! under the configured policy; `-` when no policy is configured).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use chrono::Utc;
use pgsteward_backup::catalog::{check_backup_id, CatalogEntry};
use pgsteward_backup::info::{format_time, BackupInfo, KNOWN_FIELDS};
use pgsteward_backup::retention::{keep_annotations, report, BackupSummary, RetentionStatus};
use serde::Serialize;

use super::{human_size, Target};

/// One line of `backup list`.
#[derive(Debug, Serialize)]
pub struct Row {
    pub backup_id: String,
    pub status: String,
    pub begin_time: Option<String>,
    pub end_time: Option<String>,
    pub size: Option<u64>,
    pub timeline: Option<u32>,
    pub begin_wal: Option<String>,
    pub end_wal: Option<String>,
    pub retention: String,
    pub keep: Option<String>,
    pub error: Option<String>,
}

/// Every backup with its retention status under the target's policy.
pub async fn rows(target: &Target) -> Result<Vec<Row>> {
    let entries = target.catalog.list().await?;
    let keep = keep_annotations(&target.catalog).await?;
    let summaries: BTreeMap<String, BackupSummary> = entries
        .iter()
        .filter_map(|entry| {
            let info = entry.info.as_ref().ok()?;
            Some((
                entry.backup_id.clone(),
                BackupSummary::from_info(info).ok()?,
            ))
        })
        .collect();
    let statuses = match &target.policy {
        Some(policy) => match report(
            policy,
            &summaries,
            &keep,
            Utc::now(),
            target.config.archive.minimum_redundancy,
        ) {
            Ok(statuses) => Some(statuses),
            Err(e) => {
                tracing::warn!(error = %e, "cannot compute retention statuses");
                None
            }
        },
        None => None,
    };
    Ok(entries
        .iter()
        .map(|entry| row(entry, &keep, statuses.as_ref()))
        .collect())
}

fn row(
    entry: &CatalogEntry,
    keep: &BTreeMap<String, String>,
    statuses: Option<&BTreeMap<String, RetentionStatus>>,
) -> Row {
    let id = &entry.backup_id;
    let retention = statuses
        .and_then(|s| s.get(id))
        .map_or("-", |s| s.as_str())
        .to_owned();
    let keep = keep.get(id).map(|k| k.trim_end().to_owned());
    match &entry.info {
        Ok(info) => Row {
            backup_id: id.clone(),
            status: info
                .status()
                .map_or_else(|_| "INVALID".to_owned(), |s| s.as_str().to_owned()),
            begin_time: info.begin_time().ok().flatten().map(|t| format_time(&t)),
            end_time: info.end_time().ok().flatten().map(|t| format_time(&t)),
            size: info.size().ok().flatten(),
            timeline: info.timeline().ok().flatten(),
            begin_wal: info.begin_wal().map(str::to_owned),
            end_wal: info.end_wal().map(str::to_owned),
            retention,
            keep,
            error: info.error().map(str::to_owned),
        },
        Err(e) => Row {
            backup_id: id.clone(),
            status: "UNREADABLE".into(),
            begin_time: None,
            end_time: None,
            size: None,
            timeline: None,
            begin_wal: None,
            end_wal: None,
            retention,
            keep,
            error: Some(e.to_string()),
        },
    }
}

/// `pgsteward backup list`.
pub async fn list(config: &Path, json: bool) -> Result<()> {
    let target = Target::open(config).await?;
    let rows = rows(&target).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<15}  {:<16}  {:<25}  {:<25}  {:>10}  {:>3}  {:<24}  RETENTION",
        "BACKUP ID", "STATUS", "BEGIN TIME", "END TIME", "SIZE", "TLI", "BEGIN WAL"
    );
    for row in &rows {
        let retention = match &row.keep {
            Some(keep) if row.retention == "-" => format!("- (keep:{keep})"),
            _ => row.retention.clone(),
        };
        println!(
            "{:<15}  {:<16}  {:<25}  {:<25}  {:>10}  {:>3}  {:<24}  {retention}",
            row.backup_id,
            row.status,
            row.begin_time.as_deref().unwrap_or("-"),
            row.end_time.as_deref().unwrap_or("-"),
            row.size.map_or_else(|| "-".to_owned(), human_size),
            row.timeline
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            row.begin_wal.as_deref().unwrap_or("-"),
        );
        if let Some(error) = &row.error {
            println!("{:<15}  error: {error}", "");
        }
    }
    Ok(())
}

/// `pgsteward backup show ID`.
pub async fn show(config: &Path, id: &str, json: bool) -> Result<()> {
    check_backup_id(id)?;
    let target = Target::open(config).await?;
    let Some(info) = target.catalog.read(id).await? else {
        bail!(
            "backup {id} does not exist in {}/{}",
            target.catalog.store().describe(),
            target.catalog.base_prefix()
        );
    };
    let row = rows(&target)
        .await?
        .into_iter()
        .find(|row| row.backup_id == id);
    let retention = row.as_ref().map_or("-".to_owned(), |r| r.retention.clone());
    let keep = row.and_then(|r| r.keep);
    let fields = fields(&info);
    if json {
        let value = serde_json::json!({
            "backup_id": id,
            "retention": retention,
            "keep": keep,
            "info": fields,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("Backup {id}");
    println!("  {:<20} {retention}", "retention");
    println!("  {:<20} {}", "keep", keep.as_deref().unwrap_or("-"));
    for (key, value) in &fields {
        println!("  {key:<20} {value}");
    }
    Ok(())
}

/// The set fields of a backup.info, in barman's order.
fn fields(info: &BackupInfo) -> BTreeMap<&'static str, String> {
    KNOWN_FIELDS
        .iter()
        .filter_map(|key| Some((*key, info.get(key)?.to_owned())))
        .collect()
}
