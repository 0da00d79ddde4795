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
