use proptest::prelude::*;

use super::*;

/// A plan of key `key` (its aggregation does not matter to the record's layout).
fn plan(key: &str) -> Plan {
    let json = format!(
        r#"{{"key": "{key}", "where": null, "aggregate": {{"kind": "last_seen", "by": null}}, "retention_ms": 1000}}"#
    );
    Plan::from_json(&json).unwrap()
}

/// A record whose states are `stored` (keys in the order given, some twice or out of
/// order: what the merge must refuse), with the ranges `decode_in_place` finds.
fn record_of(stored: &[(String, Vec<u8>)]) -> (Vec<u8>, Vec<StoredState>) {
    let states: Vec<(&[u8], StateBytes<'_>)> = (stored.iter())
        .map(|(key, state)| (key.as_bytes(), StateBytes::Native(state)))
        .collect();
    let data = record::encode_parts(&BTreeMap::new(), &states, &BTreeMap::new());
    let (_, ranges) = record::decode_in_place(&data).unwrap();
    (data, ranges)
}

fn key() -> impl Strategy<Value = String> {
    "[abc]@[12]"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn merging_the_keys_is_sorting_them(
        plan_keys in prop::collection::vec(key(), 0..5),
        new in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..3)), 5),
        stored in prop::collection::vec((key(), prop::collection::vec(any::<u8>(), 0..3)), 0..6),
        sorted_stored in any::<bool>(),
        declared in prop::collection::hash_set(key(), 0..6),
        expired in prop::collection::hash_set(key(), 0..2),
        applied in any::<bool>(),
    ) {
        let plans: Vec<Plan> = plan_keys.iter().map(|key| plan(key)).collect();
        let new = &new[..plans.len()];
        let mut stored = stored;
        if sorted_stored {
            stored.sort();
            stored.dedup_by(|a, b| a.0 == b.0);
        }
        let (data, ranges) = record_of(&stored);
        let versions = Versions {
            declared,
            expired,
            names: ["a", "b"].iter().map(|name| name.to_string()).collect(),
        };
        let keys = PlanKeys::new(&plans, &versions);
        let new = applied.then_some(new);
        let slow = slow_states(&data, &ranges, &plans, new, &versions);
        // The buffer as another user left it: cleared by the merge.
        let mut merged = vec![(b"left over".as_slice(), StateBytes::Native(b"x"))];
        let done = keys.merge(&data, &ranges, new, &versions, &mut merged);
        // Stored keys as written (in order, once) are merged whenever the plans' keys are
        // distinct; keys out of order may happen to be in order.
        if sorted_stored && keys.sorted.is_some() {
            prop_assert!(done);
        }
        if done {
            let written = |states: &[(&[u8], StateBytes<'_>)]| {
                record::encode_parts(&BTreeMap::new(), states, &BTreeMap::new())
            };
            prop_assert_eq!(written(&merged), written(&slow));
        }
    }
}

proptest! {
    /// Any batch's events grouped by user by the counting sort are what a `Vec` per user
    /// gathered (the code it replaces): each user's events, in arrival order, users in
    /// index order, users without events empty.
    #[test]
    fn events_grouped_by_user_as_a_vec_per_user_groups_them(
        users in 0usize..6,
        picks in proptest::collection::vec(0usize..6, 0..40),
    ) {
        let user: Vec<u32> = if users == 0 {
            Vec::new()
        } else {
            picks.iter().map(|p| (p % users) as u32).collect()
        };
        let arrivals = Arrivals { users, user, ..Arrivals::default() };
        let mut expected: Vec<Vec<usize>> = vec![Vec::new(); users];
        for (i, &u) in arrivals.user.iter().enumerate() {
            expected[u as usize].push(i);
        }
        let grouped: Vec<Vec<usize>> = by_user(&arrivals).chunks().map(<[usize]>::to_vec).collect();
        prop_assert_eq!(grouped, expected);
    }
}

/// `Selection::foreign_states` as it was: every stored state of a plan found first, then
/// those not native kept.
fn foreign_states_of_plan_states<'s>(
    selection: &Selection,
    plans: &[Plan],
    stored: &[Option<&'s [u8]>],
) -> Vec<PlanState<'s>> {
    (selection.plan_states(plans, stored, |_| true).into_iter())
        .filter(|(_, _, value)| record::unwrap_native(value).is_none())
        .collect()
}

proptest! {
    /// Any users' stored states (keys of the plans or not, some twice; native or in the
    /// Python codec's form), with events to apply or not, records or none: the states to
    /// migrate are the ones the code it replaces finds, in its order.
    #[test]
    fn foreign_states_are_the_plans_states_not_native(
        users in proptest::collection::vec(
            (
                proptest::collection::vec((key(), any::<bool>(), any::<u8>()), 0..6),
                any::<bool>(),
                any::<bool>(),
            ),
            0..5,
        ),
        plan_keys in proptest::collection::vec(key(), 0..4),
    ) {
        let plans: Vec<Plan> = plan_keys.iter().map(|key| plan(key)).collect();
        let mut datas = Vec::new();
        let mut selection = Selection::default();
        for (states, fresh, has_record) in &users {
            // A native state is a bin; a Python one any other msgpack value (an int here).
            let stored: Vec<(String, Vec<u8>)> = (states.iter())
                .map(|(key, native, byte)| (key.clone(), vec![*byte; usize::from(*native)]))
                .collect();
            let (data, ranges) = if *has_record {
                let states: Vec<(&[u8], StateBytes<'_>)> = (stored.iter())
                    .map(|(key, state)| match state.is_empty() {
                        true => (key.as_bytes(), StateBytes::Value(&[0x07][..])),
                        false => (key.as_bytes(), StateBytes::Native(state)),
                    })
                    .collect();
                let data = record::encode_parts(&BTreeMap::new(), &states, &BTreeMap::new());
                let (_, ranges) = record::decode_in_place(&data).unwrap();
                (Some(data), ranges)
            } else {
                (None, Vec::new())
            };
            datas.push(data);
            selection.records.push(UserRecord::default());
            selection.stored_states.push(ranges);
            selection.fresh.push(if *fresh { vec![0] } else { Vec::new() });
        }
        let stored: Vec<Option<&[u8]>> = datas.iter().map(Option::as_deref).collect();
        prop_assert_eq!(
            selection.foreign_states(&plans, &stored).unwrap(),
            foreign_states_of_plan_states(&selection, &plans, &stored)
        );
    }
}
