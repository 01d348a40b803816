//! `synchronous_standby_names` applied on the coordinator's word (`POST /pg/synchronous`):
//! validated (only `ANY k (...)` / `FIRST k (...)` with plain double-quoted names, or empty),
//! accepted only by the primary of that term, persisted in `pgsteward.synchronous.json` (so a
//! restarted primary never comes back asynchronous when it was told otherwise), rendered into
//! `pgsteward.replication.conf` and reloaded; answered only once postgres runs with them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pgsteward_api::SynchronousResponse;
use serde::{Deserialize, Serialize};

use super::role::{self, PersistedRole};
use super::{standby, RoleChangeError};
use crate::supervisor::shared::Shared;

/// The persisted value (inside PGDATA).
pub const SYNC_FILE: &str = "pgsteward.synchronous.json";

/// Contents of `SYNC_FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    pub term: u64,
    pub names: String,
}

/// The canonical form of `names`, or why it is refused.
pub fn validate(names: &str) -> Result<String, String> {
    let text = names.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let bad = |why: &str| {
        Err(format!(
            "synchronous standby names {names:?}: {why}; expected ANY k (\"a\", \"b\") or FIRST k (\"a\", \"b\")"
        ))
    };
    let (method, rest) = match text.split_once(char::is_whitespace) {
        Some((m, rest)) if m.eq_ignore_ascii_case("any") => ("ANY", rest.trim_start()),
        Some((m, rest)) if m.eq_ignore_ascii_case("first") => ("FIRST", rest.trim_start()),
        _ => return bad("it must start with ANY or FIRST"),
    };
    let Some((number, rest)) = rest.split_once('(') else {
        return bad("the list of names must be in parentheses");
    };
    let Ok(k) = number.trim().parse::<u32>() else {
        return bad("the number of standbys must be a positive integer");
    };
    if k == 0 {
        return bad("the number of standbys must be at least 1");
    }
    let Some(list) = rest.trim_end().strip_suffix(')') else {
        return bad("the list of names must end with )");
    };
    let mut quoted = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        let Some(name) = item.strip_prefix('"').and_then(|i| i.strip_suffix('"')) else {
            return bad("every name must be double-quoted");
        };
        let plain = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !plain {
            return bad("names hold 1 to 63 letters, digits, '_', '-' or '.'");
        }
        quoted.push(format!("\"{name}\""));
    }
    Ok(format!("{method} {k} ({})", quoted.join(", ")))
}

/// The persisted value, if any (unreadable: logged, treated as none).
pub fn load(pgdata: &Path) -> Option<SyncState> {
    let path = pgdata.join(SYNC_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the synchronous standby names");
            return None;
        }
    };
    match serde_json::from_str::<SyncState>(&text) {
        Ok(state) => match validate(&state.names) {
            Ok(names) => Some(SyncState {
                term: state.term,
                names,
            }),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "ignoring invalid synchronous standby names");
                None
            }
        },
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "ignoring an unreadable synchronous standby names file");
            None
        }
    }
}

/// Persist `names` (already validated) for the promotion to `term`.
pub fn store_for(pgdata: &Path, term: u64, names: &str) -> Result<()> {
    store(
        pgdata,
        &SyncState {
            term,
            names: names.to_owned(),
        },
    )
}

fn store(pgdata: &Path, state: &SyncState) -> Result<()> {
    let text = serde_json::to_string(state).context("encoding the synchronous standby names")?;
    crate::config::render::write_atomically(&pgdata.join(SYNC_FILE), &text)
}

/// Apply `names` on this primary of `term`.
pub async fn apply(
    shared: Arc<Shared>,
    term: u64,
    names: &str,
) -> Result<SynchronousResponse, RoleChangeError> {
    let names = validate(names).map_err(RoleChangeError::Invalid)?;
    let _guard = super::promote::ROLE_CHANGE.lock().await;
    let failed = |e: anyhow::Error| RoleChangeError::Failed(format!("{e:#}"));
    let state = role::load_or_init(&shared.pgdata).map_err(failed)?;
    if state.role != PersistedRole::Primary {
        return Err(RoleChangeError::Conflict(
            "this instance is a standby: synchronous standby names are set on the primary".into(),
        ));
    }
    if term != state.term {
        return Err(RoleChangeError::Conflict(format!(
            "term {term} is not this primary's term {}",
            state.term
        )));
    }
    let next = SyncState {
        term,
        names: names.clone(),
    };
    // Every step is idempotent, and the answer is 200 only once postgres runs with the names:
    // a call that stored them but could not reload (postgres still starting) is completed by
    // the coordinator's retry instead of being mistaken for one already in effect.
    let mut changed = false;
    if load(&shared.pgdata).as_ref() != Some(&next) {
        store(&shared.pgdata, &next).map_err(failed)?;
        changed = true;
    }
    changed |= standby::write(&shared.config(), &state, &shared.pgdata).map_err(failed)?;
    let client = crate::pgconn::connect(&shared.target(), "postgres", Duration::from_secs(5))
        .await
        .map_err(failed)?;
    if in_effect(&client).await.map_err(failed)? != names {
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(|e| RoleChangeError::Failed(format!("pg_reload_conf: {e}")))?;
        changed = true;
        wait_in_effect(&client, &names).await.map_err(failed)?;
    }
    if changed {
        tracing::info!(term, names = %names, "synchronous standby names applied");
    }
    Ok(SynchronousResponse {
        term,
        names,
        changed,
    })
}

/// How long a reload may take to reach this session.
const RELOAD_DEADLINE: Duration = Duration::from_secs(5);

/// `synchronous_standby_names` as this session sees it.
async fn in_effect(client: &tokio_postgres::Client) -> Result<String> {
    let row = client
        .query_one("SELECT current_setting('synchronous_standby_names')", &[])
        .await
        .context("reading synchronous_standby_names")?;
    Ok(row.get(0))
}

/// Wait until the reload reached this session (the postmaster signals every backend once it
/// has re-read the files).
pub(crate) async fn wait_in_effect(client: &tokio_postgres::Client, names: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
    loop {
        let current = in_effect(client).await?;
        if current == names {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "postgres still has synchronous_standby_names = {current:?} {} s after the reload (wanted {names:?}); check its log for a configuration error",
                RELOAD_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_quorum_and_priority_lists_pass() {
        assert_eq!(validate("").unwrap(), "");
        assert_eq!(
            validate("any 1 (\"test-1\",\"b\")").unwrap(),
            "ANY 1 (\"test-1\", \"b\")"
        );
        assert_eq!(
            validate(" FIRST 2 ( \"a\" , \"b.c\" ) ").unwrap(),
            "FIRST 2 (\"a\", \"b.c\")"
        );
        for bad in [
            "*",
            "ANY (\"a\")",
            "ANY 0 (\"a\")",
            "ANY 1 (a)",
            "ANY 1 (\"a\"",
            "ANY 1 (\"a'; DROP\")",
            "ANY 1 (\"a\")\nfsync = off",
            "ANY 1 (\"\")",
            "SOME 1 (\"a\")",
            "ANY 1 (\"a\\\"b\")",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }
}
