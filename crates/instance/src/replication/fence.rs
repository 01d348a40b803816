//! The persisted fence: `PGDATA/pgsteward.fenced` exists while the instance is fenced
//! (`POST /pg/fence` until `POST /pg/unfence`), so that a restarted manager keeps postgres
//! stopped instead of starting a possibly stale primary.

use std::path::Path;

use anyhow::{Context, Result};

/// Marker file inside PGDATA.
pub const FENCE_FILE: &str = "pgsteward.fenced";

/// True when the data directory is fenced.
pub fn is_fenced(pgdata: &Path) -> bool {
    pgdata.join(FENCE_FILE).exists()
}

/// Fence (write the marker atomically) or unfence (remove it); durable before returning.
pub fn set(pgdata: &Path, fenced: bool) -> Result<()> {
    let path = pgdata.join(FENCE_FILE);
    if fenced {
        crate::config::render::write_atomically(&path, "fenced through the API\n")?;
    } else {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    super::role::sync_dir(pgdata);
    Ok(())
}
