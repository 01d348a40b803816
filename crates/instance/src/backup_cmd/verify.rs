//! `pgsteward backup verify <id>`: open the archive the data directory (or configuration)
//! names, download the backup and check every archive and file against the manifest written
//! when it was taken. Prints each problem; exit 0 when intact, 1 otherwise.

use std::path::Path;

use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::verify::verify_backup;

/// Run the command; returns the exit code.
pub fn run(backup_id: &str, pgdata: Option<&Path>, config: Option<&Path>) -> i32 {
    super::block_on(async {
        let result = async {
            let settings = crate::wal_cmd::operator_settings(pgdata, config)?;
            let wal = settings.open().await?;
            let catalog = Catalog::new(std::sync::Arc::clone(wal.store()), &settings.server_name);
            let report = verify_backup(&catalog, backup_id).await?;
            Ok::<_, anyhow::Error>(report)
        }
        .await;
        match result {
            Ok(report) if report.ok() => {
                println!(
                    "backup {} is intact: {} archives, {} files, {} bytes checked",
                    report.backup_id,
                    report.archives_checked,
                    report.files_checked,
                    report.bytes_checked
                );
                0
            }
            Ok(report) => {
                println!("backup {} is DAMAGED:", report.backup_id);
                for problem in &report.problems {
                    println!("  {problem}");
                }
                1
            }
            Err(e) => {
                eprintln!("pgsteward backup verify: ERROR: {e:#}");
                1
            }
        }
    })
}
