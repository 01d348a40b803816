//! Demotion of a primary to a standby of a given primary (`POST /pg/demote`): CHECKPOINT,
//! optionally a named standby's confirmation that it receives (else nothing changes), fast
//! shutdown (so connected standbys receive everything up to the shutdown checkpoint), the
//! replica role, term and upstream persisted, and a restart as standby. The answer carries
//! the shutdown checkpoint's location; it is kept in `pgsteward.demote.json` so that a retry
//! (same term, same upstream) answers the same without restarting anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsteward_api::{ConfirmStandby, DemoteResponse, InstanceState};
use tokio::sync::oneshot;

use super::role::{self, PersistedRole, RoleState, Upstream};
use super::{rewind, RoleChangeError};
use crate::supervisor::shared::{AfterRoleChange, RoleChangeWork, Shared, SupervisorCommand};

/// The last demotion's answer (inside PGDATA).
pub const DEMOTE_FILE: &str = "pgsteward.demote.json";

/// The longest a demotion waits for a standby's confirmation.
const MAX_CONFIRM_WAIT: Duration = Duration::from_secs(600);
/// How often the standby's flush position is read meanwhile.
const CONFIRM_POLL: Duration = Duration::from_millis(20);

/// Demote this primary to a standby of `upstream` in `term`; with `confirm`, only once that
/// standby has confirmed the WAL written up to the CHECKPOINT.
pub async fn demote(
    shared: Arc<Shared>,
    term: u64,
    upstream: Upstream,
    confirm: Option<ConfirmStandby>,
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
        checkpoint_and_confirm(&shared, confirm.as_ref()).await?;
    } else if let Some(confirm) = &confirm {
        return Err(refused(
            confirm,
            format!(
                "postgres is not running (state {}), so {} cannot be checked",
                shared.state.current(),
                confirm.application_name
            ),
        ));
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

/// CHECKPOINT (it makes the shutdown checkpoint quick); with `confirm`, then wait until that
/// standby has flushed the WAL written up to here. A standby that does not confirm (stalled,
/// gone, or too slow) would hold the fast shutdown, and with it every write, until
/// `wal_sender_timeout`: the demotion is refused instead, with nothing changed.
async fn checkpoint_and_confirm(
    shared: &Shared,
    confirm: Option<&ConfirmStandby>,
) -> Result<(), RoleChangeError> {
    let client = match crate::pgconn::connect(&shared.target(), "postgres", Duration::from_secs(5))
        .await
    {
        Ok(client) => client,
        Err(e) => {
            let e = format!("{e:#}");
            tracing::warn!(error = %e, "could not connect for a CHECKPOINT before the demotion");
            return match confirm {
                None => Ok(()),
                Some(confirm) => Err(refused(
                    confirm,
                    format!("cannot check {}: {e}", confirm.application_name),
                )),
            };
        }
    };
    if let Err(e) = client.batch_execute("CHECKPOINT").await {
        tracing::warn!(error = %e, "CHECKPOINT before the demotion failed");
        // Without a fresh record, an idle standby that stopped receiving could "confirm" the
        // last WAL written and then hold the shutdown: refuse instead.
        if let Some(confirm) = confirm {
            return Err(refused(
                confirm,
                format!(
                    "the CHECKPOINT before the demotion failed ({e}), so {} cannot confirm a fresh position (a switchover with the confirmation off, switchover_confirm_timeout: 0s, does not need it)",
                    confirm.application_name
                ),
            ));
        }
    }
    let Some(confirm) = confirm else {
        return Ok(());
    };
    let started = Instant::now();
    match confirm_received(&client, confirm).await {
        Ok(written) => {
            tracing::info!(standby = %confirm.application_name, lsn = %written, elapsed_ms = started.elapsed().as_millis() as u64, "the standby confirmed the WAL before the demotion");
            Ok(())
        }
        Err(why) => Err(refused(confirm, why)),
    }
}

/// The demotion refused for `why`, logged.
fn refused(confirm: &ConfirmStandby, why: String) -> RoleChangeError {
    tracing::warn!(standby = %confirm.application_name, reason = %why, "demotion refused: the standby did not confirm");
    RoleChangeError::Conflict(format!("{why}: not demoting, this instance stays primary"))
}

/// Wait until the standby `confirm` names has flushed everything written so far; the
/// position it confirmed.
async fn confirm_received(
    client: &tokio_postgres::Client,
    confirm: &ConfirmStandby,
) -> Result<String, String> {
    let name = &confirm.application_name;
    let written: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| format!("reading the WAL position: {e}"))?
        .get(0);
    let wait = Duration::from_millis(confirm.timeout_ms).min(MAX_CONFIRM_WAIT);
    let deadline = Instant::now() + wait;
    loop {
        let rows = client
            .query(
                "SELECT flush_lsn::text, flush_lsn >= $1::text::pg_lsn \
                 FROM pg_stat_replication WHERE application_name = $2::text",
                &[&written, name],
            )
            .await
            .map_err(|e| format!("reading pg_stat_replication: {e}"))?;
        if rows
            .iter()
            .any(|r| r.get::<_, Option<bool>>(1) == Some(true))
        {
            return Ok(written);
        }
        if Instant::now() >= deadline {
            let flushed: Vec<String> = rows
                .iter()
                .map(|r| {
                    r.get::<_, Option<String>>(0)
                        .unwrap_or_else(|| "nothing".into())
                })
                .collect();
            let seen = if flushed.is_empty() {
                "it is not connected".to_owned()
            } else {
                format!("it has flushed {}", flushed.join(", "))
            };
            return Err(format!(
                "standby {name} has not confirmed the WAL up to {written} within {} ms ({seen})",
                wait.as_millis()
            ));
        }
        tokio::time::sleep(CONFIRM_POLL).await;
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
