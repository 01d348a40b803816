//! The coordinator's persisted state: the highest term it handed out, written atomically
//! (temporary file, fsync, rename, directory fsync) before the promotion that uses it, and the
//! replication slot of every member it has seen (so the slot of a member removed from the
//! configuration is still known and can be dropped).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Contents of the state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub term: u64,
    /// Primary chosen by the last failover.
    pub primary: Option<String>,
    /// Member name → its replication slot (from its observed `instance_name`), for every
    /// member observed since this field exists, removed members included.
    #[serde(default)]
    pub member_slots: std::collections::BTreeMap<String, String>,
}

/// Read the state (default, term 0, when the file does not exist).
pub fn load(path: &Path) -> Result<State> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("parsing the state file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("reading the state file {}", path.display())),
    }
}

/// Write the state durably.
pub fn store(path: &Path, state: &State) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(state).context("encoding the state")?;
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("coord-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(load(&path).unwrap(), State::default());
        let state = State {
            term: 4,
            primary: Some("b".into()),
            member_slots: [("c".to_owned(), "pg_3".to_owned())].into(),
        };
        store(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        // A state file written before member_slots existed still loads.
        std::fs::write(&path, r#"{"term": 2, "primary": "a"}"#).unwrap();
        assert_eq!(load(&path).unwrap().member_slots.len(), 0);
        std::fs::write(&path, "not json").unwrap();
        assert!(load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
