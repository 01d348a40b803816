//! What the coordinator's view means for a manager whose role file says primary of a term:
//! confirmed (start, or keep running), superseded (a newer primary exists: stop and stay
//! fenced), or undecided (keep waiting, and why). Pure, so every case is unit-tested.

use pgsteward_api::ClusterView;

/// The outcome for this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The coordinator names this instance the primary of `term`, the term it holds.
    Confirmed { term: u64 },
    /// Another instance is the primary of a newer term.
    Superseded(String),
    /// Nothing can be concluded yet.
    Undecided(String),
}

/// Judge `view` for the instance `me`, primary of `my_term` by its role file.
pub fn judge(view: &ClusterView, me: &str, my_term: u64) -> Verdict {
    let (Some(primary), Some(term)) = (view.primary_instance.as_deref(), view.primary_term) else {
        return Verdict::Undecided(format!(
            "the coordinator names no primary yet (term {})",
            view.term
        ));
    };
    if primary == me {
        if term == my_term {
            Verdict::Confirmed { term }
        } else {
            Verdict::Undecided(format!(
                "the coordinator sees this instance as primary of term {term}, its role file says term {my_term}"
            ))
        }
    } else if term > my_term {
        Verdict::Superseded(format!(
            "superseded: the coordinator names {primary} the primary of term {term} (this instance was the primary of term {my_term})"
        ))
    } else {
        Verdict::Undecided(format!(
            "the coordinator names {primary} (term {term}) primary, not newer than this instance's term {my_term}: waiting until it sees this instance"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(primary: Option<&str>, term: Option<u64>) -> ClusterView {
        ClusterView {
            term: term.unwrap_or(0),
            primary: primary.map(|p| format!("member-{p}")),
            primary_instance: primary.map(str::to_owned),
            primary_term: term,
        }
    }

    #[test]
    fn confirmed_only_for_this_instance_in_its_term() {
        assert_eq!(
            judge(&view(Some("a"), Some(3)), "a", 3),
            Verdict::Confirmed { term: 3 }
        );
        assert!(matches!(
            judge(&view(Some("a"), Some(4)), "a", 3),
            Verdict::Undecided(_)
        ));
    }

    #[test]
    fn a_newer_primary_supersedes() {
        match judge(&view(Some("b"), Some(4)), "a", 3) {
            Verdict::Superseded(reason) => {
                assert!(reason.contains("b the primary of term 4"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_older_or_missing_primary_is_undecided() {
        assert!(matches!(
            judge(&view(Some("b"), Some(3)), "a", 3),
            Verdict::Undecided(_)
        ));
        assert!(matches!(
            judge(&view(Some("b"), Some(2)), "a", 3),
            Verdict::Undecided(_)
        ));
        assert!(matches!(
            judge(&view(None, None), "a", 3),
            Verdict::Undecided(_)
        ));
    }
}
