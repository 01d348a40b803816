//! `pgsteward backup delete <id>` and `backup retention`: delete one backup, or every backup
//! the retention policy makes obsolete, with the WAL barman-cloud-backup-delete would delete
//! along with it; `--dry-run` lists the objects instead.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::Utc;
use pgsteward_backup::retention::{
    delete_backup, run_retention, ApplyOptions, Plan, RetentionPolicy, Summary,
};

use super::{human_size, Target};

/// `pgsteward backup delete ID`.
pub async fn delete(
    config: &Path,
    id: &str,
    dry_run: bool,
    minimum_redundancy: Option<u32>,
    json: bool,
) -> Result<()> {
    let target = Target::open(config).await?;
    let minimum = minimum_redundancy.unwrap_or(target.config.archive.minimum_redundancy);
    let options = ApplyOptions {
        dry_run,
        ..ApplyOptions::default()
    };
    let (plan, summary) = delete_backup(&target.catalog, id, minimum, options)
        .await
        .with_context(|| format!("deleting backup {id}"))?;
    print_outcome(None, &plan, &summary, json)
}

/// `pgsteward backup retention`.
pub async fn retention(
    config: &Path,
    policy: Option<&str>,
    dry_run: bool,
    minimum_redundancy: Option<u32>,
    json: bool,
) -> Result<()> {
    let target = Target::open(config).await?;
    let policy = match policy {
        Some(text) => RetentionPolicy::parse(text)?,
        None => target.policy.context(
            "no retention policy: set archive.retention_policy in the configuration or give --policy",
        )?,
    };
    let minimum = minimum_redundancy.unwrap_or(target.config.archive.minimum_redundancy);
    let options = ApplyOptions {
        dry_run,
        ..ApplyOptions::default()
    };
    let (plan, summary) = run_retention(&target.catalog, &policy, Utc::now(), minimum, options)
        .await
        .with_context(|| format!("applying retention policy {policy}"))?;
    print_outcome(Some(&policy), &plan, &summary, json)
}

fn print_outcome(
    policy: Option<&RetentionPolicy>,
    plan: &Plan,
    summary: &Summary,
    json: bool,
) -> Result<()> {
    if json {
        let deletions: Vec<serde_json::Value> = plan
            .deletions
            .iter()
            .map(|d| {
                serde_json::json!({
                    "backup_id": d.backup_id,
                    "files": d.files,
                    "info": d.info_key,
                    "leftovers": d.leftovers,
                    "wal_prefixes": d.wal.prefixes,
                    "wal_objects": d.wal.objects,
                })
            })
            .collect();
        let report: serde_json::Map<String, serde_json::Value> = plan
            .report
            .iter()
            .map(|(id, status)| (id.clone(), status.as_str().into()))
            .collect();
        let value = serde_json::json!({
            "policy": policy.map(|p| p.to_string()),
            "report": report,
            "deletions": deletions,
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if let Some(policy) = policy {
        println!("Retention policy: {policy}");
        for (id, status) in &plan.report {
            println!("  {id}  {}", status.as_str());
        }
    }
    let verb = if summary.dry_run {
        "Would delete"
    } else {
        "Deleted"
    };
    for deletion in &plan.deletions {
        println!("{verb} backup {}", deletion.backup_id);
        if summary.dry_run {
            for key in deletion
                .files
                .iter()
                .chain(std::iter::once(&deletion.info_key))
                .chain(&deletion.leftovers)
            {
                println!("  {key}");
            }
            for prefix in &deletion.wal.prefixes {
                println!("  {prefix} (every object below)");
            }
            for key in &deletion.wal.objects {
                println!("  {key}");
            }
        }
    }
    println!(
        "{verb} {} backup(s), {} backup object(s), {} WAL object(s), {}",
        summary.deleted_backups.len(),
        summary.backup_objects,
        summary.wal_objects,
        human_size(summary.bytes)
    );
    Ok(())
}
