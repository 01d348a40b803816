//! The persisted fence: `PGDATA/pgsteward.fenced` exists while the instance is fenced
//! (`POST /pg/fence` until `POST /pg/unfence`), so that a restarted manager keeps postgres
//! stopped instead of starting a possibly stale primary. The marker holds the reason.

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
    set_with_reason(pgdata, fenced.then_some(BY_REQUEST))
}

/// Content of the marker of a fence asked for through the API (not an error).
const BY_REQUEST: &str = "fenced through the API";

/// The failure recorded in the marker (None when not fenced, fenced on request, or
/// unreadable).
pub fn reason(pgdata: &Path) -> Option<String> {
    let text = std::fs::read_to_string(pgdata.join(FENCE_FILE)).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty() && t != BY_REQUEST)
}

/// Fence with `reason` recorded in the marker (status shows it after a manager restart), or
/// unfence with None.
pub fn set_with_reason(pgdata: &Path, reason: Option<&str>) -> Result<()> {
    let path = pgdata.join(FENCE_FILE);
    if let Some(reason) = reason {
        crate::config::render::write_atomically(&path, &format!("{reason}\n"))?;
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
