//! Re-admission: which members must be told to follow the current primary (a fenced former
//! primary of an older term, a replica of an older term or of another upstream), as a pure
//! function, and the per-member retry bookkeeping (one attempt at a time, exponential backoff
//! after failures) whose state, with each member's last result, the coordinator's status
//! shows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::decide::{MemberRole, MemberView};

/// Why a member is re-admitted.
pub fn reason(member: &MemberView, primary_term: u64, primary_address: &str) -> Option<String> {
    if !member.reachable {
        return None;
    }
    let observed = member.last.as_ref()?;
    match observed.role {
        MemberRole::Primary if observed.term < primary_term && observed.fenced => Some(format!(
            "fenced former primary of term {} (current term {primary_term})",
            observed.term
        )),
        // An unfenced stale primary is fenced by the decision first.
        MemberRole::Primary => None,
        // A replica fenced by an operator stays fenced.
        MemberRole::Replica if observed.fenced => None,
        MemberRole::Replica if observed.term < primary_term => Some(format!(
            "replica of term {} (current term {primary_term})",
            observed.term
        )),
        MemberRole::Replica if observed.upstream.as_deref() != Some(primary_address) => {
            Some(format!(
                "replica of {} instead of the primary {primary_address}",
                observed.upstream.as_deref().unwrap_or("no upstream")
            ))
        }
        MemberRole::Replica => None,
    }
}

/// One member's re-admission, as `/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Readmission {
    pub reason: String,
    pub in_progress: bool,
    pub attempts: u32,
    pub failures: u32,
    pub last_result: Option<String>,
    #[serde(skip)]
    pub next_attempt: Option<Instant>,
}

/// Bookkeeping of every member's re-admission.
#[derive(Debug, Default)]
pub struct Readmissions {
    members: BTreeMap<String, Readmission>,
}

/// Longest wait between two attempts for one member.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Readmissions {
    /// Whether `name` may be attempted now (none running, backoff elapsed); marks it started.
    pub fn try_start(&mut self, name: &str, reason: &str, now: Instant) -> bool {
        let entry = self.members.entry(name.to_owned()).or_default();
        if entry.in_progress || entry.next_attempt.is_some_and(|t| now < t) {
            return false;
        }
        entry.reason = reason.to_owned();
        entry.in_progress = true;
        entry.attempts += 1;
        true
    }

    /// Record how an attempt ended.
    pub fn finish(&mut self, name: &str, result: Result<String, String>, now: Instant) {
        let entry = self.members.entry(name.to_owned()).or_default();
        entry.in_progress = false;
        match result {
            Ok(answer) => {
                entry.failures = 0;
                entry.next_attempt = None;
                entry.last_result = Some(answer);
            }
            Err(error) => {
                entry.failures += 1;
                let backoff = Duration::from_secs(1u64 << entry.failures.min(6)).min(MAX_BACKOFF);
                entry.next_attempt = Some(now + backoff);
                entry.last_result = Some(format!("failed: {error}"));
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, Readmission> {
        self.members.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(role: MemberRole, term: u64, fenced: bool, upstream: Option<&str>) -> MemberView {
        let mut view = MemberView::for_test("b", role, term);
        let observed = view.observed_mut();
        observed.postgres_up = !fenced;
        observed.streaming = false;
        observed.fenced = fenced;
        observed.upstream = upstream.map(str::to_owned);
        view
    }

    #[test]
    fn who_is_readmitted() {
        let p = "10.0.0.1:5432";
        assert!(reason(&view(MemberRole::Primary, 1, true, None), 2, p).is_some());
        assert!(reason(&view(MemberRole::Primary, 1, false, None), 2, p).is_none());
        assert!(reason(&view(MemberRole::Primary, 2, true, None), 2, p).is_none());
        assert!(reason(&view(MemberRole::Replica, 1, false, Some(p)), 2, p).is_some());
        assert!(reason(&view(MemberRole::Replica, 2, false, Some(p)), 2, p).is_none());
        assert!(reason(&view(MemberRole::Replica, 2, false, Some("x:1")), 2, p).is_some());
        assert!(reason(&view(MemberRole::Replica, 1, true, Some(p)), 2, p).is_none());
        let mut unreachable = view(MemberRole::Primary, 1, true, None);
        unreachable.reachable = false;
        assert!(reason(&unreachable, 2, p).is_none());
    }

    #[test]
    fn one_attempt_at_a_time_with_backoff() {
        let mut r = Readmissions::default();
        let t0 = Instant::now();
        assert!(r.try_start("b", "why", t0));
        assert!(!r.try_start("b", "why", t0));
        r.finish("b", Err("boom".into()), t0);
        assert!(!r.try_start("b", "why", t0 + Duration::from_millis(500)));
        assert!(r.try_start("b", "why", t0 + Duration::from_secs(3)));
        r.finish("b", Ok("rewound".into()), t0 + Duration::from_secs(4));
        let snapshot = r.snapshot();
        assert_eq!(snapshot["b"].attempts, 2);
        assert_eq!(snapshot["b"].failures, 0);
        assert!(!snapshot["b"].in_progress);
    }
}
