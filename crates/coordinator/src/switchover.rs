//! Switchover (`POST /switchover {"to": NAME}`, `pgsteward-coordinator switchover --to`): the
//! candidate checked (a healthy streaming replica at most `switchover_max_lag_bytes` behind),
//! the next term persisted, the primary demoted to a standby of the candidate (checkpoint; the
//! candidate must confirm it within `switchover_confirm_timeout`, else the primary refuses and
//! nothing changes; fast shutdown: connected standbys receive everything up to the shutdown
//! checkpoint), the candidate watched until it has received that checkpoint, then promoted,
//! and the other standbys repointed. Zero loss by construction: the candidate holds every byte
//! the old primary wrote before it is promoted. If it never receives the checkpoint, the old primary
//! is promoted again with a newer term. Runs inside the coordinator loop, so no failover
//! decision is taken meanwhile.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use pgsteward_api::{ConfirmStandby, DemoteRequest, UpstreamAddress};

use crate::client::ClientError;
use crate::decide::{switchover_names, MemberRole, MemberView};
use crate::lsn::Lsn;
use crate::run::Coordinator;
use crate::state::{self, State};

/// `POST /switchover` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    pub to: String,
}

/// A completed switchover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchoverAnswer {
    pub term: u64,
    pub from: String,
    pub to: String,
    /// The old primary's shutdown checkpoint, received by the new primary before promotion.
    pub shutdown_checkpoint_lsn: String,
    /// From the demotion request to the promotion's answer.
    pub elapsed_ms: u128,
    /// Demotion, promotion and repointing, in words.
    pub outcome: String,
}

/// Why a switchover did not happen (each kind maps to an HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    #[error("no member named {0:?}")]
    UnknownMember(String),
    #[error("{0}")]
    NotEligible(String),
    #[error("{0}")]
    Failed(String),
}

impl SwitchoverError {
    pub fn status(&self) -> u16 {
        match self {
            SwitchoverError::UnknownMember(_) => 404,
            SwitchoverError::NotEligible(_) => 409,
            SwitchoverError::Failed(_) => 500,
        }
    }
}

/// How often the candidate's position is polled while waiting for the checkpoint.
const CATCH_UP_POLL: Duration = Duration::from_millis(20);

/// Checks that `to` can take over from the current primary, and is at most `max_lag` bytes
/// behind it: (primary, candidate).
fn choose<'a>(
    members: &'a [MemberView],
    to: &str,
    max_lag: u64,
) -> Result<(&'a MemberView, &'a MemberView), SwitchoverError> {
    let candidate = members
        .iter()
        .find(|m| m.name == to)
        .ok_or_else(|| SwitchoverError::UnknownMember(to.to_owned()))?;
    let healthy = |m: &MemberView| {
        m.reachable
            && m.unhealthy_for.is_none()
            && m.last.as_ref().is_some_and(|o| o.postgres_up && !o.fenced)
    };
    let primary = members
        .iter()
        .filter(|m| {
            m.last
                .as_ref()
                .is_some_and(|o| o.role == MemberRole::Primary && !o.fenced)
        })
        .max_by_key(|m| m.last.as_ref().map_or(0, |o| o.term))
        .filter(|p| healthy(p))
        .ok_or_else(|| {
            SwitchoverError::NotEligible(
                "no healthy primary: switchover needs one (a failed primary is failed over)".into(),
            )
        })?;
    if primary.name == to {
        return Err(SwitchoverError::NotEligible(format!(
            "{to} already is the primary"
        )));
    }
    let observed = candidate.last.as_ref();
    if !healthy(candidate) || observed.is_none_or(|o| o.role != MemberRole::Replica) {
        return Err(SwitchoverError::NotEligible(format!(
            "{to} is not a healthy replica ({})",
            candidate
                .last
                .as_ref()
                .map_or("never answered".to_owned(), |o| format!(
                    "reachable {}, role {:?}, postgres up {}, fenced {}",
                    candidate.reachable, o.role, o.postgres_up, o.fenced
                ))
        )));
    }
    if !observed.is_some_and(|o| o.streaming) {
        return Err(SwitchoverError::NotEligible(format!(
            "{to} does not stream from the primary: it could not receive the shutdown checkpoint"
        )));
    }
    check_lag(primary, candidate, max_lag)?;
    Ok((primary, candidate))
}

/// The message of a manager's JSON error body (`{"error": {"code", "message"}}`), else the
/// body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

/// Refuses a candidate that has received more than `max_lag` bytes less than the primary has
/// written, as both answered the poll just before: from the demotion on, writes wait until it
/// has received everything, or for the roll-back if it never does (a stalled WAL receiver
/// still reports "streaming"). Unknown positions are not refused: the roll-back covers them.
fn check_lag(
    primary: &MemberView,
    candidate: &MemberView,
    max_lag: u64,
) -> Result<(), SwitchoverError> {
    let written = primary.last.as_ref().and_then(|o| o.current_lsn);
    let received = candidate.last.as_ref().and_then(|o| o.received_lsn);
    let (Some(written), Some(received)) = (written, received) else {
        return Ok(());
    };
    let lag = written.0.saturating_sub(received.0);
    if lag <= max_lag {
        return Ok(());
    }
    Err(SwitchoverError::NotEligible(format!(
        "{to} is {lag} bytes ({mib:.1} MiB) behind {from} (received {received}, {from} at \
         {written}; switchover_max_lag_bytes {max_lag}): writes would stop until it caught up. \
         Retry once it has caught up; if its position does not move, its WAL receiver is stalled",
        to = candidate.name,
        from = primary.name,
        mib = lag as f64 / f64::from(1u32 << 20),
    )))
}

impl Coordinator {
    /// Switch the primary role over to `to`.
    pub async fn switchover(&mut self, to: &str) -> Result<SwitchoverAnswer, SwitchoverError> {
        let members = self.poll_now().await;
        let (primary, candidate) = choose(&members, to, self.config.switchover_max_lag_bytes)?;
        let (primary, candidate) = (primary.clone(), candidate.clone());
        let candidate_config = self
            .member(&candidate.name)
            .cloned()
            .ok_or_else(|| SwitchoverError::UnknownMember(to.to_owned()))?;
        let primary_config = self
            .member(&primary.name)
            .cloned()
            .ok_or_else(|| SwitchoverError::UnknownMember(primary.name.clone()))?;
        let (host, port) = candidate_config.postgres_address().ok_or_else(|| {
            SwitchoverError::NotEligible(format!(
                "member {to} has no `postgres: host:port` in the coordinator configuration"
            ))
        })?;
        let observed_term = members
            .iter()
            .filter_map(|m| m.last.as_ref().map(|o| o.term))
            .max()
            .unwrap_or(0);
        let term = self.state.term.max(observed_term) + 1;
        self.persist_term(term, Some(primary.name.clone()))
            .map_err(SwitchoverError::Failed)?;
        tracing::info!(from = %primary.name, to = %to, term, "switchover: demoting the primary");

        let started = Instant::now();
        let token = self.token(&primary_config);
        let request = DemoteRequest {
            term,
            primary: UpstreamAddress { host, port },
            confirm_standby: candidate
                .last
                .as_ref()
                .filter(|_| !self.config.switchover_confirm_timeout.is_zero())
                .map(|o| ConfirmStandby {
                    application_name: o.instance_name.clone(),
                    timeout_ms: self.config.switchover_confirm_timeout.as_millis() as u64,
                }),
        };
        let demoted = self
            .client
            .demote(
                &primary_config.url,
                token.as_deref(),
                &request,
                self.config.action_timeout,
            )
            .await
            .map_err(|e| match e {
                // Refused before anything was shut down: the primary stays as it was.
                ClientError::Status { status: 409, body } => {
                    tracing::warn!(primary = %primary.name, to = %to, reason = %body, "switchover refused by the primary");
                    SwitchoverError::NotEligible(format!(
                        "{} refused the demotion, nothing changed: {}",
                        primary.name,
                        error_message(&body)
                    ))
                }
                e => SwitchoverError::Failed(format!(
                    "demoting {} failed: {e}; the coordinator keeps watching it (a primary that \
                     stays down is failed over)",
                    primary.name
                )),
            })?;
        let checkpoint = demoted
            .shutdown_checkpoint_lsn
            .as_deref()
            .and_then(|l| l.parse::<Lsn>().ok())
            .ok_or_else(|| {
                SwitchoverError::Failed(format!(
                    "{} was demoted but reported no shutdown checkpoint: not promoting {to}",
                    primary.name
                ))
            })?;

        if let Err(why) = self.wait_received(&candidate_config.url, checkpoint).await {
            return Err(self.roll_back(&primary_config, to, &why).await);
        }
        let token = self.token(&candidate_config);
        let names = switchover_names(&members, &self.config.policy(), &primary.name, to);
        let promoted = self
            .client
            .promote(
                &candidate_config.url,
                token.as_deref(),
                term,
                (!names.is_empty()).then_some(names.as_str()),
                self.config.action_timeout,
            )
            .await
            .map_err(|e| {
                SwitchoverError::Failed(format!(
                    "{} is demoted but promoting {to} failed: {e}; with no primary the \
                     coordinator fails over to the most advanced replica",
                    primary.name
                ))
            })?;
        let elapsed_ms = started.elapsed().as_millis();
        self.state.primary = Some(to.to_owned());
        if let Err(e) = state::store(&self.config.state_file, &self.state) {
            tracing::error!(error = %format!("{e:#}"), "cannot persist the new primary");
        }
        self.shared.metrics.switchovers.inc();
        tracing::info!(from = %primary.name, to = %to, term, elapsed_ms = elapsed_ms as u64, checkpoint = %checkpoint, "switchover: promoted");
        let mut outcome = format!(
            "demoted {} (shutdown checkpoint {checkpoint}); promoted {to} with term {term}: {promoted}",
            primary.name
        );
        outcome.push_str(&self.repoint(to, term).await);
        Ok(SwitchoverAnswer {
            term,
            from: primary.name,
            to: to.to_owned(),
            shutdown_checkpoint_lsn: checkpoint.to_string(),
            elapsed_ms,
            outcome,
        })
    }

    /// Wait until the member at `url` has received WAL past `checkpoint`.
    async fn wait_received(&self, url: &str, checkpoint: Lsn) -> Result<(), String> {
        let deadline = Instant::now() + self.config.switchover_timeout;
        loop {
            let last = match self.client.status(url, self.config.request_timeout).await {
                Ok(status) => {
                    let received = status
                        .replication
                        .as_ref()
                        .and_then(|r| r.receiver.as_ref())
                        .and_then(|r| r.received_lsn.as_deref())
                        .and_then(|l| l.parse::<Lsn>().ok());
                    if received.is_some_and(|r| r > checkpoint) {
                        return Ok(());
                    }
                    format!(
                        "received {}",
                        received.map_or("nothing".to_owned(), |r| r.to_string())
                    )
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "the candidate did not receive the shutdown checkpoint {checkpoint} within {} ms ({last})",
                    self.config.switchover_timeout.as_millis()
                ));
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    /// Give the primary role back to the demoted primary (it holds every write) with a newer
    /// term; the candidate is re-admitted as its standby by the next rounds.
    async fn roll_back(
        &mut self,
        old: &crate::config::MemberConfig,
        to: &str,
        why: &str,
    ) -> SwitchoverError {
        let term = self.state.term + 1;
        tracing::warn!(member = %old.name, term, reason = %why, "switchover: rolling back");
        if let Err(e) = self.persist_term(term, Some(old.name.clone())) {
            return SwitchoverError::Failed(format!(
                "switchover to {to} abandoned ({why}); rolling back failed: {e}"
            ));
        }
        let token = self.token(old);
        match self
            .client
            .promote(
                &old.url,
                token.as_deref(),
                term,
                None,
                self.config.action_timeout,
            )
            .await
        {
            Ok(_) => SwitchoverError::Failed(format!(
                "switchover to {to} abandoned ({why}); {} is primary again with term {term}",
                old.name
            )),
            Err(e) => SwitchoverError::Failed(format!(
                "switchover to {to} abandoned ({why}); promoting {} back failed: {e}",
                old.name
            )),
        }
    }

    /// Persist `term` (and the primary) before anyone sees it (failovers and switchovers).
    pub(crate) fn persist_term(
        &mut self,
        term: u64,
        primary: Option<String>,
    ) -> Result<(), String> {
        let next = State {
            term,
            primary,
            ..self.state.clone()
        };
        state::store(&self.config.state_file, &next)
            .map_err(|e| format!("cannot persist term {term}: {e:#}"))?;
        self.state = next;
        self.shared
            .metrics
            .term
            .set(i64::try_from(term).unwrap_or(i64::MAX));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: MemberRole, streaming: bool) -> MemberView {
        let mut view = MemberView::for_test(name, role, 1);
        view.observed_mut().streaming = streaming;
        view
    }

    #[test]
    fn only_a_streaming_replica_of_a_healthy_primary_is_chosen() {
        let members = vec![
            member("a", MemberRole::Primary, false),
            member("b", MemberRole::Replica, true),
            member("c", MemberRole::Replica, false),
        ];
        let (p, c) = choose(&members, "b", MAX_LAG).unwrap();
        assert_eq!((p.name.as_str(), c.name.as_str()), ("a", "b"));
        assert_eq!(choose(&members, "x", MAX_LAG).unwrap_err().status(), 404);
        assert_eq!(choose(&members, "a", MAX_LAG).unwrap_err().status(), 409);
        assert_eq!(choose(&members, "c", MAX_LAG).unwrap_err().status(), 409);
        let mut down = members.clone();
        down[0].reachable = false;
        assert_eq!(choose(&down, "b", MAX_LAG).unwrap_err().status(), 409);
    }

    const MAX_LAG: u64 = 16 << 20;

    fn positions(written: Option<u64>, received: Option<u64>) -> Vec<MemberView> {
        let mut members = vec![
            member("a", MemberRole::Primary, false),
            member("b", MemberRole::Replica, true),
        ];
        members[0].last.as_mut().unwrap().current_lsn = written.map(Lsn);
        members[1].last.as_mut().unwrap().received_lsn = received.map(Lsn);
        members
    }

    #[test]
    fn a_candidate_further_behind_than_the_limit_is_refused() {
        let base = 0x3_0000_0000;
        // At the limit, or ahead of the primary's last answer (it kept writing): chosen.
        for received in [base - MAX_LAG, base, base + 4096] {
            let members = positions(Some(base), Some(received));
            assert!(choose(&members, "b", MAX_LAG).is_ok(), "{received:x}");
        }
        let members = positions(Some(base), Some(base - MAX_LAG - 1));
        let refused = choose(&members, "b", MAX_LAG).unwrap_err();
        assert_eq!(refused.status(), 409);
        let text = refused.to_string();
        assert!(
            text.contains("b is 16777217 bytes (16.0 MiB) behind a")
                && text.contains("received 2/FEFFFFFF, a at 3/0")
                && text.contains("switchover_max_lag_bytes 16777216"),
            "{text}"
        );
        // Unknown positions are left to the roll-back.
        for (written, received) in [(None, Some(0)), (Some(base), None)] {
            let members = positions(written, received);
            assert!(choose(&members, "b", MAX_LAG).is_ok());
        }
    }
}
