//! The HA monitor (`ha.coordinator_url` set): every `ha.check_interval` (and at once on a
//! state change) it asks the coordinator for its view of the cluster and the peers whether
//! they answer, then tells the supervisor loop what follows for a primary:
//!
//! - `awaiting_role` (a former primary at start, or after isolation): start once the
//!   coordinator names this instance the primary of its term; stay fenced once it names a
//!   newer primary (the coordinator re-admits it as a standby).
//! - running primary: fenced at once when a newer primary exists (invariant 2); stopped and
//!   `awaiting_role` when neither the coordinator nor any peer answered for
//!   `ha.isolation_timeout` (self-fencing: an isolated primary stops taking writes).
//!
//! Findings go to `/pg/status` (`ha`) and to the `<ns>_ha_*` metrics.

pub mod metrics;
pub mod probe;
pub mod verdict;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgsteward_api::{HaStatus, InstanceState};
use tokio::time::Instant;

use crate::replication::role::{self, PersistedRole};
use crate::supervisor::shared::{HaCommand, Shared, SupervisorCommand};
use probe::{Checked, Prober};
use verdict::Verdict;

/// Start the monitor (it idles while `ha.coordinator_url` is unset).
pub fn spawn(shared: Arc<Shared>) {
    tokio::spawn(async move { Monitor::new(shared).run().await });
}

struct Monitor {
    shared: Arc<Shared>,
    /// The client, built for the `ha.ca_file` it was last asked for (None: building it
    /// failed and there was no earlier one).
    prober: (Option<PathBuf>, Option<Prober>),
    /// Last time the coordinator or a peer answered, or postgres was not running (silence
    /// only counts while postgres runs); the monitor's start before the first check.
    last_contact: Instant,
}

/// The HA checks' client trusting `ca_file` (None, logged, when it cannot be built).
fn build_prober(ca_file: Option<&PathBuf>) -> Option<Prober> {
    match Prober::new(Duration::from_millis(500), ca_file.map(PathBuf::as_path)) {
        Ok(prober) => Some(prober),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot build the HA checks' HTTP client (ha.ca_file); the previous one, if any, stays");
            None
        }
    }
}

impl Monitor {
    fn new(shared: Arc<Shared>) -> Self {
        let ca_file = shared.config().ha.ca_file;
        let prober = build_prober(ca_file.as_ref());
        Monitor {
            shared,
            prober: (ca_file, prober),
            last_contact: Instant::now(),
        }
    }

    async fn run(mut self) {
        let mut states = self.shared.state.subscribe();
        loop {
            let config = self.shared.config();
            let ha = &config.ha;
            let interval = ha.check_interval.max(Duration::from_millis(50));
            match &ha.coordinator_url {
                Some(url) => self.round(url, ha, &config.instance_name).await,
                None => *self.shared.ha.lock().unwrap_or_else(|p| p.into_inner()) = None,
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                changed = states.changed() => if changed.is_err() { return },
            }
        }
    }

    /// The client for `ca_file`, rebuilt when it changed (a reload); a failed build is
    /// logged once and the previous client kept.
    fn prober(&mut self, ca_file: Option<&PathBuf>) -> Option<&Prober> {
        let (built_for, prober) = &mut self.prober;
        if built_for.as_ref() != ca_file {
            *built_for = ca_file.cloned();
            if let Some(new) = build_prober(ca_file) {
                *prober = Some(new);
            }
        }
        self.prober.1.as_ref()
    }

    async fn round(&mut self, url: &str, ha: &crate::config::ha::HaConfig, me: &str) {
        let checked = match self.prober(ha.ca_file.as_ref()) {
            Some(prober) => prober.check(url, &ha.peers, ha.request_timeout).await,
            None => Checked {
                coordinator: Err("no HTTP client (see the error about ha.ca_file)".into()),
                reachable_peers: 0,
                peer_error: None,
            },
        };
        let now = Instant::now();
        let state = self.shared.state.current();
        if checked.contact() || !is_live(state) {
            self.last_contact = now;
        }
        let persisted = role::read(&self.shared.pgdata).ok().flatten();
        let primary_term = match &persisted {
            Some(s) if s.role == PersistedRole::Primary && !s.promoting => Some(s.term),
            Some(_) => None,
            // No role file yet: a directory without standby.signal starts as primary of 1.
            None => (!self.shared.pgdata.join("standby.signal").exists()).then_some(1),
        };
        let mut waiting_for = None;
        let command = match (state, primary_term) {
            (InstanceState::AwaitingRole, Some(term)) => match &checked.coordinator {
                Ok(view) => match verdict::judge(view, me, term) {
                    Verdict::Confirmed { term } => Some(HaCommand::Confirmed { term }),
                    Verdict::Superseded(reason) => Some(HaCommand::Superseded { reason }),
                    Verdict::Undecided(why) => {
                        waiting_for = Some(why);
                        None
                    }
                },
                Err(e) => {
                    waiting_for = Some(format!("the coordinator does not answer: {e}"));
                    None
                }
            },
            (InstanceState::AwaitingRole, None) => {
                waiting_for = Some("the role file no longer says primary".into());
                None
            }
            (s, Some(term)) if is_live(s) => self.primary_check(&checked, ha, url, me, term, now),
            _ => None,
        };
        self.publish(url, ha, &checked, now, waiting_for);
        if let Some(command) = command {
            if let Err(e) = self
                .shared
                .commands
                .send(SupervisorCommand::Ha(command))
                .await
            {
                tracing::error!(error = %e, "the supervisor loop is gone");
            }
        }
    }

    /// A live primary: superseded, isolated, or fine.
    fn primary_check(
        &mut self,
        checked: &Checked,
        ha: &crate::config::ha::HaConfig,
        url: &str,
        me: &str,
        term: u64,
        now: Instant,
    ) -> Option<HaCommand> {
        if let Ok(view) = &checked.coordinator {
            if let Verdict::Superseded(reason) = verdict::judge(view, me, term) {
                return Some(HaCommand::Superseded { reason });
            }
        }
        let silent = now.saturating_duration_since(self.last_contact);
        if ha.isolation_timeout.is_zero() || checked.contact() || silent < ha.isolation_timeout {
            return None;
        }
        let coordinator = checked
            .coordinator
            .as_ref()
            .err()
            .cloned()
            .unwrap_or_default();
        let peers = if ha.peers.is_empty() {
            "no peers configured".to_owned()
        } else {
            format!(
                "none of the {} peers answered ({})",
                ha.peers.len(),
                checked.peer_error.as_deref().unwrap_or("?")
            )
        };
        Some(HaCommand::AwaitRole {
            reason: format!(
                "isolated for {} ms (ha.isolation_timeout {} ms): the coordinator {url} does not answer ({coordinator}) and {peers}; postgres was stopped so that it takes no writes the new primary would not have",
                silent.as_millis(),
                ha.isolation_timeout.as_millis()
            ),
        })
    }

    fn publish(
        &self,
        url: &str,
        ha: &crate::config::ha::HaConfig,
        checked: &Checked,
        now: Instant,
        waiting_for: Option<String>,
    ) {
        let since = now
            .saturating_duration_since(self.last_contact)
            .as_secs_f64();
        let since = if checked.contact() { 0.0 } else { since };
        let metrics = &self.shared.metrics.ha;
        metrics
            .coordinator_reachable
            .set(i64::from(checked.coordinator.is_ok()));
        metrics
            .reachable_peers
            .set(i64::try_from(checked.reachable_peers).unwrap_or(i64::MAX));
        metrics.seconds_since_contact.set(since);
        let status = HaStatus {
            coordinator_url: url.to_owned(),
            peers: ha.peers.len(),
            coordinator_reachable: checked.coordinator.is_ok(),
            coordinator_error: checked.coordinator.as_ref().err().cloned(),
            reachable_peers: checked.reachable_peers,
            peer_error: checked.peer_error.clone(),
            seconds_since_contact: Some(since),
            isolation_timeout_seconds: ha.isolation_timeout.as_secs_f64(),
            self_fences: metrics.self_fences.get(),
            waiting_for,
        };
        *self.shared.ha.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }
}

/// States in which postgres runs (or is about to) as this role.
fn is_live(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Running | InstanceState::Starting | InstanceState::CrashBackoff
    )
}
