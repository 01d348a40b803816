//! Promotion of a standby to primary of a new term (`POST /pg/promote`): checks the term
//! against the persisted one, records the new term before promoting, runs
//! `pg_promote(wait => true)` and a CHECKPOINT, then persists the primary role. A retry with
//! the term this instance was promoted in (or was being promoted in) succeeds without a
//! second promotion.

use std::time::Duration;

use anyhow::Context;
use pgsteward_api::{InstanceState, PromoteResponse};
use thiserror::Error;
use tokio_postgres::Client;

use super::role::{self, PersistedRole, RoleState};
use super::standby;
use crate::pgconn;
use crate::supervisor::shared::Shared;

/// How long postgres may take to finish a promotion.
const PROMOTE_WAIT_SECONDS: i32 = 60;

/// Why a promotion was refused or failed.
#[derive(Debug, Error)]
pub enum PromoteError {
    /// Wrong role, stale term, postgres not running: nothing was changed.
    #[error("{message}")]
    Conflict { message: String, current_term: u64 },
    /// The request is invalid (synchronous standby names): nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// Serialises role changes (promote, demote, follow).
pub(crate) static ROLE_CHANGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Promote this instance to primary of `term`.
/// With `names`, `synchronous_standby_names` is persisted for `term` and in effect before the
/// promotion, so that no commit of the new primary is acknowledged without a standby.
pub async fn promote(
    shared: &Shared,
    term: u64,
    names: Option<&str>,
) -> Result<PromoteResponse, PromoteError> {
    let names = names
        .map(super::synchronous::validate)
        .transpose()
        .map_err(PromoteError::Invalid)?;
    let _guard = ROLE_CHANGE.lock().await;
    let failed = |e: anyhow::Error| PromoteError::Failed(format!("{e:#}"));
    let mut state = role::load_or_init(&shared.pgdata).map_err(failed)?;
    let conflict = |message: String, current_term: u64| {
        tracing::warn!(requested_term = term, current_term, reason = %message, "promotion refused");
        PromoteError::Conflict {
            message,
            current_term,
        }
    };
    match decide(&state, term) {
        Decision::AlreadyPrimary => {
            let client = connect(shared).await.map_err(failed)?;
            let timeline = checkpoint_timeline(&client).await.map_err(failed)?;
            tracing::info!(
                term,
                timeline,
                "promotion retried: already primary of this term"
            );
            return Ok(PromoteResponse {
                term,
                timeline,
                promoted: false,
            });
        }
        Decision::Refuse(message) => return Err(conflict(message, state.term)),
        Decision::Promote => {}
    }
    let current = shared.state.current();
    if current != InstanceState::Running {
        return Err(conflict(
            format!(
                "postgres is not running (state {current}); current term {}",
                state.term
            ),
            state.term,
        ));
    }
    let client = connect(shared).await.map_err(failed)?;
    state.term = term;
    state.promoting = true;
    role::write(&shared.pgdata, &state).map_err(failed)?;
    if let Some(names) = names {
        super::synchronous::store_for(&shared.pgdata, term, &names).map_err(failed)?;
        // Rendered while still a standby (where it has no effect), reloaded and seen in effect
        // before the promotion, so the first commit of the new primary already waits for its
        // standbys.
        if standby::write(&shared.config(), &state, &shared.pgdata).map_err(failed)? {
            client
                .batch_execute("SELECT pg_reload_conf()")
                .await
                .context("reloading the synchronous standby names")
                .map_err(failed)?;
        }
        super::synchronous::wait_in_effect(&client, &names)
            .await
            .map_err(failed)?;
    }
    tracing::info!(term, "promoting this standby");
    let started = std::time::Instant::now();
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .context("reading the recovery state")
        .map_err(failed)?
        .get(0);
    if in_recovery {
        let done: bool = client
            .query_one("SELECT pg_promote(true, $1)", &[&PROMOTE_WAIT_SECONDS])
            .await
            .context("pg_promote")
            .map_err(failed)?
            .get(0);
        if !done {
            return Err(PromoteError::Failed(format!(
                "postgres did not finish the promotion within {PROMOTE_WAIT_SECONDS} s; retry with the same term"
            )));
        }
    }
    let promoted_ms = started.elapsed().as_millis() as u64;
    // Before the checkpoint, which may remove them: what this standby received of the old
    // primary's WAL and the archive lacks is archived now (`inherited_wal`).
    if let Some(archiver) = shared.archiver.get() {
        super::inherited_wal::keep_unarchived(&shared.pgdata, archiver.wal()).await;
    }
    client
        .batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT after the promotion")
        .map_err(failed)?;
    let timeline = checkpoint_timeline(&client).await.map_err(failed)?;
    let state = RoleState::primary(term);
    role::write(&shared.pgdata, &state).map_err(failed)?;
    match standby::write(&shared.config(), &state, &shared.pgdata) {
        Ok(true) => {
            if let Err(e) = client.batch_execute("SELECT pg_reload_conf()").await {
                tracing::warn!(error = %e, "reloading after clearing the standby settings failed");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "clearing the standby settings failed"),
    }
    tracing::info!(
        term,
        timeline,
        promote_ms = promoted_ms,
        total_ms = started.elapsed().as_millis() as u64,
        "promoted: this instance is the primary"
    );
    Ok(PromoteResponse {
        term,
        timeline,
        promoted: true,
    })
}

/// What a promotion request for `term` does to an instance in `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Primary of exactly this term: answer as a retry, change nothing.
    AlreadyPrimary,
    /// Refuse with this message (it names the current term).
    Refuse(String),
    /// Promote (a replica and a greater term, or the term of an unfinished promotion).
    Promote,
}

fn decide(state: &RoleState, term: u64) -> Decision {
    match state.role {
        PersistedRole::Primary if term == state.term => Decision::AlreadyPrimary,
        PersistedRole::Primary => Decision::Refuse(format!(
            "this instance is already a primary (term {}); current term {}",
            state.term, state.term
        )),
        PersistedRole::Replica if term < state.term || (term == state.term && !state.promoting) => {
            Decision::Refuse(format!(
                "stale term {term}: current term {}; a promotion needs a greater term",
                state.term
            ))
        }
        PersistedRole::Replica => Decision::Promote,
    }
}

async fn connect(shared: &Shared) -> anyhow::Result<Client> {
    pgconn::connect(&shared.target(), "postgres", Duration::from_secs(5)).await
}

/// Timeline of the latest checkpoint.
async fn checkpoint_timeline(client: &Client) -> anyhow::Result<u32> {
    let timeline: i32 = client
        .query_one("SELECT timeline_id::int4 FROM pg_control_checkpoint()", &[])
        .await
        .context("reading the timeline")?
        .get(0);
    u32::try_from(timeline).context("negative timeline")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::role::Upstream;

    #[test]
    fn terms_decide_promotions() {
        let upstream = Upstream {
            host: "h".into(),
            port: 5432,
        };
        let replica = RoleState::replica(3, upstream);
        assert_eq!(decide(&replica, 4), Decision::Promote);
        assert_eq!(decide(&replica, 9), Decision::Promote);
        for stale in [0, 2, 3] {
            match decide(&replica, stale) {
                Decision::Refuse(m) => assert!(m.contains("current term 3"), "{m}"),
                other => panic!("term {stale}: {other:?}"),
            }
        }
        // A promotion to 3 that was recorded but not finished may be retried with 3.
        let unfinished = RoleState {
            promoting: true,
            ..replica
        };
        assert_eq!(decide(&unfinished, 3), Decision::Promote);
        assert!(matches!(decide(&unfinished, 2), Decision::Refuse(_)));
        let primary = RoleState::primary(3);
        assert_eq!(decide(&primary, 3), Decision::AlreadyPrimary);
        for other in [2, 4] {
            match decide(&primary, other) {
                Decision::Refuse(m) => assert!(m.contains("already a primary (term 3)"), "{m}"),
                d => panic!("term {other}: {d:?}"),
            }
        }
    }
}
