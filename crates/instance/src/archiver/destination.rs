//! The first-archive rule: before this data directory archives into a destination for the
//! first time, the server's `wals/` there must be empty (as barman-cloud-check-wal-archive
//! demands), unless `archive.allow_existing_wal` is set. Passing the check is recorded in
//! PGDATA so later calls (manager or fallback CLI) skip it.

use std::path::Path;

use anyhow::{bail, Result};
use pgsteward_archive::WalArchive;

use super::settings::ArchiveSettings;

const MARKER: &str = "pgsteward.archive-initialized";

fn marker_content(settings: &ArchiveSettings) -> String {
    format!("{}\n{}\n", settings.destination, settings.server_name)
}

/// Ok when this data directory may archive into the destination.
pub async fn ensure_ready(
    pgdata: &Path,
    settings: &ArchiveSettings,
    wal: &WalArchive,
) -> Result<()> {
    let marker = pgdata.join(MARKER);
    let expected = marker_content(settings);
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(expected.as_str()) {
        return Ok(());
    }
    let deadline = pgsteward_archive::wal::deadline_in(settings.timeout());
    let existing = wal.list(deadline).await?;
    if !existing.is_empty() && !settings.allow_existing_wal {
        bail!(
            "{} already holds {} WAL file(s) for server {:?} (first: {}), and this data directory never archived there: refusing to mix WAL of different clusters. Use another archive.server_name or destination, or set archive.allow_existing_wal: true if this WAL belongs to this cluster",
            wal.store().describe(),
            existing.len(),
            settings.server_name,
            existing.first().map(|(f, _)| f.name().to_owned()).unwrap_or_default()
        );
    }
    crate::config::render::write_atomically(&marker, &expected)?;
    tracing::info!(destination = %wal.store().describe(), server = %settings.server_name, existing = existing.len(), "archive destination accepted for this data directory");
    Ok(())
}
