//! Demotion of a primary to a standby of a given primary (`POST /pg/demote`): CHECKPOINT, fast
//! shutdown (so connected standbys receive everything up to the shutdown checkpoint), the
//! replica role, term and upstream persisted, and a restart as standby. The answer carries
//! the shutdown checkpoint's location; it is kept in `pgsteward.demote.json` so that a retry
//! (same term, same upstream) answers the same without restarting anything.

use std::sync::Arc;
use std::time::Duration;

use pgsteward_api::{DemoteResponse, InstanceState};
use tokio::sync::oneshot;

use super::role::{self, PersistedRole, RoleState, Upstream};
use super::{rewind, RoleChangeError};
use crate::supervisor::shared::{AfterRoleChange, RoleChangeWork, Shared, SupervisorCommand};

/// The last demotion's answer (inside PGDATA).
pub const DEMOTE_FILE: &str = "pgsteward.demote.json";

/// Demote this primary to a standby of `upstream` in `term`.
pub async fn demote(
    shared: Arc<Shared>,
    term: u64,
    upstream: Upstream,
) -> Result<DemoteResponse, RoleChangeError> {
    let _guard = super::promote::ROLE_CHANGE.lock().await;
    let failed = |e: anyhow::Error| RoleChangeError::Failed(format!("{e:#}"));
    let state = role::load_or_init(&shared.pgdata).map_err(failed)?;
    match decide(&state, term, &upstream) {
        Decision::Refuse(message) => {
            tracing::warn!(requested_term = term, current_term = state.term, reason = %message, "demotion refused");
            return Err(RoleChangeError::Conflict(message));
        }
        Decision::Retry => {
            tracing::info!(term, "demotion retried: already a standby of that primary");
            let mut previous = read_answer(&shared.pgdata).unwrap_or(DemoteResponse {
                term,
                changed: false,
                shutdown_checkpoint_lsn: None,
                timeline: None,
            });
            previous.changed = false;
            return Ok(previous);
        }
        Decision::Demote => {}
    }
    tracing::info!(term, upstream_host = %upstream.host, upstream_port = upstream.port, "demoting this primary");
    if shared.state.current() == InstanceState::Running {
        // A checkpoint now makes the shutdown checkpoint quick.
        match crate::pgconn::connect(&shared.target(), "postgres", Duration::from_secs(5)).await {
            Ok(client) => {
                if let Err(e) = client.batch_execute("CHECKPOINT").await {
                    tracing::warn!(error = %e, "CHECKPOINT before the demotion failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not connect for a CHECKPOINT before the demotion")
            }
        }
    }
    let (tx, rx) = oneshot::channel();
    let work_shared = shared.clone();
    let work = RoleChangeWork(Box::new(move |reaper| {
        Box::pin(async move {
            let shared = work_shared;
            let result = async {
                let facts = rewind::controldata(&reaper, &shared.bins, &shared.pgdata).await?;
                if !facts.state.starts_with("shut down") {
                    tracing::warn!(state = %facts.state, "postgres did not shut down cleanly before the demotion");
                }
                role::write(&shared.pgdata, &RoleState::replica(term, upstream.clone()))?;
                let answer = DemoteResponse {
                    term,
                    changed: true,
                    shutdown_checkpoint_lsn: facts.checkpoint_lsn,
                    timeline: facts.timeline,
                };
                write_answer(&shared.pgdata, &answer);
                rewind::ensure_slot(&shared.config(), &upstream).await;
                tracing::info!(term, checkpoint_lsn = ?answer.shutdown_checkpoint_lsn, timeline = ?answer.timeline, "demoted: starting as a standby");
                anyhow::Ok(answer)
            }
            .await;
            // Whatever happened, the role file decides how postgres starts: a failure before
            // it was written restarts the primary as it was.
            let _ = tx.send(result.map_err(|e| format!("{e:#}")));
            AfterRoleChange::Start
        })
    }));
    shared
        .commands
        .send(SupervisorCommand::RoleChange(work))
        .await
        .map_err(|_| RoleChangeError::Conflict("the manager is shutting down".into()))?;
    let limit = shared.config().shutdown.stop_delay + Duration::from_secs(120);
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(message))) => Err(RoleChangeError::Failed(message)),
        Ok(Err(_)) => Err(RoleChangeError::Conflict(
            "the manager is shutting down".into(),
        )),
        Err(_) => Err(RoleChangeError::Failed(format!(
            "no answer within {} s",
            limit.as_secs()
        ))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Demote,
    Retry,
    Refuse(String),
}

fn decide(state: &RoleState, term: u64, upstream: &Upstream) -> Decision {
    if term < state.term {
        return Decision::Refuse(format!("stale term {term}: current term {}", state.term));
    }
    match state.role {
        PersistedRole::Primary => Decision::Demote,
        PersistedRole::Replica
            if term == state.term && state.upstream.as_ref() == Some(upstream) =>
        {
            Decision::Retry
        }
        PersistedRole::Replica => Decision::Refuse(format!(
            "this instance is already a standby (term {}); use POST /pg/follow to repoint it",
            state.term
        )),
    }
}

fn read_answer(pgdata: &std::path::Path) -> Option<DemoteResponse> {
    let text = std::fs::read_to_string(pgdata.join(DEMOTE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_answer(pgdata: &std::path::Path, answer: &DemoteResponse) {
    let result = serde_json::to_string(answer)
        .map_err(anyhow::Error::from)
        .and_then(|text| crate::config::render::write_atomically(&pgdata.join(DEMOTE_FILE), &text));
    if let Err(e) = result {
        tracing::warn!(error = %format!("{e:#}"), "could not record the demotion's answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_decide_demotions() {
        let b = Upstream {
            host: "b".into(),
            port: 5432,
        };
        let c = Upstream {
            host: "c".into(),
            port: 5432,
        };
        let primary = RoleState::primary(2);
        assert_eq!(decide(&primary, 2, &b), Decision::Demote);
        assert_eq!(decide(&primary, 3, &b), Decision::Demote);
        assert!(
            matches!(decide(&primary, 1, &b), Decision::Refuse(m) if m.contains("current term 2"))
        );
        let replica = RoleState::replica(3, b.clone());
        assert_eq!(decide(&replica, 3, &b), Decision::Retry);
        assert!(matches!(decide(&replica, 3, &c), Decision::Refuse(m) if m.contains("/pg/follow")));
        assert!(matches!(decide(&replica, 4, &b), Decision::Refuse(_)));
    }
}
