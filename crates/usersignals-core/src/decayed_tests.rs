use hashbrown::HashMap;

use proptest::prelude::*;

use super::*;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const BASE: i64 = 1_767_225_600_000; // 2026-01-01T00:00Z

/// proptest's generated set as the context's.
fn names(set: &std::collections::HashSet<String>) -> NameSet {
    set.iter().cloned().collect()
}

fn spec(half_life: i64) -> DecayedSpec {
    DecayedSpec {
        key: "category".into(),
        decay: DecayParams {
            half_life_ms: half_life,
            weights: HashMap::from([("click".into(), 2.0), ("hide".into(), -4.0)]),
            default_weight: 0.5,
        },
        top_k: 5,
    }
}

/// `(ts, key, action)` rows.
type Raw = (i64, Value, Value);

fn rows_of(raw: &[Raw]) -> Vec<ScoresRow<'_>> {
    raw.iter()
        .map(|(ts, key, action)| ScoresRow {
            ts: *ts,
            key,
            action,
        })
        .collect()
}

fn apply_in_batches(spec: &DecayedSpec, retention: i64, raw: &[Raw], cuts: &[usize]) -> Vec<u8> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (raw.len() + 1)).collect();
    bounds.push(raw.len());
    bounds.sort_unstable();
    let (mut stored, mut start) = (None::<Vec<u8>>, 0);
    for end in bounds {
        if end <= start {
            continue;
        }
        let mut part = raw[start..end].to_vec();
        part.sort_by_key(|r| r.0);
        let (bytes, _) = apply_stored(spec, retention, stored.as_deref(), &rows_of(&part)).unwrap();
        stored = Some(bytes);
        start = end;
    }
    stored.unwrap_or_default()
}

/// A stored read's answer with its keys owned, as `read` answers.
fn owned(
    read: Result<(StoredProfile<'_>, Option<i64>), Refusal>,
) -> Result<(Profile, Option<i64>), Refusal> {
    read.map(|(top, newest)| {
        (
            top.into_iter().map(|(k, s)| (k.to_value(), s)).collect(),
            newest,
        )
    })
}

/// Rows of up to 60 keys of one kind per case, a few hours apart over 12 days: ties come
/// from keys with the same events.
fn many_keys_rows() -> impl Strategy<Value = Vec<Raw>> {
    let kind = prop::sample::select(vec!["digits", "words", "ints"]);
    (
        kind,
        prop::collection::vec((0i64..300, 0u32..60, 0usize..3), 1..120),
    )
        .prop_map(|(kind, rows)| {
            let actions = ["click", "hide", "view"];
            rows.into_iter()
                .map(|(hour, key, action)| {
                    let key = match kind {
                        "digits" => Value::Str(format!("c{key:03}")),
                        "words" => Value::Str(
                            ["x", "y", "zz"][key as usize % 3].repeat(1 + key as usize / 3),
                        ),
                        _ => Value::Int(i64::from(key) - 30),
                    };
                    (BASE + hour * HOUR, key, Value::Str(actions[action].into()))
                })
                .collect()
        })
}

fn raw_rows() -> impl Strategy<Value = Vec<Raw>> {
    rows_with(prop_oneof![
        Just(Value::Null),
        (0i64..4).prop_map(Value::Int),
        "[ab]{1,2}".prop_map(Value::Str),
    ])
}

/// Up to 60 rows over 400 hours, of these keys and three actions (one of negative weight).
fn rows_with(key: impl Strategy<Value = Value>) -> impl Strategy<Value = Vec<Raw>> {
    let action =
        prop::sample::select(vec!["click", "hide", "view"]).prop_map(|a| Value::Str(a.to_owned()));
    prop::collection::vec(
        ((0i64..400).prop_map(|h| BASE + h * HOUR), key, action),
        1..60,
    )
}

proptest! {
    #[test]
    fn any_batching_gives_the_same_bytes(
        raw in raw_rows(),
        cuts in prop::collection::vec(any::<usize>(), 0..5),
        half_life in prop::sample::select(vec![HOUR, 7 * DAY]),
        retention in prop::sample::select(vec![DAY, 10 * DAY]),
    ) {
        let spec = spec(half_life);
        prop_assert_eq!(
            apply_in_batches(&spec, retention, &raw, &cuts),
            apply_in_batches(&spec, retention, &raw, &[])
        );
    }

    /// The scores equal a naive float recompute over the events the view counts, within the
    /// fixed-point rounding: half of 2^-20 per event (decayed, so at most that).
    #[test]
    fn scores_equal_a_naive_recompute(raw in raw_rows(), after in 0i64..(3 * DAY)) {
        let (spec, retention) = (spec(7 * DAY), 90 * DAY);
        let mut sorted = raw.clone();
        sorted.sort_by_key(|r| r.0);
        let (state, _) = spec.apply(retention, None, &rows_of(&sorted));
        let view = state.newest + after;
        let scores = spec.scores(retention, &state, view).unwrap();
        let mut naive: HashMap<KeyClass, f64> = HashMap::new();
        for (ts, key, action) in &sorted {
            let weight = spec.decay.weight(action);
            if let (Some(class), true) = (KeyClass::of(key), weight != 0.0) {
                *naive.entry(class).or_default() +=
                    weight * 2f64.powf((ts - view) as f64 / spec.decay.half_life_ms as f64);
            }
        }
        prop_assert_eq!(scores.len(), naive.len());
        let bound = sorted.len() as f64 * 2f64.powi(-20);
        for (key, score) in scores {
            let expected = naive[&KeyClass::of(key).unwrap()];
            prop_assert!((score - expected).abs() <= bound, "{score} vs {expected}");
        }
    }

    /// The serving path (`read_stored`, over the bytes) answers exactly as `read` over the
    /// decoded state: the same keys, bit-equal scores, the same order and refusals.
    #[test]
    fn reading_the_bytes_equals_reading_the_decoded_state(
        raw in raw_rows(),
        half_life in prop::sample::select(vec![HOUR, 7 * DAY]),
        retention in prop::sample::select(vec![DAY, 10 * DAY]),
        view_offset in -(3 * DAY)..(3 * DAY),
        as_of in any::<bool>(),
        exclude in prop::collection::hash_set("[ab]{1,2}", 0..3),
        limit in prop::option::of(0usize..8),
    ) {
        let spec = spec(half_life);
        let bytes = apply_in_batches(&spec, retention, &raw, &[]);
        let state = decode(&bytes, spec.buckets(retention).bucket_ms).unwrap();
        let at = state.newest + view_offset;
        let times = Times {
            as_of_ms: as_of.then_some(at),
            now_ms: at,
            ..Times::default()
        };
        prop_assert_eq!(
            owned(spec.read_stored(retention, &bytes, &times, &names(&exclude), limit).unwrap()),
            spec.read(retention, &state, &times, &names(&exclude), limit)
        );
    }

    /// The same with many keys of one kind (the reference workload's categories `c000`…,
    /// stored as a digits column; words; ints), so the top k is a selection from more
    /// candidates than it keeps, with tied scores.
    #[test]
    fn the_selected_top_k_equals_the_sorted_one(
        raw in many_keys_rows(),
        view_offset in 0i64..(3 * DAY),
        exclude in prop::collection::hash_set("c0[0-9][0-9]", 0..4),
        limit in prop::option::of(0usize..12),
    ) {
        let (spec, retention) = (spec(7 * DAY), 10 * DAY);
        let bytes = apply_in_batches(&spec, retention, &raw, &[]);
        let state = decode(&bytes, DAY).unwrap();
        let times = Times { now_ms: state.newest + view_offset, ..Times::default() };
        prop_assert_eq!(
            owned(spec.read_stored(retention, &bytes, &times, &names(&exclude), limit).unwrap()),
            spec.read(retention, &state, &times, &names(&exclude), limit)
        );
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(&bytes, DAY);
        let _ = spec(DAY).read_stored(DAY, &bytes, &Times::default(), &NameSet::new(), None);
        // What the serving path reads, it reads as `decode` does.
        let stored = spec(DAY).read_stored(DAY, &bytes, &Times::default(), &NameSet::new(), None);
        if let Ok(read) = stored {
            let state = decode(&bytes, DAY).unwrap();
            let decoded = spec(DAY).read(DAY, &state, &Times::default(), &NameSet::new(), None);
            prop_assert_eq!(owned(read), decoded);
        }
    }
}

#[test]
fn a_read_inside_a_bucket_with_later_events_is_refused() {
    let (spec, retention) = (spec(7 * DAY), 90 * DAY);
    let raw = [
        (
            BASE + HOUR,
            Value::Str("a".into()),
            Value::Str("click".into()),
        ),
        (
            BASE + 5 * HOUR,
            Value::Str("b".into()),
            Value::Str("click".into()),
        ),
    ];
    let (state, _) = spec.apply(retention, None, &rows_of(&raw));
    let times = Times {
        as_of_ms: Some(BASE + 2 * HOUR),
        ..Times::default()
    };
    let refusal = spec
        .read(retention, &state, &times, &NameSet::new(), None)
        .unwrap_err();
    assert_eq!(refusal.earliest_ms, BASE + 5 * HOUR);
}

#[test]
fn ties_order_by_key_descending_and_mixed_types_by_repr() {
    let (a, b, seven) = (
        Value::Str("a".into()),
        Value::Str("b".into()),
        Value::Int(7),
    );
    let mut same_type = vec![(1.0, &a, ()), (2.0, &a, ()), (1.0, &b, ())];
    top_k(&mut same_type, 10);
    assert_eq!(same_type, [(2.0, &a, ()), (1.0, &b, ()), (1.0, &a, ())]);
    // repr: "7" > "'b'" > "'a'" (a quote sorts before a digit)
    let mut mixed = vec![(1.0, &a, ()), (1.0, &seven, ()), (1.0, &b, ())];
    top_k(&mut mixed, 2);
    assert_eq!(mixed, [(1.0, &seven, ()), (1.0, &b, ())]);
}

#[test]
fn python_equal_keys_share_a_cell_named_by_the_int() {
    let mut state = ScoresState::default();
    state.add(&Value::Bool(true), 1, 5);
    state.add(&Value::Int(1), 1, 2);
    state.add(&Value::Float(1.0), 1, 1);
    assert_eq!(state.keys, [Value::Int(1)]);
    assert_eq!(state.cells().collect::<Vec<_>>(), [(&Value::Int(1), 1, 8)]);
}

#[test]
fn sums_beyond_64_bits_round_trip() {
    let mut state = ScoresState {
        newest: BASE,
        ..ScoresState::default()
    };
    state.add(
        &Value::Str("a".into()),
        BASE / DAY,
        i128::from(i64::MAX) * 4,
    );
    state.add(&Value::Str("b".into()), BASE / DAY, -3);
    state.tops.insert(BASE / DAY, BASE);
    assert_eq!(decode(&encode(&state, DAY), DAY).unwrap(), state);
}

/// 92 days (90-day retention, 2-day look-back) of 40 categories a day, one event each: the
/// shape of the reference workload's busiest `category_interest` states.
#[test]
fn a_busy_profile_is_compact() {
    let spec = spec(7 * DAY);
    let raw: Vec<Raw> = (0..92 * 40)
        .map(|i| {
            let key = Value::Str(format!("category_{:02}", (i * 7) % 50));
            (
                BASE + (i / 40) * DAY + (i % 40) * 1000,
                key,
                Value::Str("view".into()),
            )
        })
        .collect();
    let (state, _) = spec.apply(90 * DAY, None, &rows_of(&raw));
    let bytes = encode(&state, DAY);
    // 3,680 cells: a byte of key position and 3 of sum each, plus the dictionary.
    assert!(bytes.len() < 92 * 40 * 5, "{}", bytes.len());
    assert_eq!(decode(&bytes, DAY).unwrap(), state);
}

/// Keys Python holds equal across kinds (`1 == 1.0 == True`) beside text and missing ones:
/// the dictionary's value for a class changes with the kinds met, its indices do not.
fn mixed_rows() -> impl Strategy<Value = Vec<Raw>> {
    rows_with(prop_oneof![
        Just(Value::Null),
        (0i64..4).prop_map(Value::Int),
        (0i64..4).prop_map(|k| Value::Float(k as f64)),
        Just(Value::Bool(true)),
        "[ab]{1,2}".prop_map(Value::Str),
    ])
}

proptest! {
    /// Applying over the stored bytes while re-encoding only the reached buckets, where the
    /// dictionary and the sums' form allow it, writes the bytes that decoding and encoding
    /// every bucket writes, and counts the same expired rows.
    #[test]
    fn splicing_the_reached_buckets_equals_encoding_them_all(
        before in prop_oneof![mixed_rows(), many_keys_rows()],
        after in mixed_rows(),
        shift in -(20 * DAY)..(30 * DAY),
        half_life in prop::sample::select(vec![HOUR, 7 * DAY]),
        retention in prop::sample::select(vec![DAY, 10 * DAY, 90 * DAY]),
    ) {
        let later = after.into_iter().map(|(ts, k, a)| (ts + shift, k, a)).collect();
        spliced_equals_full(&spec(half_life), retention, &before, later)?;
    }

    /// Whatever the stored bytes (a state with a byte changed, or cut short), splicing does
    /// not panic, and where decoding them all succeeds it writes a state of the same cells
    /// (a damaged bucket no row reaches may still decode, and is carried as it was).
    #[test]
    fn splicing_damaged_bytes_never_panics(
        before in mixed_rows(),
        after in mixed_rows(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let spec = spec(7 * DAY);
        let mut bytes = apply_in_batches(&spec, 90 * DAY, &before, &[]);
        let at = at % bytes.len();
        if cut { bytes.truncate(at) } else { bytes[at] = byte }
        let mut later = after;
        later.sort_by_key(|r| r.0);
        let rows = rows_of(&later);
        let spliced = apply_spliced(&spec, 90 * DAY, Some(&bytes), &rows);
        if let Ok((stored, expired)) = apply_stored(&spec, 90 * DAY, Some(&bytes), &rows) {
            let (spliced, spliced_expired) = spliced.unwrap();
            prop_assert_eq!(spliced_expired, expired);
            let (spliced, stored) = (decode(&spliced, DAY).unwrap(), decode(&stored, DAY).unwrap());
            // The same cells: a damaged dictionary's unused keys are dropped by a full
            // application only when a bucket expires (a canonical state holds none).
            prop_assert_eq!(spliced.cells().collect::<Vec<_>>(), stored.cells().collect::<Vec<_>>());
            prop_assert_eq!((spliced.newest, spliced.tops), (stored.newest, stored.tops));
        }
    }
}

proptest! {
    /// The same, for rows aimed at the splice: keys the state holds, near its newest time,
    /// some of them `hide`s that may change the sums' form (most cases take the splice).
    #[test]
    fn splicing_rows_of_known_keys_near_the_newest_equals_encoding_them_all(
        before in rows_with("[ab]".prop_map(Value::Str)),
        after in rows_with("[ab]".prop_map(Value::Str)),
        shift in -(4 * DAY)..DAY,
        retention in prop::sample::select(vec![10 * DAY, 90 * DAY]),
    ) {
        let newest = before.iter().map(|r| r.0).max().unwrap_or(BASE);
        let later = after
            .into_iter()
            .map(|(ts, k, a)| (newest + shift + (ts - BASE) / 100, k, a))
            .collect();
        spliced_equals_full(&spec(7 * DAY), retention, &before, later)?;
    }
}

/// `later` (sorted here) applied to the state `before` made, spliced and in full: the same
/// bytes and the same count of expired rows.
fn spliced_equals_full(
    spec: &DecayedSpec,
    retention: i64,
    before: &[Raw],
    mut later: Vec<Raw>,
) -> Result<(), TestCaseError> {
    let old = apply_in_batches(spec, retention, before, &[]);
    later.sort_by_key(|r| r.0);
    let rows = rows_of(&later);
    prop_assert_eq!(
        apply_spliced(spec, retention, Some(&old), &rows).unwrap(),
        apply_stored(spec, retention, Some(&old), &rows).unwrap()
    );
    Ok(())
}

/// A day's new events for known keys, of the same sign, into a state of ten days: the
/// splice is taken (not the full path), and writes the full path's bytes.
#[test]
fn a_live_batch_into_a_state_with_history_takes_the_splice() {
    let spec = spec(7 * DAY);
    let history: Vec<Raw> = (0..240)
        .map(|h| {
            (
                BASE + h * HOUR,
                Value::Str(["a", "b", "c"][h as usize % 3].into()),
                Value::Str("click".into()),
            )
        })
        .collect();
    let old = apply_in_batches(&spec, 90 * DAY, &history, &[]);
    let live: Vec<Raw> = (0..5)
        .map(|i| {
            (
                BASE + 240 * HOUR + i * 60_000,
                Value::Str("b".into()),
                Value::Str("view".into()),
            )
        })
        .collect();
    let rows = rows_of(&live);
    let before = splice::SPLICED.with(|s| s.get());
    let spliced = apply_spliced(&spec, 90 * DAY, Some(&old), &rows).unwrap();
    assert_eq!(splice::SPLICED.with(|s| s.get()), before + 1);
    assert_eq!(
        spliced,
        apply_stored(&spec, 90 * DAY, Some(&old), &rows).unwrap()
    );
}
