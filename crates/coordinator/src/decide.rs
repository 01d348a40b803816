//! The failover decision as a pure function (no I/O, no clock): from the members' last
//! observed status and the configuration, decide whether to do nothing, fail over to the
//! most advanced eligible replica with the next term, or refuse (and why); and compute the
//! `synchronous_standby_names` the primary should have.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;

/// Persisted role of a member as its manager reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Primary,
    Replica,
}

/// `ANY k (...)` (quorum) or `FIRST k (...)` (priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMethod {
    Any,
    First,
}

/// Whether a failover may lose acknowledged commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Only promote a replica that cannot miss an acknowledged commit; writes block without
    /// enough standbys.
    Required,
    /// Prefer synchronous standbys, but keep the cluster writable.
    Preferred,
}

/// Synchronous replication settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncConfig {
    pub method: SyncMethod,
    pub number: usize,
    pub data_durability: Durability,
}

/// What the decision needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// A primary unhealthy (unreachable, postgres down, hung) this long is failed over.
    #[serde(with = "humantime_serde")]
    pub failure_threshold: Duration,
    /// None: asynchronous replication.
    pub synchronous: Option<SyncConfig>,
}

/// Last observed facts about one member (from its latest answered `/pg/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// `instance_name` (the standby's `application_name`).
    pub instance_name: String,
    pub role: MemberRole,
    pub term: u64,
    pub timeline: Option<u32>,
    pub received_lsn: Option<Lsn>,
    pub replayed_lsn: Option<Lsn>,
    /// Its current WAL (insert) position (primaries).
    #[serde(default)]
    pub current_lsn: Option<Lsn>,
    pub postgres_up: bool,
    /// The WAL receiver streams (replicas).
    pub streaming: bool,
    /// The manager is fenced.
    pub fenced: bool,
    /// `host:port` this member streams from (replicas).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Its current `synchronous_standby_names` (primaries).
    #[serde(default)]
    pub synchronous_standby_names: Option<String>,
    /// Its physical replication slots that no WAL sender uses.
    #[serde(default)]
    pub inactive_slots: Vec<String>,
}

/// One member as the decision sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Name in the coordinator configuration.
    pub name: String,
    /// The manager answered the latest poll.
    pub reachable: bool,
    /// Latest answered status (kept while unreachable); None if it never answered.
    pub last: Option<Observed>,
    /// How long the member has been unhealthy (unreachable, timed out, or postgres down);
    /// None while healthy.
    #[serde(with = "humantime_serde")]
    pub unhealthy_for: Option<Duration>,
}

#[cfg(test)]
impl MemberView {
    /// For tests: a reachable, healthy member `name` (also its `instance_name`) in `role` and
    /// `term`, streaming when a replica, nothing received; tests change what matters to them.
    pub(crate) fn for_test(name: &str, role: MemberRole, term: u64) -> Self {
        MemberView {
            name: name.into(),
            reachable: true,
            last: Some(Observed {
                instance_name: name.into(),
                role,
                term,
                timeline: Some(1),
                received_lsn: None,
                replayed_lsn: None,
                current_lsn: None,
                postgres_up: true,
                streaming: role == MemberRole::Replica,
                fenced: false,
                upstream: None,
                synchronous_standby_names: None,
                inactive_slots: Vec::new(),
            }),
            unhealthy_for: None,
        }
    }

    /// For tests: the observed facts of a view made by `for_test`, to change.
    pub(crate) fn observed_mut(&mut self) -> &mut Observed {
        match self.last.as_mut() {
            Some(observed) => observed,
            None => panic!("{} has no observed facts", self.name),
        }
    }
}

impl MemberView {
    pub(crate) fn healthy(&self) -> bool {
        self.reachable
            && self.unhealthy_for.is_none()
            && self
                .last
                .as_ref()
                .is_some_and(|o| o.postgres_up && !o.fenced)
    }
}

/// Everything the decision reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// Highest term the coordinator has persisted.
    pub term: u64,
    /// How long the coordinator has been polling (a missing primary is only failed over
    /// after `failure_threshold` of uptime).
    #[serde(with = "humantime_serde")]
    pub uptime: Duration,
    pub members: Vec<MemberView>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Nothing to do.
    None { reason: String },
    /// Promote `candidate` with `term`; fence the members in `fence` (old primaries that
    /// still answer).
    Failover {
        candidate: String,
        term: u64,
        old_primary: Option<String>,
        fence: Vec<String>,
        reason: String,
    },
    /// The primary is healthy, but `members` still run as primaries of an older term
    /// (back after a failover): fence them.
    Fence {
        members: Vec<String>,
        reason: String,
    },
    /// The primary failed but no replica may be promoted.
    Refuse { reason: String },
}

impl Action {
    pub fn reason(&self) -> &str {
        match self {
            Action::None { reason } | Action::Refuse { reason } => reason,
            Action::Failover { reason, .. } | Action::Fence { reason, .. } => reason,
        }
    }
}

/// The decision and the synchronous standby names for the (current or new) primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Highest term known (persisted or observed).
    pub term: u64,
    /// Current primary (member name), if any.
    pub primary: Option<String>,
    pub action: Action,
    pub synchronous_standby_names: String,
}

/// Name used in `synchronous_standby_names` when no real standby can fill a required slot:
/// commits wait instead of being acknowledged without a standby.
pub const PLACEHOLDER: &str = "pgsteward_no_standby";

/// Decide.
pub fn decide(input: &Input, policy: &Policy) -> Decision {
    let observed_term = input
        .members
        .iter()
        .filter_map(|m| m.last.as_ref().map(|o| o.term))
        .max()
        .unwrap_or(0);
    let term = input.term.max(observed_term);
    let primary = current_primary(input);
    let sync_names =
        |primary: Option<&str>| synchronous_standby_names(&input.members, policy, primary, true);

    let failed_primary = match primary {
        Some(p) => {
            if p.healthy() {
                let stale = stale_primaries(input, p);
                if !stale.is_empty() {
                    return Decision {
                        term,
                        primary: Some(p.name.clone()),
                        action: Action::Fence {
                            reason: format!(
                                "{} still report(s) being primary with a term below {}'s; fencing",
                                stale.join(", "),
                                p.name
                            ),
                            members: stale,
                        },
                        synchronous_standby_names: sync_names(Some(&p.name)),
                    };
                }
                return Decision {
                    term,
                    primary: Some(p.name.clone()),
                    action: Action::None {
                        reason: format!("primary {} is healthy", p.name),
                    },
                    synchronous_standby_names: sync_names(Some(&p.name)),
                };
            }
            let unhealthy = p.unhealthy_for.unwrap_or(Duration::ZERO);
            if unhealthy < policy.failure_threshold {
                return Decision {
                    term,
                    primary: Some(p.name.clone()),
                    action: Action::None {
                        reason: format!(
                            "primary {} unhealthy for {} ms, below the failure threshold of {} ms",
                            p.name,
                            unhealthy.as_millis(),
                            policy.failure_threshold.as_millis()
                        ),
                    },
                    synchronous_standby_names: sync_names(Some(&p.name)),
                };
            }
            Some(p)
        }
        None => {
            if input.uptime < policy.failure_threshold {
                return Decision {
                    term,
                    primary: None,
                    action: Action::None {
                        reason: "no primary observed yet; waiting for the failure threshold".into(),
                    },
                    synchronous_standby_names: sync_names(None),
                };
            }
            None
        }
    };
    let why = match failed_primary {
        Some(p) => format!(
            "primary {} unhealthy for at least {} ms ({})",
            p.name,
            policy.failure_threshold.as_millis(),
            describe_failure(p)
        ),
        None => "no primary observed".into(),
    };
    let old_primary = failed_primary.map(|p| p.name.clone());

    let mut candidates: Vec<&MemberView> = input
        .members
        .iter()
        .filter(|m| Some(&m.name) != old_primary.as_ref() && eligible(m, term))
        .collect();
    candidates.sort_by(|a, b| {
        let (oa, ob) = (a.last.as_ref(), b.last.as_ref());
        let key = |o: Option<&Observed>| {
            (
                o.and_then(|o| o.received_lsn.or(o.replayed_lsn)),
                o.and_then(|o| o.replayed_lsn),
            )
        };
        key(ob).cmp(&key(oa)).then_with(|| a.name.cmp(&b.name))
    });

    let refuse = |reason: String| Decision {
        term,
        primary: old_primary.clone(),
        action: Action::Refuse {
            reason: format!("{why}; not failing over: {reason}"),
        },
        synchronous_standby_names: sync_names(old_primary.as_deref()),
    };

    if let Some(sync) = policy
        .synchronous
        .filter(|s| s.data_durability == Durability::Required && s.number > 0)
    {
        // Every acknowledged commit reached `k` of the `n` standbys; seeing `n - k + 1` of
        // them guarantees one of those seen has it.
        // Without an observed primary, one of the members (perhaps one never seen) is
        // presumed to be it.
        let standbys: Vec<&MemberView> = input
            .members
            .iter()
            .filter(|m| Some(&m.name) != old_primary.as_ref())
            .collect();
        let n = if old_primary.is_some() {
            standbys.len()
        } else {
            standbys.len().saturating_sub(1)
        };
        let k = sync.number.min(n.max(1));
        let needed = (n + 1).saturating_sub(k);
        let visible: Vec<&str> = standbys
            .iter()
            .filter(|m| {
                m.reachable
                    && m.last
                        .as_ref()
                        .is_some_and(|o| o.postgres_up && o.received_lsn.is_some())
            })
            .map(|m| m.name.as_str())
            .collect();
        if visible.len() < needed {
            return refuse(format!(
                "data_durability required with {} {k} of {n} standbys needs the positions of at \
                 least {needed} standbys, only {} visible ({})",
                match sync.method {
                    SyncMethod::Any => "ANY",
                    SyncMethod::First => "FIRST",
                },
                visible.len(),
                if visible.is_empty() {
                    "none".to_owned()
                } else {
                    visible.join(", ")
                }
            ));
        }
    }

    let Some(best) = candidates.first() else {
        return refuse(
            "no eligible replica (reachable, postgres up, not fenced, term not ahead)".into(),
        );
    };
    let fence = old_primary
        .iter()
        .filter(|name| {
            input
                .members
                .iter()
                .any(|m| &m.name == *name && m.reachable)
        })
        .cloned()
        .collect();
    let next = term + 1;
    let position = best
        .last
        .as_ref()
        .and_then(|o| o.received_lsn.or(o.replayed_lsn))
        .map_or_else(|| "?".to_owned(), |l| l.to_string());
    Decision {
        term,
        primary: old_primary.clone(),
        action: Action::Failover {
            candidate: best.name.clone(),
            term: next,
            old_primary: old_primary.clone(),
            fence,
            reason: format!(
                "{why}; promoting {} (received up to {position}) with term {next}",
                best.name
            ),
        },
        // The new primary has these from its first commit (`POST /pg/promote` carries them).
        // Under `required`, every healthy replica is named, streaming or not (each is
        // repointed to the new primary at once): commits wait for a real standby rather than
        // a placeholder. `preferred` names only streaming ones, so writes never wait.
        synchronous_standby_names: synchronous_standby_names(
            &input.members,
            policy,
            Some(&best.name),
            names_only_streaming(policy),
        ),
    }
}

/// The member with role primary and the highest term among the last observations.
fn current_primary(input: &Input) -> Option<&MemberView> {
    input
        .members
        .iter()
        .filter(|m| {
            m.last
                .as_ref()
                .is_some_and(|o| o.role == MemberRole::Primary)
        })
        .max_by(|a, b| {
            let term = |m: &MemberView| m.last.as_ref().map_or(0, |o| o.term);
            term(a)
                .cmp(&term(b))
                .then_with(|| b.healthy().cmp(&a.healthy()).reverse())
                .then_with(|| b.name.cmp(&a.name))
        })
}

/// Reachable members other than `primary` that report role primary with an older term and
/// are not fenced yet.
fn stale_primaries(input: &Input, primary: &MemberView) -> Vec<String> {
    let term = primary.last.as_ref().map_or(0, |o| o.term);
    input
        .members
        .iter()
        .filter(|m| {
            m.name != primary.name
                && m.reachable
                && m.last
                    .as_ref()
                    .is_some_and(|o| o.role == MemberRole::Primary && o.term < term && !o.fenced)
        })
        .map(|m| m.name.clone())
        .collect()
}

fn describe_failure(m: &MemberView) -> &'static str {
    match (&m.last, m.reachable) {
        (_, false) => "manager unreachable or not answering",
        (Some(o), true) if o.fenced => "fenced",
        (Some(o), true) if !o.postgres_up => "postgres down",
        _ => "unhealthy",
    }
}

/// A replica that can be promoted: healthy replica with a known position and no term ahead
/// of the coordinator's.
fn eligible(m: &MemberView, term: u64) -> bool {
    m.healthy()
        && m.last.as_ref().is_some_and(|o| {
            o.role == MemberRole::Replica
                && o.term <= term
                && (o.received_lsn.is_some() || o.replayed_lsn.is_some())
        })
}

/// `synchronous_standby_names` for `primary`: the healthy replicas (by instance name, in
/// member order; only those streaming when `streaming_only`), with placeholders for missing
/// ones under `required`.
pub fn synchronous_standby_names(
    members: &[MemberView],
    policy: &Policy,
    primary: Option<&str>,
    streaming_only: bool,
) -> String {
    let Some(sync) = policy.synchronous.filter(|s| s.number > 0) else {
        return String::new();
    };
    let mut names: Vec<String> = members
        .iter()
        .filter(|m| Some(m.name.as_str()) != primary && m.healthy())
        .filter_map(|m| {
            m.last
                .as_ref()
                .filter(|o| o.role == MemberRole::Replica && (o.streaming || !streaming_only))
                .map(|o| quote(&o.instance_name))
        })
        .collect();
    let k = match sync.data_durability {
        Durability::Required => {
            let mut i = 1;
            while names.len() < sync.number {
                names.push(quote(&format!("{PLACEHOLDER}_{i}")));
                i += 1;
            }
            sync.number
        }
        Durability::Preferred => {
            if names.is_empty() {
                return String::new();
            }
            sync.number.min(names.len())
        }
    };
    let method = match sync.method {
        SyncMethod::Any => "ANY",
        SyncMethod::First => "FIRST",
    };
    format!("{method} {k} ({})", names.join(", "))
}

/// `synchronous_standby_names` for the candidate of a switchover, sent with its promotion:
/// the demoted primary counts as a replica (it restarts as a standby of the candidate), and
/// under `required` every healthy replica is named, streaming or not (the others are
/// repointed right after the promotion).
pub fn switchover_names(members: &[MemberView], policy: &Policy, old: &str, to: &str) -> String {
    let members: Vec<MemberView> = members
        .iter()
        .cloned()
        .map(|mut m| {
            if m.name == old {
                if let Some(o) = m.last.as_mut() {
                    o.role = MemberRole::Replica;
                    o.streaming = false;
                }
            }
            m
        })
        .collect();
    synchronous_standby_names(&members, policy, Some(to), names_only_streaming(policy))
}

/// Names for a new primary leave out replicas that do not stream yet, except under
/// `required` (commits then wait for a real standby rather than a placeholder).
fn names_only_streaming(policy: &Policy) -> bool {
    policy
        .synchronous
        .is_none_or(|s| s.data_durability != Durability::Required)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
