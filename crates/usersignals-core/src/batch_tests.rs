use proptest::prelude::*;

use super::*;
use crate::context::{NameSet, ReadContext};
use crate::dedupe::fingerprint;
use crate::json_body::{write_answer, write_decoded_answer};
use crate::record;

/// The reference signals' plans as the DSL compiles them, and a LastSeen by surface: every
/// aggregation.
const PLANS: [&str; 6] = [
    r#"{"key": "recent@1", "where": {"field": "action", "op": "in", "value": ["click", "save"]}, "aggregate": {"kind": "last_n", "n": 6, "keep": ["item_id", "action", "surface", "category"], "dedupe_by": null}, "retention_ms": 7776000000}"#,
    r#"{"key": "counts@1", "where": null, "aggregate": {"kind": "count", "by": ["action", "surface"], "tiles": [{"resolution": "5m", "span": "2h"}, {"resolution": "1d", "span": "retention"}], "tiers_ms": [[300000, 7200000], [86400000, 0]]}, "retention_ms": 2419200000}"#,
    r#"{"key": "interest@1", "where": null, "aggregate": {"kind": "decayed_scores", "key": "category", "half_life": "1w", "weights": {"click": 2.0, "save": 4.0, "hide": -4.0}, "default_weight": 0.0, "top_k": 3, "half_life_ms": 604800000}, "retention_ms": 7776000000}"#,
    r#"{"key": "taste@1", "where": null, "aggregate": {"kind": "mean_vector", "of": "embedding", "dim": 2, "half_life": "1w", "weights": {"click": 2.0, "save": 4.0}, "default_weight": 1.0, "half_life_ms": 604800000}, "retention_ms": 7776000000}"#,
    r#"{"key": "creators@1", "where": null, "aggregate": {"kind": "distinct", "of": "creator_id", "precision": 8, "bucket": "1d", "standard_error": 0.065, "bucket_ms": 86400000}, "retention_ms": 604800000}"#,
    r#"{"key": "seen@1", "where": null, "aggregate": {"kind": "last_seen", "by": "surface"}, "retention_ms": 604800000}"#,
];

/// The Distinct and LastSeen plans read their field's Python `str()`: a `str:` column.
const FIELDS: [&str; 6] = [
    "item_id",
    "action",
    "surface",
    "category",
    "str:creator_id",
    "str:surface",
];
const DAY_MS: i64 = 86_400_000;

/// One event: (user, time, action, surface, category, item, vector or not).
type Event = (u32, i64, usize, usize, usize, u8, Option<(i8, i8)>);

fn arb_event() -> impl Strategy<Value = Event> {
    (
        0u32..3,
        0..40 * DAY_MS,
        0usize..3,
        0usize..2,
        0usize..4,
        any::<u8>(),
        proptest::option::of((any::<i8>(), any::<i8>())),
    )
}

fn batch_of(events: &[Event], users: usize, first_id: usize) -> Batch {
    let text = |s: &str| Value::Str(s.to_owned());
    let column = |field: usize| -> Vec<Value> {
        events
            .iter()
            .map(|&(_, _, action, surface, category, item, _)| match field {
                0 => text(&format!("i{item}")),
                1 => text(["click", "save", "hide"][action]),
                2 | 5 => text(["home", "search"][surface]),
                3 => text(["art", "food", "sport", "travel"][category]),
                _ => text(&format!("c{}", item % 7)),
            })
            .collect()
    };
    Batch {
        users,
        user: events.iter().map(|e| e.0).collect(),
        ts: events.iter().map(|e| 1_700_000_000_000 + e.1).collect(),
        fingerprint: (first_id..first_id + events.len())
            .map(|i| fingerprint(&format!("e{i}")))
            .collect(),
        names: FIELDS.iter().map(|name| (*name).to_owned()).collect(),
        columns: (0..FIELDS.len()).map(column).collect(),
        vectors: vec![(
            crate::plan::vector_column("embedding"),
            events
                .iter()
                .map(|e| {
                    e.6.map(|(a, b)| [f64::from(a) / 8.0, f64::from(b) / 8.0].into())
                })
                .collect(),
        )],
    }
}

/// Batch boundaries over `len` events: 0, the cuts (wrapped into range), `len`, ascending.
fn bounds(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    bounds.extend([0, len]);
    bounds.sort_unstable();
    bounds
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// States kept decoded from batch to batch end in the bytes that decoding each batch's
    /// stored bytes ends in, batch after batch, with the same counts.
    #[test]
    fn decoded_states_write_the_bytes_stored_states_write(
        events in proptest::collection::vec(arb_event(), 1..60),
        cuts in proptest::collection::vec(0usize..60, 0..5),
    ) {
        let plans: Vec<Plan> = PLANS.iter().map(|p| Plan::from_json(p).unwrap()).collect();
        let users = 3;
        let bounds = bounds(events.len(), &cuts);
        let mut stored: Vec<Vec<Option<Vec<u8>>>> = vec![vec![None; plans.len()]; users];
        let mut decoded: Vec<Vec<Option<Decoded>>> = vec![vec![None; plans.len()]; users];
        for span in bounds.windows(2) {
            let batch = batch_of(&events[span[0]..span[1]], users, span[0]);
            let slices: Vec<Vec<Option<&[u8]>>> = stored
                .iter()
                .map(|user| user.iter().map(Option::as_deref).collect())
                .collect();
            let from_bytes = execute(&plans, &batch, &slices).unwrap();
            let from_decoded = apply_decoded(&plans, &batch, &mut decoded).unwrap();
            prop_assert_eq!(&from_decoded.applied, &from_bytes.applied);
            prop_assert_eq!(&from_decoded.expired, &from_bytes.expired);
            for (user, states) in from_bytes.states.iter().enumerate() {
                for (plan, bytes) in states.iter().enumerate() {
                    prop_assert_eq!(from_decoded.states[user][plan].is_some(), bytes.is_some());
                    if let Some(bytes) = bytes {
                        let state = decoded[user][plan].as_ref().unwrap();
                        prop_assert_eq!(&state.encode(&plans[plan]).unwrap(), bytes);
                    }
                }
            }
            for (user, states) in from_bytes.states.into_iter().enumerate() {
                for (plan, state) in states.into_iter().enumerate() {
                    if let Some(bytes) = state {
                        stored[user][plan] = Some(bytes);
                    }
                }
            }
        }
        for (user, states) in decoded.iter().enumerate() {
            for (plan, state) in states.iter().enumerate() {
                let encoded = state.as_ref().map(|s| s.encode(&plans[plan]).unwrap());
                prop_assert_eq!(&encoded, &stored[user][plan]);
            }
        }
    }
}

/// A read's context: (as_of days back from the newest event or none, window in days or
/// none, actions, surfaces, exclude a category or item, dedupe, limit).
type Context = (
    Option<i64>,
    Option<i64>,
    bool,
    bool,
    bool,
    bool,
    Option<usize>,
);

fn arb_context() -> impl Strategy<Value = Context> {
    (
        proptest::option::of(-1i64..45),
        proptest::option::of(1i64..10),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(0usize..4),
    )
}

fn read_context(context: Context, newest_ms: i64) -> ReadContext {
    let (as_of, window, actions, surfaces, exclude, dedupe, limit) = context;
    let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<NameSet>();
    let mut read = ReadContext {
        actions: actions.then(|| names(&["click"])),
        surfaces: surfaces.then(|| names(&["home"])),
        exclude: if exclude {
            names(&["art", "i3"])
        } else {
            NameSet::default()
        },
        dedupe,
        limit,
        ..ReadContext::default()
    };
    read.times.as_of_ms = as_of.map(|days| newest_ms - days * DAY_MS);
    read.times.now_ms = read.times.as_of_ms.unwrap_or(newest_ms);
    read.times.window_ms = window.map(|days| days * DAY_MS);
    read
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A state kept decoded reads as its stored bytes read, for every aggregation and
    /// random contexts (refusals included), after each of random batch splits: the training
    /// set's loop reads its states decoded where serving reads bytes.
    #[test]
    fn decoded_states_read_as_their_bytes_read(
        events in proptest::collection::vec(arb_event(), 1..60),
        cuts in proptest::collection::vec(0usize..60, 0..4),
        contexts in proptest::collection::vec(arb_context(), 1..4),
    ) {
        let plans: Vec<Plan> = PLANS.iter().map(|p| Plan::from_json(p).unwrap()).collect();
        let users = 3;
        let bounds = bounds(events.len(), &cuts);
        let mut decoded: Vec<Vec<Option<Decoded>>> = vec![vec![None; plans.len()]; users];
        let mut newest_ms = 1_700_000_000_000;
        for span in bounds.windows(2) {
            let batch = batch_of(&events[span[0]..span[1]], users, span[0]);
            newest_ms = batch.ts.iter().copied().chain([newest_ms]).max().unwrap();
            apply_decoded(&plans, &batch, &mut decoded).unwrap();
            for (states, context) in decoded.iter().zip(contexts.iter().cycle()) {
                let context = read_context(*context, newest_ms);
                for (plan, state) in plans.iter().zip(states) {
                    let stored = state.as_ref().map(|s| record::wrap_native(&s.encode(plan).unwrap()));
                    let (mut from_bytes, mut from_decoded) = (Vec::new(), Vec::new());
                    let bytes_answer = write_answer(plan, stored.as_deref(), &context, &mut from_bytes);
                    let decoded_answer = write_decoded_answer(plan, state.as_ref(), &context, &mut from_decoded);
                    prop_assert_eq!(&decoded_answer, &bytes_answer, "{}", plan.key);
                    prop_assert_eq!(
                        String::from_utf8(from_decoded).unwrap(),
                        String::from_utf8(from_bytes).unwrap(),
                        "{}", plan.key
                    );
                }
            }
        }
    }
}

#[test]
fn a_decoded_state_of_another_aggregation_is_refused() {
    let plans: Vec<Plan> = PLANS.iter().map(|p| Plan::from_json(p).unwrap()).collect();
    let batch = batch_of(&[(0, 0, 0, 0, 0, 1, None)], 1, 0);
    let mut decoded = vec![vec![None; plans.len()]];
    decoded[0][1] = Some(Decoded::LastN(Vec::new()));
    let error = apply_decoded(&plans, &batch, &mut decoded).unwrap_err();
    assert!(error.to_string().contains("another aggregation"), "{error}");
}

/// `column` without the items whose `keep` is false.
fn kept<T>(column: &mut Vec<T>, keep: &[bool]) {
    let mut keep = keep.iter();
    column.retain(|_| *keep.next().unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The executor keeps its row buffers from user to user and plan to plan: each user's
    /// states and counts out of a batch of several users are those of the user's events
    /// executed alone (fresh buffers), so nothing of one user's rows reaches another's.
    #[test]
    fn each_user_of_a_batch_ends_as_its_events_alone_end(
        events in proptest::collection::vec(arb_event(), 1..60),
    ) {
        let plans: Vec<Plan> = PLANS.iter().map(|p| Plan::from_json(p).unwrap()).collect();
        let users = 3;
        let none = vec![vec![None; plans.len()]; users];
        let together = execute(&plans, &batch_of(&events, users, 0), &none).unwrap();
        let mut applied = vec![0; plans.len()];
        for user in 0..users as u32 {
            // The user's events alone, with their batch-wide event ids (the ties).
            let mut alone = batch_of(&events, users, 0);
            let keep: Vec<bool> = events.iter().map(|e| e.0 == user).collect();
            kept(&mut alone.user, &keep);
            kept(&mut alone.ts, &keep);
            kept(&mut alone.fingerprint, &keep);
            for column in &mut alone.columns {
                kept(column, &keep);
            }
            for (_, column) in &mut alone.vectors {
                kept(column, &keep);
            }
            let out = execute(&plans, &alone, &none).unwrap();
            prop_assert_eq!(&out.states[user as usize], &together.states[user as usize]);
            for (total, count) in applied.iter_mut().zip(&out.applied) {
                *total += count;
            }
        }
        prop_assert_eq!(applied, together.applied);
    }
}

/// `run`'s filter flags as they were: one pass of each plan's filter, per plan.
fn accepted_per_plan(bound: &[Bound<'_>], batch: &Batch) -> Vec<Vec<bool>> {
    bound
        .iter()
        .map(|b| match &b.filter {
            None => vec![true; batch.ts.len()],
            Some(f) => (0..batch.ts.len())
                .map(|row| f.accepts(&batch.columns, row))
                .collect(),
        })
        .collect()
}

/// Filters the plans may take, some the same but for one operand (a float's sign, a value
/// more or less, another field).
const FILTERS: [&str; 7] = [
    "null",
    r#"{"field": "action", "op": "in", "value": ["click", "save"]}"#,
    r#"{"field": "action", "op": "in", "value": ["click", "save", "hide"]}"#,
    r#"{"field": "surface", "op": "in", "value": ["click", "save"]}"#,
    r#"{"field": "item_id", "op": ">", "value": 0.0}"#,
    r#"{"field": "item_id", "op": ">", "value": -0.0}"#,
    r#"{"not": {"field": "action", "op": "==", "value": "hide"}}"#,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Plans whose filters are the same share their flags, and every plan's flags are what
    /// its own pass of its filter gives.
    #[test]
    fn shared_filter_flags_are_each_plans_own(
        events in proptest::collection::vec(arb_event(), 0..60),
        filters in proptest::collection::vec(0usize..FILTERS.len(), 5),
    ) {
        let plans: Vec<Plan> = (PLANS[..5].iter().zip(&filters))
            .map(|(plan, &filter)| {
                let mut json: serde_json::Value = serde_json::from_str(plan).unwrap();
                json["where"] = serde_json::from_str(FILTERS[filter]).unwrap();
                Plan::from_json(&json.to_string()).unwrap()
            })
            .collect();
        let batch = batch_of(&events, 3, 0);
        let names: HashMap<&str, usize> =
            (batch.names.iter().enumerate()).map(|(i, n)| (n.as_str(), i)).collect();
        let bound: Vec<Bound<'_>> =
            plans.iter().map(|plan| bind(plan, &names, &batch).unwrap()).collect();
        let (flags, flags_of) = accepted(&bound, &batch);
        let expected = accepted_per_plan(&bound, &batch);
        for (p, own) in expected.iter().enumerate() {
            prop_assert_eq!(&flags[flags_of[p]], own);
        }
        let distinct: std::collections::HashSet<usize> = filters.iter().copied().collect();
        prop_assert_eq!(flags.len(), distinct.len());
    }
}
