//! Decision table tests for `decide`.

use super::*;

const T: Duration = Duration::from_secs(3);

fn lsn(s: &str) -> Option<Lsn> {
    Some(s.parse().unwrap())
}

fn primary(name: &str, term: u64) -> MemberView {
    let mut view = MemberView::for_test(name, MemberRole::Primary, term);
    view.observed_mut().timeline = Some(term as u32);
    view
}

fn replica(name: &str, received: &str, replayed: &str) -> MemberView {
    let mut view = MemberView::for_test(name, MemberRole::Replica, 1);
    let observed = view.observed_mut();
    observed.received_lsn = lsn(received);
    observed.replayed_lsn = lsn(replayed);
    view
}

fn down(mut m: MemberView, for_: Duration) -> MemberView {
    m.reachable = false;
    m.unhealthy_for = Some(for_);
    m
}

fn pg_down(mut m: MemberView, for_: Duration) -> MemberView {
    if let Some(o) = m.last.as_mut() {
        o.postgres_up = false;
    }
    m.unhealthy_for = Some(for_);
    m
}

fn input(members: Vec<MemberView>) -> Input {
    Input {
        term: 1,
        uptime: Duration::from_secs(60),
        members,
    }
}

fn policy(sync: Option<SyncConfig>) -> Policy {
    Policy {
        failure_threshold: T,
        synchronous: sync,
    }
}

fn sync(method: SyncMethod, number: usize, data_durability: Durability) -> Option<SyncConfig> {
    Some(SyncConfig {
        method,
        number,
        data_durability,
    })
}

fn failover_to(d: &Decision) -> (String, u64, Vec<String>) {
    match &d.action {
        Action::Failover {
            candidate,
            term,
            fence,
            ..
        } => (candidate.clone(), *term, fence.clone()),
        other => panic!("expected a failover, got {other:?}"),
    }
}

fn refused(d: &Decision) -> &str {
    match &d.action {
        Action::Refuse { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn healthy_primary_does_nothing() {
    let d = decide(
        &input(vec![primary("a", 1), replica("b", "0/5", "0/5")]),
        &policy(None),
    );
    assert_eq!(d.primary.as_deref(), Some("a"));
    assert!(matches!(d.action, Action::None { .. }), "{d:?}");
    assert_eq!(d.synchronous_standby_names, "");
}

#[test]
fn unhealthy_below_threshold_waits() {
    for m in [
        down(primary("a", 1), Duration::from_secs(2)),
        pg_down(primary("a", 1), Duration::from_secs(2)),
    ] {
        let d = decide(&input(vec![m, replica("b", "0/5", "0/5")]), &policy(None));
        assert!(matches!(d.action, Action::None { .. }), "{d:?}");
        assert!(d.action.reason().contains("below the failure threshold"));
    }
}

#[test]
fn unreachable_primary_fails_over_with_next_term_no_fence() {
    let d = decide(
        &input(vec![down(primary("a", 1), T), replica("b", "0/5", "0/5")]),
        &policy(None),
    );
    assert_eq!(failover_to(&d), ("b".into(), 2, vec![]));
    assert!(d.action.reason().contains("unreachable"), "{d:?}");
}

#[test]
fn postgres_down_primary_is_fenced_when_reachable() {
    let d = decide(
        &input(vec![
            pg_down(primary("a", 1), T),
            replica("b", "0/5", "0/5"),
        ]),
        &policy(None),
    );
    assert_eq!(failover_to(&d), ("b".into(), 2, vec!["a".into()]));
    assert!(d.action.reason().contains("postgres down"), "{d:?}");
}

#[test]
fn candidate_order_received_then_replayed_then_name() {
    let primary = || down(primary("a", 1), T);
    let cases = [
        (
            vec![replica("b", "0/5", "0/5"), replica("c", "0/6", "0/1")],
            "c",
        ),
        (
            vec![replica("b", "0/6", "0/5"), replica("c", "0/6", "0/4")],
            "b",
        ),
        (
            vec![replica("c", "0/6", "0/5"), replica("b", "0/6", "0/5")],
            "b",
        ),
        (
            vec![
                replica("b", "1/0", "0/5"),
                replica("c", "0/FFFFFFFF", "0/FFFFFFFF"),
            ],
            "b",
        ),
    ];
    for (replicas, expected) in cases {
        let mut members = vec![primary()];
        members.extend(replicas);
        let d = decide(&input(members), &policy(None));
        assert_eq!(failover_to(&d).0, expected, "{d:?}");
    }
}

#[test]
fn ineligible_replicas_are_skipped() {
    let mut fenced = replica("b", "0/9", "0/9");
    fenced.last.as_mut().unwrap().fenced = true;
    let unreachable = down(replica("c", "0/9", "0/9"), Duration::from_secs(1));
    let mut ahead = replica("d", "0/9", "0/9");
    ahead.last.as_mut().unwrap().term = 7;
    let pg = pg_down(replica("e", "0/9", "0/9"), Duration::from_secs(1));
    let ok = replica("f", "0/1", "0/1");
    let d = decide(
        &input(vec![
            down(primary("a", 1), T),
            fenced,
            unreachable,
            ahead,
            pg,
            ok,
        ]),
        &policy(None),
    );
    // d reports term 7: the next term is above every observed one, and d (term 7, ahead of
    // the persisted 1) is eligible against the observed maximum.
    assert_eq!(d.term, 7);
    let (candidate, term, _) = failover_to(&d);
    assert_eq!(term, 8);
    assert_eq!(candidate, "d");
}

#[test]
fn no_candidate_refuses() {
    let d = decide(
        &input(vec![
            down(primary("a", 1), T),
            down(replica("b", "0/5", "0/5"), T),
        ]),
        &policy(None),
    );
    assert!(refused(&d).contains("no eligible replica"), "{d:?}");
}

#[test]
fn term_never_goes_back() {
    let mut i = input(vec![down(primary("a", 1), T), replica("b", "0/5", "0/5")]);
    i.term = 5;
    let d = decide(&i, &policy(None));
    assert_eq!(failover_to(&d).1, 6);
}

#[test]
fn highest_term_primary_wins() {
    let d = decide(
        &input(vec![
            down(primary("a", 1), Duration::from_secs(100)),
            primary("b", 2),
            replica("c", "0/5", "0/5"),
        ]),
        &policy(None),
    );
    assert_eq!(d.primary.as_deref(), Some("b"));
    assert!(matches!(d.action, Action::None { .. }), "{d:?}");
}

#[test]
fn no_primary_waits_for_uptime_then_fails_over() {
    let mut i = input(vec![replica("b", "0/5", "0/5"), replica("c", "0/6", "0/6")]);
    i.uptime = Duration::from_secs(1);
    let d = decide(&i, &policy(None));
    assert!(matches!(d.action, Action::None { .. }), "{d:?}");
    i.uptime = T;
    let d = decide(&i, &policy(None));
    assert_eq!(failover_to(&d), ("c".into(), 2, vec![]));
    assert!(d.action.reason().contains("no primary observed"));
}

#[test]
fn required_any_needs_n_minus_k_plus_1_visible() {
    // n = 3 standbys, k = 1: all 3 must be visible; k = 2: 2; k = 3: 1.
    let members = |visible: usize| {
        let mut m = vec![down(primary("a", 1), T)];
        for (i, name) in ["b", "c", "d"].iter().enumerate() {
            let r = replica(name, "0/5", "0/5");
            m.push(if i < visible { r } else { down(r, T) });
        }
        m
    };
    for (k, needed) in [(1, 3), (2, 2), (3, 1)] {
        for visible in 0..=3 {
            let d = decide(
                &input(members(visible)),
                &policy(sync(SyncMethod::Any, k, Durability::Required)),
            );
            if visible >= needed {
                assert_eq!(failover_to(&d).0, "b", "k={k} visible={visible}");
            } else {
                let reason = refused(&d);
                assert!(
                    reason.contains(&format!("ANY {k} of 3 standbys"))
                        && reason.contains(&format!("at least {needed} standbys"))
                        && reason.contains(&format!("only {visible} visible")),
                    "k={k} visible={visible}: {reason}"
                );
            }
        }
    }
}

#[test]
fn required_first_uses_the_same_rule() {
    let d = decide(
        &input(vec![
            down(primary("a", 1), T),
            replica("b", "0/5", "0/5"),
            down(replica("c", "0/5", "0/5"), T),
        ]),
        &policy(sync(SyncMethod::First, 1, Durability::Required)),
    );
    assert!(refused(&d).contains("FIRST 1 of 2"), "{d:?}");
}

#[test]
fn preferred_promotes_whatever_is_visible() {
    let d = decide(
        &input(vec![
            down(primary("a", 1), T),
            replica("b", "0/5", "0/5"),
            down(replica("c", "0/9", "0/9"), T),
        ]),
        &policy(sync(SyncMethod::Any, 1, Durability::Preferred)),
    );
    assert_eq!(failover_to(&d).0, "b");
}

#[test]
fn synchronous_names() {
    let mut archive_only = replica("e", "0/5", "0/5");
    archive_only.last.as_mut().unwrap().streaming = false;
    let members = vec![
        primary("a", 1),
        replica("b", "0/5", "0/5"),
        down(replica("c", "0/5", "0/5"), T),
        replica("d", "0/5", "0/5"),
        archive_only,
    ];
    let cases = [
        (None, "".to_owned()),
        (
            sync(SyncMethod::Any, 1, Durability::Required),
            r#"ANY 1 ("b", "d")"#.to_owned(),
        ),
        (
            sync(SyncMethod::First, 2, Durability::Preferred),
            r#"FIRST 2 ("b", "d")"#.to_owned(),
        ),
        (
            sync(SyncMethod::Any, 3, Durability::Preferred),
            r#"ANY 2 ("b", "d")"#.to_owned(),
        ),
        (
            sync(SyncMethod::Any, 3, Durability::Required),
            format!(r#"ANY 3 ("b", "d", "{PLACEHOLDER}_1")"#),
        ),
        (
            sync(SyncMethod::Any, 0, Durability::Required),
            "".to_owned(),
        ),
    ];
    for (s, expected) in cases {
        let d = decide(&input(members.clone()), &policy(s));
        assert_eq!(d.synchronous_standby_names, expected, "{s:?}");
    }
    // No standby at all.
    let alone = input(vec![primary("a", 1)]);
    let d = decide(
        &alone,
        &policy(sync(SyncMethod::Any, 1, Durability::Required)),
    );
    assert_eq!(
        d.synchronous_standby_names,
        format!(r#"ANY 1 ("{PLACEHOLDER}_1")"#)
    );
    let d = decide(
        &alone,
        &policy(sync(SyncMethod::Any, 1, Durability::Preferred)),
    );
    assert_eq!(d.synchronous_standby_names, "");
}

#[test]
fn failover_names_exclude_the_candidate() {
    let d = decide(
        &input(vec![
            down(primary("a", 1), T),
            replica("b", "0/6", "0/6"),
            replica("c", "0/5", "0/5"),
        ]),
        &policy(sync(SyncMethod::Any, 1, Durability::Preferred)),
    );
    assert_eq!(failover_to(&d).0, "b");
    assert_eq!(d.synchronous_standby_names, r#"ANY 1 ("c")"#);
    // A replica whose stream broke with the old primary is repointed to the new one at once:
    // it is named too (the new primary waits for it instead of a placeholder).
    let mut broken = replica("c", "0/5", "0/5");
    if let Some(o) = broken.last.as_mut() {
        o.streaming = false;
    }
    let d = decide(
        &input(vec![
            down(primary("a", 1), T),
            replica("b", "0/6", "0/6"),
            broken,
        ]),
        &policy(sync(SyncMethod::Any, 1, Durability::Required)),
    );
    assert_eq!(failover_to(&d).0, "b");
    assert_eq!(d.synchronous_standby_names, r#"ANY 1 ("c")"#);
}

#[test]
fn required_without_an_observed_primary_presumes_one_member_is_it() {
    let never_seen = MemberView {
        name: "a".into(),
        reachable: false,
        last: None,
        unhealthy_for: Some(T),
    };
    let p = policy(sync(SyncMethod::Any, 1, Durability::Required));
    let d = decide(
        &input(vec![never_seen.clone(), replica("b", "0/5", "0/5")]),
        &p,
    );
    assert_eq!(failover_to(&d), ("b".into(), 2, vec![]));
    // n = 2 presumed standbys (b, c), k = 1: both must be visible.
    let d = decide(
        &input(vec![
            never_seen,
            replica("b", "0/5", "0/5"),
            down(replica("c", "0/5", "0/5"), T),
        ]),
        &p,
    );
    assert!(refused(&d).contains("ANY 1 of 2 standbys"), "{d:?}");
}

#[test]
fn stale_primary_back_after_failover_is_fenced() {
    let mut fenced_already = primary("c", 1);
    fenced_already.last.as_mut().unwrap().fenced = true;
    let d = decide(
        &input(vec![
            primary("a", 1),
            primary("b", 2),
            fenced_already,
            down(primary("d", 1), T),
        ]),
        &policy(None),
    );
    assert_eq!(d.primary.as_deref(), Some("b"));
    match &d.action {
        Action::Fence { members, reason } => {
            assert_eq!(members, &vec!["a".to_owned()]);
            assert!(
                reason.contains("a still report(s) being primary"),
                "{reason}"
            );
        }
        other => panic!("expected a fence, got {other:?}"),
    }
}

#[test]
fn switchover_names_count_the_demoted_primary() {
    let members = vec![
        primary("a", 1),
        replica("b", "0/6", "0/6"),
        replica("c", "0/5", "0/5"),
    ];
    let required = policy(sync(SyncMethod::Any, 1, Durability::Required));
    assert_eq!(
        switchover_names(&members, &required, "a", "b"),
        r#"ANY 1 ("a", "c")"#
    );
    // `preferred` names only what streams now: c (a is restarting as a standby).
    let preferred = policy(sync(SyncMethod::Any, 1, Durability::Preferred));
    assert_eq!(
        switchover_names(&members, &preferred, "a", "b"),
        r#"ANY 1 ("c")"#
    );
    assert_eq!(switchover_names(&members, &policy(None), "a", "b"), "");
}
