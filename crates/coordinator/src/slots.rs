//! Stale replication slots. Each standby creates its own physical slot (named after its
//! `instance_name`) on its primary. Two kinds outlive their use and hold WAL until pg_wal
//! fills: the slots a demoted primary still has for its former standbys (nothing streams from
//! a replica: no cascading), and the slot of a member removed from the configuration. The
//! coordinator remembers every member's slot in its state file (`record`), decides from the
//! latest poll which inactive slots are stale (`plan`, pure), and asks the member to drop them
//! (`POST /pg/slots/drop`, term-checked; the manager keeps any slot a WAL sender uses).
//!
//! Never dropped: the slot of a configured member on the primary, even when that member is
//! down (it needs that WAL to come back; `max_slot_wal_keep_size` and the slot metrics are the
//! guard there), any slot whose name is not a member's, and anything on an unhealthy or
//! fenced member.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pgsteward_api::{slot_name, SlotDropRequest};

use crate::decide::{MemberRole, MemberView};
use crate::run::Coordinator;
use crate::state;

/// How long before the same slots are asked of the same member again.
const SLOT_RETRY: Duration = Duration::from_secs(30);

/// One request to make: drop `slots` on `member`, which holds `term`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDrop {
    pub member: String,
    pub term: u64,
    pub slots: Vec<String>,
}

/// Add the slot of every member observed in `views` to `known` (member name → slot name);
/// true when something changed.
pub fn record(known: &mut BTreeMap<String, String>, views: &[MemberView]) -> bool {
    let mut changed = false;
    for view in views {
        let Some(observed) = &view.last else { continue };
        let slot = slot_name(&observed.instance_name);
        if known.get(&view.name) != Some(&slot) {
            known.insert(view.name.clone(), slot);
            changed = true;
        }
    }
    changed
}

/// The drops to request, given the slots of every member ever seen (`known`), the latest
/// views of the configured members, and the healthy `primary`.
pub fn plan(
    known: &BTreeMap<String, String>,
    views: &[MemberView],
    primary: &str,
) -> Vec<SlotDrop> {
    let configured: BTreeSet<&str> = views.iter().map(|v| v.name.as_str()).collect();
    let current: BTreeSet<&str> = known
        .iter()
        .filter(|(member, _)| configured.contains(member.as_str()))
        .map(|(_, slot)| slot.as_str())
        .collect();
    let removed: BTreeSet<&str> = known
        .iter()
        .filter(|(member, slot)| {
            !configured.contains(member.as_str()) && !current.contains(slot.as_str())
        })
        .map(|(_, slot)| slot.as_str())
        .collect();
    let every: BTreeSet<&str> = known.values().map(String::as_str).collect();
    let mut drops = Vec::new();
    for view in views {
        let Some(observed) = view.last.as_ref().filter(|_| view.healthy()) else {
            continue;
        };
        let stale = if view.name == primary {
            &removed
        } else if observed.role == MemberRole::Replica {
            &every
        } else {
            // A stale primary: fencing and re-admission deal with it first.
            continue;
        };
        let mut slots: Vec<String> = observed
            .inactive_slots
            .iter()
            .filter(|s| stale.contains(s.as_str()))
            .cloned()
            .collect();
        slots.sort();
        slots.dedup();
        if !slots.is_empty() {
            drops.push(SlotDrop {
                member: view.name.clone(),
                term: observed.term,
                slots,
            });
        }
    }
    drops
}

impl Coordinator {
    /// Persist the slot of every member seen in this round when one is new (kept in memory
    /// when the write fails, logged once, and written with the next state change).
    pub(crate) fn record_member_slots(&mut self, views: &[MemberView]) {
        if !record(&mut self.state.member_slots, views) {
            return;
        }
        if let Err(e) = state::store(&self.config.state_file, &self.state) {
            tracing::error!(error = %format!("{e:#}"), "cannot persist the members' replication slots");
        }
    }

    /// Ask members to drop their stale slots (at most one attempt per member and set of
    /// slots every `SLOT_RETRY`); the outcome when something was sent.
    pub(crate) async fn drop_stale_slots(
        &mut self,
        views: &[MemberView],
        primary: &str,
        now: Instant,
    ) -> Option<String> {
        let mut outcomes = Vec::new();
        for drop in plan(&self.state.member_slots, views, primary) {
            if let Some((slots, at)) = self.slot_attempts.get(&drop.member) {
                if *slots == drop.slots && now.saturating_duration_since(*at) < SLOT_RETRY {
                    continue;
                }
            }
            self.slot_attempts
                .insert(drop.member.clone(), (drop.slots.clone(), now));
            let Some(member) = self.member(&drop.member).cloned() else {
                continue;
            };
            let token = self.token(&member);
            let request = SlotDropRequest {
                term: drop.term,
                slots: drop.slots.clone(),
            };
            let timeout = self.config.request_timeout.max(Duration::from_secs(1));
            let result = self
                .client
                .drop_slots(&member.url, token.as_deref(), &request, timeout)
                .await;
            outcomes.push(match result {
                Ok(answer) => {
                    self.shared
                        .metrics
                        .slots_dropped
                        .inc_by(answer.dropped.len() as u64);
                    tracing::info!(member = %drop.member, term = drop.term, dropped = ?answer.dropped, active = ?answer.active, missing = ?answer.missing, "stale replication slots dropped");
                    format!("dropped stale slots {:?} on {}", answer.dropped, drop.member)
                }
                Err(e) => {
                    tracing::error!(member = %drop.member, term = drop.term, slots = ?drop.slots, error = %e, "dropping stale replication slots failed");
                    format!("dropping slots {:?} on {} failed: {e}", drop.slots, drop.member)
                }
            });
        }
        (!outcomes.is_empty()).then(|| outcomes.join("; "))
    }
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
