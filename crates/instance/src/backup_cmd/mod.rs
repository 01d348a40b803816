//! `pgsteward backup ...`: taking a backup through the local manager and the operator
//! commands on the base backup catalog. The catalog is the one the manager's configuration
//! (`--config`) names: `archive.destination`, the server name, the retention policy and
//! minimum redundancy.
//!
//! - [`take`]: `pgsteward backup [--wait]` (ask the local manager, optionally follow it).
//! - [`verify`]: `backup verify <id>` (check a stored backup against its manifest).
//! - [`catalog`]: `backup list` and `backup show`.
//! - [`retention`]: `backup delete <id>` and `backup retention`.

pub mod catalog;
pub mod retention;
pub mod take;
pub mod verify;

use std::path::Path;

use anyhow::{Context, Result};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::retention::RetentionPolicy;

use crate::archiver::settings::ArchiveSettings;
use crate::cli::BackupCommand;
use crate::config::Config;

/// What a configuration says about its backup catalog.
pub struct Target {
    pub config: Config,
    pub catalog: Catalog,
    /// `archive.retention_policy`, parsed.
    pub policy: Option<RetentionPolicy>,
}

impl Target {
    /// Load the configuration file and open its destination.
    pub async fn open(config_file: &Path) -> Result<Target> {
        let sources =
            crate::config::ConfigSources::from_process(Some(config_file.to_path_buf()), Vec::new());
        let config = crate::config::load(&sources)?;
        Target::from_config(config).await
    }

    /// Open the catalog of a loaded configuration.
    pub async fn from_config(config: Config) -> Result<Target> {
        let settings = ArchiveSettings::from_config(&config)
            .context("archive.destination is not set in the configuration")?;
        let store = settings.open_store().await?;
        let policy = config
            .archive
            .retention_policy
            .as_deref()
            .map(RetentionPolicy::parse)
            .transpose()?;
        Ok(Target {
            catalog: Catalog::new(store, &settings.server_name),
            config,
            policy,
        })
    }
}

/// Run `future` on a current-thread runtime; its value is the exit code.
fn block_on<F: std::future::Future<Output = i32>>(future: F) -> i32 {
    crate::cli::block_on("backup", crate::cli::CommandRuntime::CurrentThread, future)
}

/// Run a backup subcommand; returns the exit code.
pub fn run(command: BackupCommand) -> i32 {
    if let BackupCommand::Verify { backup_id, target } = &command {
        return verify::run(
            backup_id,
            target.pgdata.as_deref(),
            target.config.as_deref(),
        );
    }
    crate::cli::block_on("backup", crate::cli::CommandRuntime::TwoWorkers, async {
        let result = async {
            match command {
                BackupCommand::Verify { .. } => Ok(()),
                BackupCommand::List { target, json } => catalog::list(&target.config, json).await,
                BackupCommand::Show { target, id, json } => {
                    catalog::show(&target.config, &id, json).await
                }
                BackupCommand::Delete {
                    target,
                    id,
                    dry_run,
                    minimum_redundancy,
                    json,
                } => {
                    retention::delete(&target.config, &id, dry_run, minimum_redundancy, json).await
                }
                BackupCommand::Retention {
                    target,
                    dry_run,
                    policy,
                    minimum_redundancy,
                    json,
                } => {
                    retention::retention(
                        &target.config,
                        policy.as_deref(),
                        dry_run,
                        minimum_redundancy,
                        json,
                    )
                    .await
                }
            }
        }
        .await;
        match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pgsteward backup: ERROR: {e:#}");
                1
            }
        }
    })
}

/// `1536` → `1.5 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
