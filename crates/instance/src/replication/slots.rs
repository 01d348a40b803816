//! Dropping stale physical replication slots on the coordinator's word (`POST /pg/slots/drop`):
//! a demoted primary keeps the slots of its former standbys, and a primary keeps the slot of a
//! member removed from the cluster; inactive, they hold WAL until pg_wal fills. The
//! coordinator decides which names are stale; this only checks the term (a stale caller is
//! refused), refuses while a role change runs, and never drops a slot a WAL sender uses.

use std::sync::Arc;
use std::time::Duration;

use pgsteward_api::{is_valid_slot_name, SlotDropResponse};

use super::role;
use super::RoleChangeError;
use crate::supervisor::shared::Shared;

/// Most names one request may carry.
pub const MAX_SLOTS_PER_REQUEST: usize = 64;

/// Why a list of names is refused before anything is looked at.
pub fn validate(names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Err("no slot named: \"slots\" must list 1 to 64 slot names".into());
    }
    if names.len() > MAX_SLOTS_PER_REQUEST {
        return Err(format!(
            "{} slots named, at most {MAX_SLOTS_PER_REQUEST} per request",
            names.len()
        ));
    }
    match names.iter().find(|n| !is_valid_slot_name(n)) {
        Some(bad) => Err(format!(
            "{bad:?} is not a slot name (1 to 63 characters among a-z, 0-9 and _)"
        )),
        None => Ok(()),
    }
}

/// Drop every named physical slot that no WAL sender uses, on the instance of `term`.
pub async fn drop_inactive(
    shared: Arc<Shared>,
    term: u64,
    names: &[String],
) -> Result<SlotDropResponse, RoleChangeError> {
    validate(names).map_err(RoleChangeError::Invalid)?;
    // Never wait behind a role change (a re-clone takes minutes): the caller retries later.
    let Ok(_guard) = super::promote::ROLE_CHANGE.try_lock() else {
        return Err(RoleChangeError::Conflict(
            "a role change is in progress: nothing dropped, retry later".into(),
        ));
    };
    let failed = |e: anyhow::Error| RoleChangeError::Failed(format!("{e:#}"));
    let state = role::load_or_init(&shared.pgdata).map_err(failed)?;
    if term != state.term {
        return Err(RoleChangeError::Conflict(format!(
            "term {term} is not this instance's term {}: nothing dropped",
            state.term
        )));
    }
    let client = crate::pgconn::connect(&shared.target(), "postgres", Duration::from_secs(5))
        .await
        .map_err(|e| RoleChangeError::Conflict(format!("postgres is not reachable: {e:#}")))?;
    let mut answer = SlotDropResponse {
        term,
        ..SlotDropResponse::default()
    };
    let mut unique: Vec<&String> = names.iter().collect();
    unique.sort();
    unique.dedup();
    for name in unique {
        // One statement: no physical slot of that name is no row; a slot a WAL sender uses is
        // an error (OBJECT_IN_USE) and stays.
        let dropped = client
            .query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_type = 'physical' AND slot_name = $1",
                &[name],
            )
            .await;
        match dropped {
            Ok(rows) if rows.is_empty() => answer.missing.push(name.clone()),
            Ok(_) => {
                tracing::info!(slot = %name, term, "inactive replication slot dropped");
                answer.dropped.push(name.clone());
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                answer.active.push(name.clone());
            }
            // Dropped by someone else between the scan and the drop.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {
                answer.missing.push(name.clone());
            }
            Err(e) => {
                return Err(RoleChangeError::Failed(format!(
                    "dropping slot {name} failed: {e} (dropped before it: {:?})",
                    answer.dropped
                )))
            }
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_else() {
        assert!(validate(&[]).is_err());
        assert!(validate(&["b".into(), "pg_2".into()]).is_ok());
        let bad = validate(&["b".into(), "x'; DROP".into()]).unwrap_err();
        assert!(bad.contains("is not a slot name"), "{bad}");
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(validate(&many).unwrap_err().contains("at most 64"));
    }
}
