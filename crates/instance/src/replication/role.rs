//! The role and term persisted in the data directory (`pgsteward.role.json`), written
//! atomically, so that a restarted manager (or a restarted pod) keeps being what it was told
//! to be: a primary of some term, or a standby of some upstream.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// File name inside PGDATA.
pub const ROLE_FILE: &str = "pgsteward.role.json";

/// What this instance is, as the manager was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistedRole {
    Primary,
    Replica,
}

impl PersistedRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PersistedRole::Primary => "primary",
            PersistedRole::Replica => "replica",
        }
    }
}

/// The server a standby streams from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

/// Content of `pgsteward.role.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleState {
    pub role: PersistedRole,
    /// Term of invariant 2: the term this instance was promoted in (primary) or the highest
    /// term it has learnt of (replica).
    pub term: u64,
    /// Where a standby streams from (None on a primary).
    #[serde(default)]
    pub upstream: Option<Upstream>,
    /// Set while a promotion to `term` is under way; a retry with the same term finishes it.
    #[serde(default)]
    pub promoting: bool,
}

impl RoleState {
    /// A primary of `term`.
    pub fn primary(term: u64) -> Self {
        RoleState {
            role: PersistedRole::Primary,
            term,
            upstream: None,
            promoting: false,
        }
    }

    /// A standby of `upstream` that knows of `term`.
    pub fn replica(term: u64, upstream: Upstream) -> Self {
        RoleState {
            role: PersistedRole::Replica,
            term,
            upstream: Some(upstream),
            promoting: false,
        }
    }
}

/// Read the role file; Ok(None) when there is none.
pub fn read(pgdata: &Path) -> Result<Option<RoleState>> {
    let path = pgdata.join(ROLE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid role file", path.display()))?;
    Ok(Some(state))
}

/// Write the role file atomically (temporary file, fsync, rename, directory fsync).
pub fn write(pgdata: &Path, state: &RoleState) -> Result<()> {
    let mut text = serde_json::to_string_pretty(state).context("serializing the role")?;
    text.push('\n');
    crate::config::render::write_atomically(&pgdata.join(ROLE_FILE), &text)?;
    sync_dir(pgdata);
    Ok(())
}

/// The role file, or the role the data directory implies when there is none (a directory
/// with `standby.signal` is a standby, any other a primary of term 1), which is then written.
pub fn load_or_init(pgdata: &Path) -> Result<RoleState> {
    if let Some(state) = read(pgdata)? {
        return Ok(state);
    }
    let state = if pgdata.join("standby.signal").exists() {
        RoleState {
            role: PersistedRole::Replica,
            term: 1,
            upstream: None,
            promoting: false,
        }
    } else {
        RoleState::primary(1)
    };
    tracing::info!(
        role = state.role.as_str(),
        term = state.term,
        "no role file: recording the role the data directory implies"
    );
    write(pgdata, &state)?;
    Ok(state)
}

/// fsync a directory so a rename in it survives a crash (errors logged, not fatal).
pub fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "fsync of the directory failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(dir.path()).ok(), Some(None));
        let state = load_or_init(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(state, RoleState::primary(1));
        let replica = RoleState::replica(
            3,
            Upstream {
                host: "10.0.0.1".into(),
                port: 5432,
            },
        );
        write(dir.path(), &replica).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(read(dir.path()).ok().flatten(), Some(replica));
        std::fs::write(dir.path().join(ROLE_FILE), "{\"role\":\"boss\"}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(read(dir.path()).is_err());
    }
}
