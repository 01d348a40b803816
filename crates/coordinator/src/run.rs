//! The coordinator loop: poll every member's `/pg/status` concurrently, run the decision,
//! log it with its inputs, and act (persist the next term, fence the old primary when it
//! answers, promote the candidate, repoint the others when their managers can follow).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::client::Client;
use crate::config::{read_token, Config, MemberConfig};
use crate::decide::{decide, Action, Decision, Input};
use crate::metrics::Metrics;
use crate::observe::{MemberReport, Tracker};
use crate::state::{self, State};

/// The last decision as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub at_unix_ms: u128,
    pub decision: Decision,
    /// Outcome of the action (promotion answer or error), when one was taken.
    pub outcome: Option<String>,
}

/// `GET /status` body.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub term: u64,
    pub primary: Option<String>,
    pub synchronous_standby_names: String,
    pub failovers: u64,
    pub members: Vec<MemberReport>,
    pub last_decision: Option<DecisionRecord>,
    /// Last decision that was not "none" (a failover or a refusal).
    pub last_action: Option<DecisionRecord>,
}

/// State shared between the loop and the API.
pub struct Shared {
    report: Mutex<StatusReport>,
    pub metrics: Metrics,
}

impl Shared {
    pub fn new(metrics: Metrics, term: u64) -> Self {
        Shared {
            report: Mutex::new(StatusReport {
                term,
                primary: None,
                synchronous_standby_names: String::new(),
                failovers: 0,
                members: Vec::new(),
                last_decision: None,
                last_action: None,
            }),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, StatusReport> {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> StatusReport {
        self.lock().clone()
    }
}

/// Runs the loop until the task is dropped.
pub struct Coordinator {
    config: Config,
    client: Client,
    shared: Arc<Shared>,
    state: State,
    trackers: Vec<Tracker>,
    started: Instant,
    previous: Option<(String, String)>,
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl Coordinator {
    /// Load the persisted state and prepare the loop.
    pub fn new(config: Config) -> Result<(Self, Arc<Shared>)> {
        let state = state::load(&config.state_file)?;
        let metrics = Metrics::new().context("registering metrics")?;
        metrics
            .term
            .set(i64::try_from(state.term).unwrap_or(i64::MAX));
        let shared = Arc::new(Shared::new(metrics, state.term));
        let trackers = vec![Tracker::default(); config.members.len()];
        Ok((
            Coordinator {
                config,
                client: Client::new(),
                shared: shared.clone(),
                state,
                trackers,
                started: Instant::now(),
                previous: None,
            },
            shared,
        ))
    }

    /// Poll, decide and act every `poll_interval`, forever.
    pub async fn run(mut self) {
        let mut interval = tokio::time::interval(self.config.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.round().await;
        }
    }

    /// One round: poll every member concurrently, decide, act.
    pub async fn round(&mut self) {
        let began = Instant::now();
        let mut polls = JoinSet::new();
        for (i, member) in self.config.members.iter().enumerate() {
            let client = self.client.clone();
            let url = member.url.clone();
            let timeout = self.config.request_timeout;
            polls.spawn(async move {
                let result = client
                    .status(&url, timeout)
                    .await
                    .map_err(|e| e.to_string());
                (i, result)
            });
        }
        let mut results: Vec<_> = Vec::with_capacity(self.trackers.len());
        while let Some(joined) = polls.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                Err(e) => tracing::error!(error = %e, "a status poll task failed"),
            }
        }
        let now = Instant::now();
        for (i, result) in results {
            if let Some(tracker) = self.trackers.get_mut(i) {
                tracker.record(now, result);
            }
        }
        let input = Input {
            term: self.state.term,
            uptime: now.saturating_duration_since(self.started),
            members: self
                .config
                .members
                .iter()
                .zip(&self.trackers)
                .map(|(m, t)| t.view(&m.name, now))
                .collect(),
        };
        let decision = decide(&input, &self.config.policy());
        self.shared
            .metrics
            .decision_seconds
            .observe(began.elapsed().as_secs_f64());
        self.log(&input, &decision);
        let outcome = match &decision.action {
            Action::Failover {
                candidate,
                term,
                fence,
                ..
            } => Some(self.failover(candidate, *term, fence).await),
            Action::Fence { members, .. } => {
                let mut outcome = String::new();
                for name in members {
                    outcome.push_str(&self.fence(name).await);
                }
                Some(outcome.trim_start_matches("; ").to_owned())
            }
            Action::Refuse { .. } => {
                self.shared.metrics.refusals.inc();
                None
            }
            Action::None { .. } => None,
        };
        self.publish(decision, outcome, now);
    }

    /// Log a decision with its inputs: at info when it differs from the previous one (kind
    /// or reason), else at debug.
    fn log(&mut self, input: &Input, decision: &Decision) {
        let kind = match decision.action {
            Action::None { .. } => "none",
            Action::Failover { .. } => "failover",
            Action::Refuse { .. } => "refuse",
            Action::Fence { .. } => "fence",
        };
        let key = (kind.to_owned(), decision.action.reason().to_owned());
        let inputs = serde_json::to_string(input).unwrap_or_default();
        let output = serde_json::to_string(decision).unwrap_or_default();
        let changed = self.previous.as_ref() != Some(&key);
        if changed || kind == "failover" {
            tracing::info!(decision = kind, reason = %key.1, inputs = %inputs, output = %output, "decision");
        } else {
            tracing::debug!(decision = kind, inputs = %inputs, output = %output, "decision");
        }
        self.previous = Some(key);
    }

    fn member(&self, name: &str) -> Option<&MemberConfig> {
        self.config.members.iter().find(|m| m.name == name)
    }

    fn token(&self, member: &MemberConfig) -> Option<String> {
        match read_token(member) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(member = %member.name, error = %format!("{e:#}"), "cannot read the member's token");
                None
            }
        }
    }

    /// Persist `term`, promote `candidate`, fence `fence`, repoint the others.
    async fn failover(&mut self, candidate: &str, term: u64, fence: &[String]) -> String {
        let Some(member) = self.member(candidate).cloned() else {
            return format!("unknown candidate {candidate}");
        };
        // The term is on disk before anyone sees it: a restarted coordinator never reuses it.
        let next = State {
            term,
            primary: self.state.primary.clone(),
        };
        if let Err(e) = state::store(&self.config.state_file, &next) {
            let message = format!("not promoting: cannot persist term {term}: {e:#}");
            tracing::error!(%message);
            return message;
        }
        self.state = next;
        self.shared
            .metrics
            .term
            .set(i64::try_from(term).unwrap_or(i64::MAX));
        // Fence the old primary first when its manager answers, so a postgres it restarts
        // cannot take writes next to the new primary; a failed fence does not stop the
        // failover (the old primary is unhealthy either way).
        let mut fenced = String::new();
        for name in fence {
            fenced.push_str(&self.fence(name).await);
        }
        let token = self.token(&member);
        let started = Instant::now();
        let answer = self
            .client
            .promote(
                &member.url,
                token.as_deref(),
                term,
                self.config.action_timeout,
            )
            .await;
        let mut outcome = match answer {
            Ok(answer) => {
                tracing::info!(member = %candidate, term, elapsed_ms = started.elapsed().as_millis() as u64, answer = %answer, "promoted");
                self.shared.metrics.failovers.inc();
                self.lock_failovers();
                self.state.primary = Some(candidate.to_owned());
                if let Err(e) = state::store(&self.config.state_file, &self.state) {
                    tracing::error!(error = %format!("{e:#}"), "cannot persist the new primary");
                }
                format!("promoted {candidate} with term {term}: {answer}{fenced}")
            }
            Err(e) => {
                let message = format!("promoting {candidate} with term {term} failed: {e}{fenced}");
                tracing::error!(%message);
                return message;
            }
        };
        outcome.push_str(&self.repoint(candidate, term).await);
        outcome
    }

    fn lock_failovers(&self) {
        self.shared.lock().failovers += 1;
    }

    async fn fence(&self, name: &str) -> String {
        let Some(member) = self.member(name) else {
            return String::new();
        };
        let token = self.token(member);
        match self
            .client
            .fence(&member.url, token.as_deref(), self.config.action_timeout)
            .await
        {
            Ok(answer) => {
                tracing::info!(member = %name, answer = %answer, "fenced the old primary");
                format!("; fenced {name}")
            }
            Err(e) => {
                tracing::error!(member = %name, error = %e, "fencing the old primary failed");
                format!("; fencing {name} failed: {e}")
            }
        }
    }

    /// Ask every other reachable replica to follow the new primary (needs the candidate's
    /// `postgres` address and `/pg/follow` on the managers).
    async fn repoint(&self, primary: &str, term: u64) -> String {
        let Some((host, port)) = self
            .member(primary)
            .and_then(|m| m.postgres.as_deref())
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        else {
            return String::new();
        };
        let mut outcome = String::new();
        for (member, tracker) in self.config.members.iter().zip(&self.trackers) {
            if member.name == primary || !tracker.reachable {
                continue;
            }
            let token = self.token(member);
            match self
                .client
                .follow(
                    &member.url,
                    token.as_deref(),
                    term,
                    &host,
                    port,
                    Duration::from_secs(30),
                )
                .await
            {
                Ok(_) => outcome.push_str(&format!("; {} follows", member.name)),
                Err(e) => {
                    tracing::warn!(member = %member.name, error = %e, "repointing failed");
                    outcome.push_str(&format!("; repointing {} failed: {e}", member.name));
                }
            }
        }
        outcome
    }

    fn publish(&self, decision: Decision, outcome: Option<String>, now: Instant) {
        let members: Vec<MemberReport> = self
            .config
            .members
            .iter()
            .zip(&self.trackers)
            .map(|(m, t)| t.report(&m.name, &m.url, now))
            .collect();
        for m in &members {
            self.shared
                .metrics
                .member_up
                .with_label_values(&[m.name.as_str()])
                .set(i64::from(m.healthy));
        }
        let mut report = self.shared.lock();
        report.term = self.state.term.max(decision.term);
        report.primary = match &decision.action {
            Action::Failover { candidate, .. }
                if outcome
                    .as_deref()
                    .is_some_and(|o| o.starts_with("promoted")) =>
            {
                Some(candidate.clone())
            }
            _ => decision.primary.clone(),
        };
        report.synchronous_standby_names = decision.synchronous_standby_names.clone();
        report.members = members;
        self.shared
            .metrics
            .term
            .set(i64::try_from(report.term).unwrap_or(i64::MAX));
        let record = DecisionRecord {
            at_unix_ms: unix_ms(),
            decision,
            outcome,
        };
        if !matches!(record.decision.action, Action::None { .. }) {
            report.last_action = Some(record.clone());
        }
        report.last_decision = Some(record);
    }
}
