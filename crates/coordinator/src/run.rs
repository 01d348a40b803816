//! The coordinator loop: poll every member's `/pg/status` concurrently, run the decision,
//! log it with its inputs, and act (persist the next term, fence the old primary when it
//! answers, promote the candidate, repoint the others when their managers can follow);
//! re-admit former primaries and stale replicas in the background (`readmit`), keep the
//! primary's synchronous standby names (`synchronous`), drop stale slots (`slots`), and run
//! switchovers the API hands over (`switchover`) between two rounds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::Client;
use crate::config::{read_token, Config, MemberConfig};
use crate::decide::{decide, Action, Decision, Input, MemberView};
use crate::metrics::Metrics;
use crate::observe::{MemberReport, Tracker};
use crate::readmit::{self, Readmissions};
use crate::shared::{Command, DecisionRecord, Shared};
use crate::state::{self, State};

/// Runs the loop until the task is dropped.
pub struct Coordinator {
    pub(crate) config: Config,
    pub(crate) client: Client,
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: State,
    trackers: Vec<Tracker>,
    started: Instant,
    previous: Option<(String, String)>,
    commands: mpsc::Receiver<Command>,
    readmissions: Arc<Mutex<Readmissions>>,
    /// Last `synchronous_standby_names` sent to the primary, and when.
    pub(crate) sync_attempt: Option<(String, Instant)>,
    /// Per member, the last stale slots asked to drop, and when.
    pub(crate) slot_attempts: BTreeMap<String, (Vec<String>, Instant)>,
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
        let api_token = match &config.api_token_file {
            Some(path) => Some(crate::shared::ApiToken::load(path)?),
            None => None,
        };
        let (commands_tx, commands) = mpsc::channel(4);
        let shared = Arc::new(Shared::new(
            metrics,
            state.term,
            commands_tx,
            api_token,
            config.api_client_names(),
        ));
        let trackers = vec![Tracker::default(); config.members.len()];
        let tls = config.tls.as_ref();
        let client = Client::new(
            tls.and_then(|t| t.ca_file.as_deref()),
            tls.and_then(|t| t.identity()).as_ref(),
        )
        .context("building the HTTP client of the managers' API")?;
        Ok((
            Coordinator {
                config,
                client,
                shared: shared.clone(),
                state,
                trackers,
                started: Instant::now(),
                previous: None,
                commands,
                readmissions: Arc::new(Mutex::new(Readmissions::default())),
                sync_attempt: None,
                slot_attempts: BTreeMap::new(),
            },
            shared,
        ))
    }

    /// Poll, decide and act every `poll_interval`, forever.
    pub async fn run(mut self) {
        let mut interval = tokio::time::interval(self.config.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => self.round().await,
                Some(command) = self.commands.recv() => self.handle(command).await,
            }
            if interval.period() != self.config.poll_interval {
                interval = tokio::time::interval(self.config.poll_interval);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
        }
    }

    /// Apply a configuration file read at a SIGHUP (see `reload`).
    fn reload(&mut self, file: Config) {
        let (merged, outcome) = crate::reload::merge(&self.config, &file);
        self.config = merged;
        self.shared
            .set_api_client_names(self.config.api_client_names());
        self.shared
            .metrics
            .config_pending_restart
            .set(i64::from(!outcome.pending_restart.is_empty()));
        self.shared.lock().pending_restart = outcome
            .pending_restart
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if outcome.pending_restart.is_empty() {
            tracing::info!(applied = ?outcome.applied, "SIGHUP: configuration reloaded");
        } else {
            tracing::warn!(
                applied = ?outcome.applied,
                pending_restart = ?outcome.pending_restart,
                "SIGHUP: configuration reloaded; the settings in pending_restart keep their running values until the coordinator restarts"
            );
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Switchover { to, reply } => {
                let result = self.switchover(&to).await;
                let summary = match &result {
                    Ok(answer) => format!(
                        "switched over from {} to {} with term {} in {} ms",
                        answer.from, answer.to, answer.term, answer.elapsed_ms
                    ),
                    Err(e) => format!("switchover to {to} failed: {e}"),
                };
                if result.is_err() {
                    tracing::error!(%summary, "switchover");
                }
                self.shared.lock().last_switchover = Some(summary);
                let _ = reply.send(result);
            }
            Command::Backup { request, reply } => {
                let result = self.backup(&request).await;
                if let Err((status, message)) = &result {
                    tracing::error!(status, %message, "backup through the coordinator refused");
                }
                let _ = reply.send(result);
            }
            Command::Reload(file) => self.reload(*file),
        }
    }

    /// Poll every member now and return their views (used before a switchover).
    pub(crate) async fn poll_now(&mut self) -> Vec<MemberView> {
        self.poll().await;
        let now = Instant::now();
        self.config
            .members
            .iter()
            .zip(&self.trackers)
            .map(|(m, t)| t.view(&m.name, now))
            .collect()
    }

    /// Poll every member concurrently and record the answers.
    async fn poll(&mut self) {
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
    }

    /// One round: poll every member concurrently, decide, act.
    pub async fn round(&mut self) {
        let began = Instant::now();
        self.poll().await;
        let now = Instant::now();
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
        self.record_member_slots(&input.members);
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
            } => Some(
                self.failover(candidate, *term, fence, &decision.synchronous_standby_names)
                    .await,
            ),
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
            Action::None { .. } => match decision.primary.clone() {
                Some(primary) => {
                    self.readmit(&input, &primary, now);
                    let synchronous = self
                        .apply_synchronous(
                            &input,
                            &primary,
                            &decision.synchronous_standby_names,
                            now,
                        )
                        .await;
                    let slots = self.drop_stale_slots(&input.members, &primary, now).await;
                    match (synchronous, slots) {
                        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                        (a, b) => a.or(b),
                    }
                }
                None => None,
            },
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

    /// Tell members that do not follow the healthy `primary` in its term to follow it (in
    /// the background, one attempt per member at a time, backing off after failures).
    fn readmit(&mut self, input: &Input, primary: &str, now: Instant) {
        let Some((host, port)) = self.member(primary).and_then(|m| m.postgres_address()) else {
            return;
        };
        let address = format!("{host}:{port}");
        let Some(term) = input
            .members
            .iter()
            .find(|m| m.name == primary)
            .and_then(|m| m.last.as_ref())
            .map(|o| o.term)
        else {
            return;
        };
        for view in &input.members {
            if view.name == primary {
                continue;
            }
            let Some(reason) = readmit::reason(view, term, &address) else {
                continue;
            };
            let Some(member) = self.member(&view.name).cloned() else {
                continue;
            };
            let started = self
                .readmissions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .try_start(&member.name, &reason, now);
            if !started {
                continue;
            }
            tracing::info!(member = %member.name, primary = %primary, term, reason = %reason, "re-admitting: telling it to follow the primary");
            self.shared.metrics.readmissions.inc();
            let client = self.client.clone();
            let token = self.token(&member);
            let readmissions = self.readmissions.clone();
            let shared = self.shared.clone();
            let timeout = self.config.action_timeout;
            let host = host.clone();
            tokio::spawn(async move {
                let result = client
                    .follow(&member.url, token.as_deref(), term, &host, port, timeout)
                    .await
                    .map(|answer| answer.to_string())
                    .map_err(|e| e.to_string());
                match &result {
                    Ok(answer) => {
                        tracing::info!(member = %member.name, term, answer = %answer, "re-admitted")
                    }
                    Err(e) => {
                        shared.metrics.readmission_failures.inc();
                        tracing::error!(member = %member.name, term, error = %e, "re-admission failed; retrying with backoff");
                    }
                }
                readmissions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .finish(&member.name, result, Instant::now());
            });
        }
    }

    /// The managers' API client (the TLS watcher rebuilds it in place).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub(crate) fn member(&self, name: &str) -> Option<&MemberConfig> {
        self.config.members.iter().find(|m| m.name == name)
    }

    pub(crate) fn token(&self, member: &MemberConfig) -> Option<String> {
        match read_token(member) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(member = %member.name, error = %format!("{e:#}"), "cannot read the member's token");
                None
            }
        }
    }

    /// Persist `term`, promote `candidate` (with the synchronous standby names it must have
    /// from its first commit), fence `fence`, repoint the others.
    async fn failover(
        &mut self,
        candidate: &str,
        term: u64,
        fence: &[String],
        names: &str,
    ) -> String {
        let Some(member) = self.member(candidate).cloned() else {
            return format!("unknown candidate {candidate}");
        };
        // The term is on disk before anyone sees it: a restarted coordinator never reuses it.
        if let Err(e) = self.persist_term(term, self.state.primary.clone()) {
            let message = format!("not promoting: {e}");
            tracing::error!(%message);
            return message;
        }
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
                (!names.is_empty()).then_some(names),
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
    pub(crate) async fn repoint(&self, primary: &str, term: u64) -> String {
        let Some((host, port)) = self.member(primary).and_then(|m| m.postgres_address()) else {
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
        let (primary, promoted_term) = match &decision.action {
            Action::Failover {
                candidate, term, ..
            } if outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("promoted")) =>
            {
                (Some(candidate.clone()), Some(*term))
            }
            _ => (decision.primary.clone(), None),
        };
        let observed = primary.as_deref().and_then(|name| {
            self.config
                .members
                .iter()
                .zip(&self.trackers)
                .find(|(m, _)| m.name == name)
                .and_then(|(_, t)| t.last.as_ref())
        });
        let primary_instance = observed.map(|o| o.instance_name.clone());
        let primary_term = promoted_term.or_else(|| observed.map(|o| o.term));
        let mut report = self.shared.lock();
        report.term = self.state.term.max(decision.term);
        report.primary = primary;
        report.primary_instance = primary_instance;
        report.primary_term = primary_term;
        report.synchronous_standby_names = decision.synchronous_standby_names.clone();
        report.members = members;
        report.readmissions = self
            .readmissions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot();
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
