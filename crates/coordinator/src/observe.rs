//! Per-member tracking between polls: the last answered status reduced to what the
//! decision reads (`Observed`), reachability, and since when the member is unhealthy.

use std::time::Instant;

use pgsteward_api::{InstanceState, InstanceStatus, ReplicationRole, Role};
use serde::Serialize;

use crate::decide::{MemberRole, MemberView, Observed};
use crate::lsn::Lsn;

/// What the coordinator remembers about one member.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    pub last: Option<Observed>,
    pub reachable: bool,
    /// Since when the member is unhealthy (None: healthy).
    pub unhealthy_since: Option<Instant>,
    pub last_error: Option<String>,
    /// When the member last answered.
    pub last_contact: Option<Instant>,
}

/// A member in the coordinator's status.
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    pub name: String,
    pub url: String,
    pub reachable: bool,
    pub healthy: bool,
    pub unhealthy_for_ms: Option<u128>,
    pub last_contact_ms_ago: Option<u128>,
    pub last_error: Option<String>,
    pub observed: Option<Observed>,
}

/// Reduce a manager status to the decision's facts.
pub fn observe(status: &InstanceStatus) -> Observed {
    let replication = status.replication.as_ref();
    let receiver = replication.and_then(|r| r.receiver.as_ref());
    let parse = |s: Option<&String>| s.and_then(|s| s.parse::<Lsn>().ok());
    let role = match replication.map(|r| r.role) {
        Some(ReplicationRole::Primary) => MemberRole::Primary,
        Some(ReplicationRole::Replica) => MemberRole::Replica,
        None if status.role == Role::Primary => MemberRole::Primary,
        None => MemberRole::Replica,
    };
    let replayed = parse(receiver.and_then(|r| r.replayed_lsn.as_ref()));
    Observed {
        instance_name: status.instance_name.clone(),
        role,
        term: replication.map_or(0, |r| r.term),
        timeline: status.timeline,
        received_lsn: parse(receiver.and_then(|r| r.received_lsn.as_ref())),
        replayed_lsn: replayed.or_else(|| {
            (role == MemberRole::Replica)
                .then(|| parse(status.current_lsn.as_ref()))
                .flatten()
        }),
        current_lsn: (role == MemberRole::Primary)
            .then(|| parse(status.current_lsn.as_ref()))
            .flatten(),
        postgres_up: status.postgres_up,
        streaming: receiver
            .and_then(|r| r.wal_receiver_status.as_deref())
            .is_some_and(|s| s == "streaming"),
        fenced: status.state == InstanceState::Fenced,
        upstream: replication.and_then(|r| r.upstream.clone()),
        synchronous_standby_names: replication.and_then(|r| r.synchronous_standby_names.clone()),
        inactive_slots: replication
            .map(|r| {
                r.slots
                    .iter()
                    .filter(|s| !s.active)
                    .map(|s| s.slot_name.clone())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl Tracker {
    /// Record one poll result at `now`.
    pub fn record(&mut self, now: Instant, result: Result<InstanceStatus, String>) {
        match result {
            Ok(status) => {
                let observed = observe(&status);
                let healthy = observed.postgres_up && !observed.fenced;
                self.last = Some(observed);
                self.reachable = true;
                self.last_contact = Some(now);
                self.last_error = (!healthy).then(|| {
                    status
                        .last_error
                        .clone()
                        .unwrap_or_else(|| format!("postgres down (state {})", status.state))
                });
                if healthy {
                    self.unhealthy_since = None;
                } else {
                    self.unhealthy_since.get_or_insert(now);
                }
            }
            Err(e) => {
                self.reachable = false;
                self.last_error = Some(e);
                self.unhealthy_since.get_or_insert(now);
            }
        }
    }

    /// The decision's view at `now`.
    pub fn view(&self, name: &str, now: Instant) -> MemberView {
        MemberView {
            name: name.to_owned(),
            reachable: self.reachable,
            last: self.last.clone(),
            unhealthy_for: self
                .unhealthy_since
                .map(|s| now.saturating_duration_since(s)),
        }
    }

    /// The status report at `now`.
    pub fn report(&self, name: &str, url: &str, now: Instant) -> MemberReport {
        MemberReport {
            name: name.to_owned(),
            url: url.to_owned(),
            reachable: self.reachable,
            healthy: self.reachable && self.unhealthy_since.is_none(),
            unhealthy_for_ms: self
                .unhealthy_since
                .map(|s| now.saturating_duration_since(s).as_millis()),
            last_contact_ms_ago: self
                .last_contact
                .map(|s| now.saturating_duration_since(s).as_millis()),
            last_error: self.last_error.clone(),
            observed: self.last.clone(),
        }
    }
}
