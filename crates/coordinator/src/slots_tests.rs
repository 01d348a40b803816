//! Tests of `slots::record` and `slots::plan`: which inactive slots are stale on which member.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn view(name: &str, instance: &str, role: MemberRole, term: u64, inactive: &[&str]) -> MemberView {
    let mut view = MemberView::for_test(name, role, term);
    let observed = view.observed_mut();
    observed.instance_name = instance.into();
    observed.inactive_slots = inactive.iter().map(|s| (*s).to_owned()).collect();
    view
}

fn known(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(m, s)| ((*m).to_owned(), (*s).to_owned()))
        .collect()
}

#[test]
fn record_keeps_every_member_seen_and_reports_changes() {
    let mut slots = known(&[("gone", "pg_9")]);
    let views = vec![
        view("a", "PG-1", MemberRole::Primary, 2, &[]),
        view("b", "pg-2", MemberRole::Replica, 2, &[]),
        MemberView {
            last: None,
            ..view("c", "x", MemberRole::Replica, 2, &[])
        },
    ];
    assert!(record(&mut slots, &views));
    assert_eq!(
        slots,
        known(&[("a", "pg_1"), ("b", "pg_2"), ("gone", "pg_9")])
    );
    assert!(!record(&mut slots, &views), "nothing new the second time");
}

#[test]
fn a_demoted_primary_drops_its_former_standbys_slots() {
    let slots = known(&[("a", "a"), ("b", "b"), ("c", "c")]);
    let views = vec![
        view("a", "a", MemberRole::Replica, 2, &["b", "c", "backup_tool"]),
        view("b", "b", MemberRole::Primary, 2, &[]),
        view("c", "c", MemberRole::Replica, 2, &[]),
    ];
    assert_eq!(
        plan(&slots, &views, "b"),
        vec![SlotDrop {
            member: "a".into(),
            term: 2,
            slots: vec!["b".into(), "c".into()],
        }],
        "member slots only; a slot of another name (backup_tool) is never touched"
    );
}

#[test]
fn the_primary_keeps_a_configured_members_slot_and_drops_a_removed_ones() {
    let slots = known(&[("a", "a"), ("b", "b"), ("c", "c"), ("d", "d")]);
    // b is down: its slot on the primary is inactive but it is still a member.
    let views = vec![
        view("a", "a", MemberRole::Primary, 3, &["b", "d", "other"]),
        MemberView {
            reachable: false,
            unhealthy_for: Some(Duration::from_secs(60)),
            ..view("b", "b", MemberRole::Replica, 3, &[])
        },
        view("c", "c", MemberRole::Replica, 3, &[]),
    ];
    assert_eq!(
        plan(&slots, &views, "a"),
        vec![SlotDrop {
            member: "a".into(),
            term: 3,
            slots: vec!["d".into()],
        }]
    );
}

#[test]
fn a_removed_members_slot_name_taken_by_a_current_member_is_kept() {
    // "old" was removed; "new" took over its instance_name, so the slot is current again.
    let slots = known(&[("a", "a"), ("new", "pg_2"), ("old", "pg_2")]);
    let views = vec![
        view("a", "a", MemberRole::Primary, 1, &["pg_2"]),
        view("new", "pg-2", MemberRole::Replica, 1, &[]),
    ];
    assert!(plan(&slots, &views, "a").is_empty());
}

#[test]
fn unhealthy_fenced_and_stale_primary_members_are_left_alone() {
    let slots = known(&[("a", "a"), ("b", "b"), ("c", "c")]);
    let mut fenced = view("c", "c", MemberRole::Replica, 2, &["a", "b"]);
    if let Some(o) = fenced.last.as_mut() {
        o.fenced = true;
    }
    let down = MemberView {
        unhealthy_for: Some(Duration::from_secs(1)),
        ..view("c", "c", MemberRole::Replica, 2, &["a", "b"])
    };
    let stale_primary = view("a", "a", MemberRole::Primary, 1, &["b", "c"]);
    for other in [fenced, down] {
        let views = vec![
            stale_primary.clone(),
            view("b", "b", MemberRole::Primary, 2, &[]),
            other,
        ];
        assert!(plan(&slots, &views, "b").is_empty(), "{views:?}");
    }
}

#[test]
fn unknown_members_are_not_taken_for_removed_ones() {
    // Nothing recorded yet (a first round): nothing is stale.
    let views = vec![
        view("a", "a", MemberRole::Primary, 1, &["b"]),
        view("b", "b", MemberRole::Replica, 1, &["a"]),
    ];
    assert!(plan(&BTreeMap::new(), &views, "a").is_empty());
}
