//! Repointing to a new primary (`POST /pg/follow`): postgres is stopped, pg_rewind runs
//! against the new primary (it rewinds a diverged data directory, e.g. the old primary after
//! a failover, and says "no rewind required" otherwise), the replica role, term and upstream
//! are persisted, and postgres starts as a standby of the new primary. When pg_rewind fails,
//! `replication.rewind_failure` decides: `fence` (postgres stays stopped, the instance is
//! fenced and status says why) or `reclone` (the data directory is emptied and cloned again
//! with pg_basebackup).

use std::sync::Arc;
use std::time::Duration;

use pgsteward_api::{FollowAction, FollowResponse, InstanceState};
use tokio::sync::oneshot;

use super::role::{self, PersistedRole, RoleState, Upstream};
use super::{basebackup, rewind, RoleChangeError};
use crate::config::replication::RewindFailure;
use crate::supervisor::reaper::Reaper;
use crate::supervisor::shared::{AfterRoleChange, RoleChangeWork, Shared, SupervisorCommand};

/// Make this instance a standby of `upstream` in `term`.
pub async fn follow(
    shared: Arc<Shared>,
    term: u64,
    upstream: Upstream,
) -> Result<FollowResponse, RoleChangeError> {
    let _guard = super::promote::ROLE_CHANGE.lock().await;
    let state = role::load_or_init(&shared.pgdata)
        .map_err(|e| RoleChangeError::Failed(format!("{e:#}")))?;
    let running = shared.state.current() == InstanceState::Running;
    match decide(&state, term, &upstream, running) {
        Decision::Refuse(message) => {
            tracing::warn!(requested_term = term, current_term = state.term, reason = %message, "follow refused");
            return Err(RoleChangeError::Conflict(message));
        }
        Decision::Retry => {
            tracing::info!(
                term,
                "follow retried: already a running standby of that primary"
            );
            return Ok(FollowResponse {
                term,
                action: FollowAction::None,
            });
        }
        Decision::Follow => {}
    }
    tracing::info!(term, upstream_host = %upstream.host, upstream_port = upstream.port, role = state.role.as_str(), "repointing to a new primary");
    let (tx, rx) = oneshot::channel();
    let work_shared = shared.clone();
    let work = RoleChangeWork(Box::new(move |reaper| {
        Box::pin(async move {
            let (result, after) = run(&work_shared, &reaper, term, &upstream).await;
            let _ = tx.send(result);
            after
        })
    }));
    shared
        .commands
        .send(SupervisorCommand::RoleChange(work))
        .await
        .map_err(|_| RoleChangeError::Conflict("the manager is shutting down".into()))?;
    let config = shared.config();
    let limit = config.shutdown.stop_delay
        + Duration::from_secs(600)
        + if config.replication.rewind_failure == RewindFailure::Reclone {
            config.bootstrap.basebackup.timeout
        } else {
            Duration::ZERO
        };
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(RoleChangeError::Conflict(
            "the manager is shutting down".into(),
        )),
        Err(_) => Err(RoleChangeError::Failed(format!(
            "no answer within {} s",
            limit.as_secs()
        ))),
    }
}

/// The work on the stopped data directory: its answer and what the supervisor does next.
async fn run(
    shared: &Shared,
    reaper: &Reaper,
    term: u64,
    upstream: &Upstream,
) -> (Result<FollowResponse, RoleChangeError>, AfterRoleChange) {
    let config = shared.config();
    let replica = RoleState::replica(term, upstream.clone());
    let rewound = rewind::rewind(reaper, &shared.bins, &config, &shared.pgdata, upstream).await;
    // Written whatever pg_rewind did (it may have copied the primary's role file): nothing
    // may start this directory as a primary again.
    if let Err(e) = role::write(&shared.pgdata, &replica) {
        let message = format!("recording the replica role failed: {e:#}");
        return (
            Err(RoleChangeError::Failed(message.clone())),
            fence_now(shared, &message),
        );
    }
    let action = match rewound {
        Ok(rewind::Rewind::NotNeeded) => FollowAction::Repointed,
        Ok(rewind::Rewind::Rewound) => FollowAction::Rewound,
        Err(e) => {
            let cause = format!("{e:#}");
            tracing::error!(error = %cause, policy = ?config.replication.rewind_failure, "pg_rewind failed");
            match config.replication.rewind_failure {
                RewindFailure::Fence => {
                    let message = format!(
                        "{cause}; the instance is fenced (replication.rewind_failure = fence): re-clone it, or retry POST /pg/follow"
                    );
                    return (
                        Err(RoleChangeError::Failed(message.clone())),
                        fence_now(shared, &message),
                    );
                }
                RewindFailure::Reclone => {
                    if let Err(e) = reclone(shared, reaper, upstream, &replica).await {
                        let message = format!(
                            "{cause}; the re-clone (replication.rewind_failure = reclone) failed too: {e:#}; the instance is fenced"
                        );
                        return (
                            Err(RoleChangeError::Failed(message.clone())),
                            fence_now(shared, &message),
                        );
                    }
                    FollowAction::Recloned
                }
            }
        }
    };
    rewind::ensure_slot(&config, upstream).await;
    tracing::info!(term, action = ?action, "following the new primary: starting as a standby");
    (Ok(FollowResponse { term, action }), AfterRoleChange::Start)
}

/// Fence at once (before the caller hears the answer, so that status already says so); the
/// supervisor repeats it when the work returns.
fn fence_now(shared: &Shared, message: &str) -> AfterRoleChange {
    if let Err(e) = super::fence::set_with_reason(&shared.pgdata, Some(message)) {
        tracing::error!(error = %format!("{e:#}"), "writing the fence marker failed");
    }
    shared.with_runtime(|r| r.last_error = Some(message.to_owned()));
    shared
        .state
        .transition(InstanceState::Fenced, "role change failed");
    AfterRoleChange::Fence(message.to_owned())
}

/// Empty the data directory and clone `upstream` into it.
async fn reclone(
    shared: &Shared,
    reaper: &Reaper,
    upstream: &Upstream,
    replica: &RoleState,
) -> anyhow::Result<()> {
    tracing::warn!(upstream_host = %upstream.host, upstream_port = upstream.port, "re-cloning the data directory from the new primary");
    let mut config = shared.config();
    config.bootstrap.basebackup.host = Some(upstream.host.clone());
    config.bootstrap.basebackup.port = upstream.port;
    basebackup::empty_dir(&shared.pgdata);
    basebackup::run(reaper, &shared.bins, &config, &shared.pgdata).await?;
    role::write(&shared.pgdata, replica)?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Follow,
    Retry,
    Refuse(String),
}

fn decide(state: &RoleState, term: u64, upstream: &Upstream, running: bool) -> Decision {
    if term < state.term {
        return Decision::Refuse(format!("stale term {term}: current term {}", state.term));
    }
    match state.role {
        PersistedRole::Primary if term == state.term => Decision::Refuse(format!(
            "this instance is the primary of term {term}: a primary to follow needs a greater term; current term {}",
            state.term
        )),
        PersistedRole::Replica
            if running && term == state.term && state.upstream.as_ref() == Some(upstream) =>
        {
            Decision::Retry
        }
        _ => Decision::Follow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_decide_follows() {
        let b = Upstream {
            host: "b".into(),
            port: 5432,
        };
        let c = Upstream {
            host: "c".into(),
            port: 5433,
        };
        let replica = RoleState::replica(3, b.clone());
        assert_eq!(decide(&replica, 3, &b, true), Decision::Retry);
        // Not running (fenced, crashed): the same request does the work again.
        assert_eq!(decide(&replica, 3, &b, false), Decision::Follow);
        assert_eq!(decide(&replica, 3, &c, true), Decision::Follow);
        assert_eq!(decide(&replica, 4, &b, true), Decision::Follow);
        assert!(
            matches!(decide(&replica, 2, &b, true), Decision::Refuse(m) if m.contains("current term 3"))
        );
        let primary = RoleState::primary(3);
        assert_eq!(decide(&primary, 4, &b, true), Decision::Follow);
        assert!(matches!(decide(&primary, 3, &b, true), Decision::Refuse(_)));
    }
}
